#!/usr/bin/env python3
"""Draws docs/locks.svg from the CSV that `cargo bench --bench locks` writes.

Grouped bars, one group per concurrency plus one for the no-wait lookups,
one bar per way of sharing the table, a panel without and one with the
writer. The y axis is logarithmic: the figures run from hundreds (a lock
held across the upstream call) to millions (bare lookups), and on a linear
axis everything but the largest bars would be invisible.

    python3 benches/locks_chart.py [target/locks.csv] [docs/locks.svg]

Standard library only, so it runs wherever the bench does.
"""

import csv
import math
import os
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

VARIANTS = [
    ("tokio_mutex_held", "tokio::sync::Mutex, held across the call", "#d62728"),
    ("std_mutex_block", "std::sync::Mutex, block scope", "#ff7f0e"),
    ("std_rwlock_block", "std::sync::RwLock, block scope", "#2ca02c"),
    ("arc_swap_load_full", "ArcSwap::load_full (Switchyard)", "#1f77b4"),
]

WIDTH = 900
PANEL_HEIGHT = 300
LEFT, RIGHT, TOP = 70, 20, 70
PANEL_GAP = 70
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def short(value):
    """437 -> 437, 45312 -> 45k, 1834000 -> 1.8M."""
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def decade(exponent):
    """Axis labels: 100, 1k, 10k, 100k, 1M, 10M."""
    for unit, power in (("M", 6), ("k", 3)):
        if exponent >= power:
            return f"{10 ** (exponent - power)}{unit}"
    return f"{10**exponent}"


def read(path):
    rows = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            group = "no wait" if row["mode"] == "no_wait" else row["concurrency"]
            rows[(row["variant"], row["writer"], group)] = float(row["per_second"])
    return rows


def groups_of(rows):
    concurrencies = sorted(
        {int(g) for (_, _, g) in rows if g != "no wait"}
    )
    groups = [str(c) for c in concurrencies]
    if any(g == "no wait" for (_, _, g) in rows):
        groups.append("no wait")
    return groups


def panel(out, rows, groups, writer, top, lo, hi, title):
    inner_w = WIDTH - LEFT - RIGHT
    h = PANEL_HEIGHT

    def y(value):
        value = max(value, 10**lo)
        return top + h * (1 - (math.log10(value) - lo) / (hi - lo))

    out.append(
        f"<text x='{LEFT}' y='{top - 12}' font-size='14' font-weight='bold' {FONT}>"
        f"{escape(title)}</text>"
    )
    for exponent in range(lo, hi + 1):
        gy = y(10**exponent)
        out.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{gy:.1f}' y2='{gy:.1f}' "
            f"stroke='#ddd' stroke-width='1'/>"
        )
        out.append(
            f"<text x='{LEFT - 6}' y='{gy + 4:.1f}' font-size='11' text-anchor='end' "
            f"{FONT}>{escape(decade(exponent))}</text>"
        )
    out.append(
        f"<line x1='{LEFT}' x2='{LEFT}' y1='{top}' y2='{top + h}' stroke='#444'/>"
    )
    out.append(
        f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{top + h}' y2='{top + h}' "
        f"stroke='#444'/>"
    )
    group_w = inner_w / len(groups)
    bar_w = group_w * 0.8 / len(VARIANTS)
    for gi, group in enumerate(groups):
        gx = LEFT + gi * group_w + group_w * 0.1
        if group == "no wait":
            # The no-wait group counts lookups, not requests: a rule sets it
            # apart so nobody reads its bars against the others.
            sx = LEFT + gi * group_w
            out.append(
                f"<line x1='{sx:.1f}' x2='{sx:.1f}' y1='{top}' y2='{top + h}' "
                f"stroke='#888' stroke-dasharray='4 3'/>"
            )
            label = "no upstream (lookups/s)"
        else:
            n = int(group)
            label = f"{n:,} task" if n == 1 else f"{n:,} tasks"
        out.append(
            f"<text x='{gx + group_w * 0.4:.1f}' y='{top + h + 18}' font-size='12' "
            f"text-anchor='middle' {FONT}>{escape(label)}</text>"
        )
        for vi, (variant, _, color) in enumerate(VARIANTS):
            value = rows.get((variant, writer, group))
            if value is None or value <= 0:
                continue
            bx = gx + vi * bar_w
            by = y(value)
            out.append(
                f"<rect x='{bx:.1f}' y='{by:.1f}' width='{bar_w - 2:.1f}' "
                f"height='{top + h - by:.1f}' fill='{color}'/>"
            )
            out.append(
                f"<text x='{bx + (bar_w - 2) / 2:.1f}' y='{by - 3:.1f}' font-size='9' "
                f"text-anchor='middle' {FONT}>{escape(short(value))}</text>"
            )
    out.append(
        f"<text x='16' y='{top + h / 2:.1f}' font-size='12' text-anchor='middle' "
        f"transform='rotate(-90 16 {top + h / 2:.1f})' {FONT}>"
        f"requests/s, lookups/s (log scale)</text>"
    )


def main():
    source = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "LOCKS_CSV", os.path.join(ROOT, "target", "locks.csv")
    )
    target = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "locks.svg")
    rows = read(source)
    if not rows:
        sys.exit(f"{source}: no rows")
    groups = groups_of(rows)
    values = [v for v in rows.values() if v > 0]
    lo = math.floor(math.log10(min(values)))
    hi = math.ceil(math.log10(max(values)))
    legend_h = 40
    height = TOP + legend_h + 2 * PANEL_HEIGHT + PANEL_GAP + 40
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}'>",
        f"<rect width='{WIDTH}' height='{height}' fill='white'/>",
        f"<text x='{WIDTH / 2}' y='24' font-size='16' font-weight='bold' "
        f"text-anchor='middle' {FONT}>Sharing a 100-route table: handler "
        f"throughput with a ~1 ms loopback upstream</text>",
    ]
    for i, (_, label, color) in enumerate(VARIANTS):
        lx = LEFT + (i % 2) * 360
        ly = 40 + (i // 2) * 18
        out.append(f"<rect x='{lx}' y='{ly}' width='12' height='12' fill='{color}'/>")
        out.append(
            f"<text x='{lx + 16}' y='{ly + 10}' font-size='11' {FONT}>{escape(label)}</text>"
        )
    first = TOP + legend_h
    panel(out, rows, groups, "off", first, lo, hi, "No writer")
    panel(
        out,
        rows,
        groups,
        "on",
        first + PANEL_HEIGHT + PANEL_GAP,
        lo,
        hi,
        "A writer replacing the whole map every millisecond",
    )
    out.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
