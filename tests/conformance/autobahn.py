"""Runs Autobahn test cases (kosoku's Python 3 runner of the Autobahn
TestSuite's own case files) against one WebSocket server and prints one
JSON line per case: its id and its two verdicts (the message exchange and
the closing handshake), as Autobahn's report would give them.

Usage: autobahn.py URL CONCURRENCY INCLUDE [INCLUDE...] [-- EXCLUDE...]
"""

import asyncio
import json
import sys

from kosoku import FailureError, run_fuzzingclient


async def main():
    url, concurrency, *selection = sys.argv[1:]
    if "--" in selection:
        split = selection.index("--")
        include, exclude = selection[:split], selection[split + 1 :]
    else:
        include, exclude = selection, []
    try:
        results = await run_fuzzingclient(
            url, include, exclude or None, concurrency=int(concurrency)
        )
    except FailureError as failure:
        # Failed cases are verdicts too: the comparison is what matters.
        results = failure.results
    for result in results:
        print(
            json.dumps(
                {
                    "case": result.case_id,
                    "behavior": result.behavior.value,
                    "close": result.behavior_close.value,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
