"""Event-loop stalls: how long the exporter's event loop is kept from answering while a poll runs.

    python bench/loop_stall.py [--agents 20000] [--contacts-per-slot 1200] [--polls 5]

A scrape, a `/-/healthy` probe or a reload is served by the event loop, so whatever a poll does on that loop
(decoding the reply, updating the store, building the snapshot) makes every request that arrives meanwhile
wait. This measures it: a timer on the exporter's loop asks to run every 5 ms and records how late it runs
(the lateness is what a request arriving at that moment would wait before being read). The exporter (its
Exporter and HTTP server, as in production) polls a Genesys simulator running in a process of its own, at
20,000 agents (105k series), the scenario of docs/performance.md: the first poll (backfill and names), then
`--polls` steady polls five minutes apart on the shared clock, each followed by its render, and a quiet
second between polls. A stall is counted "during polls" from the poll's start until its render is in place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import T0, Result, SharedClock, SimulatorProcess, Target
from sources import SOURCES

from aht_exporter.cli import prepare_process
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server

TICK = 0.005  # seconds between the probe's callbacks
TARGET = 0.020  # the longest stall allowed during a poll, at 105k series (issue 18)
QUIET = 1.0  # seconds of no poll between polls, for the stalls outside them


class LagProbe:
    """A callback due every `TICK` seconds on the running loop; records how late each one runs, and
    whether a poll was in progress then; and the garbage collections during polls (a collection holds
    the GIL, whichever thread it runs in, so the loop waits for it too)."""

    def __init__(self) -> None:
        self.polling = False
        # Arrays, not lists: a list of tens of thousands of floats would be walked by every full garbage
        # collection, adding to the very stalls it records.
        self.during = array("d")
        self.outside = array("d")
        self.collections = array("d")  # seconds each collection took, during polls
        self._task: asyncio.Task[None] | None = None
        self._collecting = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting = time.perf_counter()
        elif self.polling:
            self.collections.append(time.perf_counter() - self._collecting)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            polling = self.polling  # a stall that a poll's start or end falls in counts as the poll's
            due = time.perf_counter() + TICK
            await asyncio.sleep(TICK)
            late = max(0.0, time.perf_counter() - due)
            (self.during if polling or self.polling else self.outside).append(late)


Stats = tuple[float, float, int]


def summary(lags: Sequence[float]) -> Stats:
    """(max, p99, samples), in seconds."""
    if not lags:
        return 0.0, 0.0, 0
    ordered = sorted(lags)
    return ordered[-1], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], len(ordered)


@dataclass
class Measured:
    first: Stats  # the first poll's
    during: Stats  # the steady polls'
    outside: Stats
    collections: list[float]  # every poll's garbage collections, in seconds
    series: int


async def measure(sim: SimulatorProcess, clock: SharedClock, args: argparse.Namespace) -> Measured:
    clock.set(T0)
    config = build_config({"defaults": {"every": "5m", "delay": "1m"}, "sources": [sim.source("genesys")]}, "bench", {})
    prepare_process(freeze=not args.no_freeze)  # as cli.serve does before it builds the exporter
    exporter = Exporter(config, clock=clock)
    server, _ = await start_server(exporter, "127.0.0.1:0")
    probe = LagProbe()
    first = LagProbe()  # the first poll's stalls, apart: it backfills and fetches every name
    runner = exporter.runners[0]
    try:
        first.start()
        await asyncio.sleep(QUIET)
        first.polling = True
        if not await exporter.poll_all():
            raise RuntimeError(f"first poll failed: {runner.health.last_error}")
        await exporter.rendered_now()
        first.polling = False
        await first.stop()
        probe.start()
        for _ in range(args.polls):
            await asyncio.sleep(QUIET)
            clock.advance(runner.config.every.seconds)
            probe.polling = True
            if not await exporter.poll_all():
                raise RuntimeError(f"poll failed: {runner.health.last_error}")
            await exporter.rendered_now()
            probe.polling = False
        await asyncio.sleep(QUIET)
        await probe.stop()
    finally:
        await server.cleanup()
        await exporter.aclose()
    collections = list(first.collections) + list(probe.collections)
    return Measured(
        summary(first.during), summary(probe.during), summary(probe.outside), collections, runner.health.series
    )


async def main(args: argparse.Namespace) -> Result:
    result = Result(
        title=f"Event-loop stalls, Genesys, {args.agents:,} agents",
        command=" ".join(["python bench/loop_stall.py", *sys.argv[1:]]),
        columns=["when", "max stall ms", "p99 stall ms", "samples"],
    )
    if not SOURCES["genesys"].available:
        result.rows.append(["-", "not available", "-", "-"])
        result.targets.append(Target("event-loop stall during a poll", f"<= {TARGET * 1000:g} ms", "-", None))
        return result
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        clock = SharedClock(Path(tmp) / "clock", start=T0)
        sim = stack.enter_context(
            SimulatorProcess(["genesys"], args.agents, args.contacts_per_slot, Path(tmp) / "clock")
        )
        m = await measure(sim, clock, args)
    rows = (
        ("first poll (backfill, names) and its render", m.first),
        (f"{args.polls} steady polls and their renders", m.during),
        ("outside polls", m.outside),
    )
    for label, (longest, p99, n) in rows:
        result.rows.append([label, f"{longest * 1000:.1f}", f"{p99 * 1000:.1f}", str(n)])
    worst = max(m.first[0], m.during[0])
    result.targets.append(
        Target(
            f"event-loop stall during a poll at {m.series:,} series (windows and totals)",
            f"<= {TARGET * 1000:g} ms",
            f"max {worst * 1000:.1f} ms",
            worst <= TARGET,
            "" if worst <= TARGET else "one call held the GIL that long: see the collections below",
        )
    )
    slow = [c for c in m.collections if c > TARGET]
    result.notes.append(
        f"garbage collections during the polls: {len(m.collections)}, the longest "
        f"{max(m.collections, default=0.0) * 1000:.1f} ms, {len(slow)} longer than {TARGET * 1000:g} ms"
    )
    result.notes.append(
        f"A stall is how late a callback due every {TICK * 1000:g} ms on the exporter's loop runs: what a "
        "scrape or /-/healthy arriving then waits before it is read. Polls are counted until their render is "
        "in place; the render itself runs in a worker thread, sharing the GIL."
    )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=20_000)
    p.add_argument("--contacts-per-slot", type=float, default=1200.0)
    p.add_argument("--polls", type=int, default=5, help="steady polls after the first")
    p.add_argument("--no-freeze", action="store_true", help="leave start-up objects to the collector (as before)")
    return p


if __name__ == "__main__":
    print(asyncio.run(main(parser().parse_args())).text())
