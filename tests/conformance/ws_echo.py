"""A conformant WebSocket echo server (the `websockets` package) on
127.0.0.1 and a port the system picks: the upstream the Autobahn cases
run against, directly and through the router.

Prints the port on its first line, then serves until its standard input
closes (the test that started it has ended).
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(connection):
    """Sends every message back as it came (text as text, binary as binary)."""
    try:
        async for message in connection:
            await connection.send(message)
    except Exception:  # noqa: BLE001 - a broken peer is what the cases test
        pass


async def main():
    # No size limit: the 9.x cases send messages of up to 16 MiB.
    async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
