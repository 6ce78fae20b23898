"""What a poll of one source costs the render, beside a big source that did not change (issue 18, item 2).

    python bench/rerender.py [--series 100000] [--small 200] [--repeat 5]

A renderer holds a big source (`--series` series, Genesys by agent, realistic values) and a small one. Each
round replaces the small source's snapshot, as its poll does, and renders the four bodies again (best of
`--repeat`). For scale, the same render from scratch (every source new: what a poll of the big source
costs). The render formats only the changed source's lines and compresses only them: the big source's
text and deflate segments are reused; what remains per render is the CRC-32 over the whole body for the
gzip trailer (zlib, outside the GIL) and the health and routing families.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from common import Result, Target, agent_snapshot, ms

from aht_exporter.exposition import Renderer, ScrapeTail, SourceView
from aht_exporter.health import SourceHealth

TARGET = 0.010  # seconds: a small source's poll beside 100k unchanged series


def view(name: str, series: int, seed: int) -> SourceView:
    health = SourceHealth(name, "genesys", 3, up=True, polled=True)
    return SourceView(health, agent_snapshot(series, seed=seed))


def best(rounds: int, step: object) -> float:
    assert callable(step)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def main(args: argparse.Namespace) -> Result:
    result = Result(
        title=f"Re-render after one source's poll, beside {args.series:,} unchanged series",
        command=" ".join(["python bench/rerender.py", *sys.argv[1:]]),
        columns=["render", "best of runs", "body MiB (text)"],
    )
    big, small = view("big", args.series, 1), view("small", args.small, 2)
    renderer = Renderer(ScrapeTail([]))
    rendered = renderer.render([big, small])
    size = f"{len(rendered.text) / 2**20:,.1f}"
    polls = iter(range(10**9))

    snap = small.snapshot
    assert snap is not None

    def small_poll() -> None:
        # A new snapshot object, as each poll makes: same figures, so the body's size holds still.
        fresh = SourceView(small.health, replace(snap, data_end=snap.data_end + next(polls)))
        renderer.render([big, fresh])

    def from_scratch() -> None:
        Renderer(ScrapeTail([])).render([big, small])

    measured = best(args.repeat, small_poll)
    result.rows.append([f"a poll of the small source ({args.small:,} series)", ms(measured), size])
    result.rows.append(
        ["every source new (a poll of the big one)", ms(best(max(1, args.repeat // 2), from_scratch)), size]
    )
    result.targets.append(
        Target(
            f"render after a small source's poll beside {args.series:,} series",
            f"<= {TARGET * 1000:g} ms",
            ms(measured),
            measured <= TARGET,
            "only the changed source is formatted and compressed; the gzip member's CRC-32 covers the whole body",
        )
    )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=100_000)
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    return p


if __name__ == "__main__":
    print(main(parser().parse_args()).text())
