"""Poll cost: CPU and wall time of a poll per provider against its simulator, and the API requests each
poll makes against the minimum the vendor's API allows.

    python bench/poll.py [--agents 20000] [--contacts-per-slot 1200] [--polls 3] [--providers genesys,...]

The simulator runs in a process of its own, so `time.process_time()` around `SourceRunner.poll()` is
the exporter's CPU alone (HTTP, JSON, buckets, store, snapshot). The render that follows each poll runs
in a worker thread and is measured apart. Time is a clock shared with the simulator: poll after poll,
five minutes apart on the clock, nobody waits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import T0, Result, SharedClock, SimulatorProcess, Target, diff
from simproc import QUEUES
from sources import ALL_PROVIDERS, SOURCES, BenchSource, plan_poll

from aht_exporter.config import Config
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter

CPU_TARGET = 1.0  # seconds, for a 20,000-agent Genesys poll


@dataclass
class Poll:
    n: int
    span: str
    requests: dict[str, int]
    minimum: dict[str, int]
    cpu: float
    wall: float
    render_cpu: float
    render_wall: float
    series: int


def config_for(source: dict[str, object]) -> Config:
    return build_config({"defaults": {"every": "5m", "delay": "1m"}, "sources": [source]}, "bench", {})


async def run_polls(
    bench: BenchSource, sim: SimulatorProcess, clock: SharedClock, args: argparse.Namespace
) -> list[Poll]:
    """The first poll of a fresh source and `args.polls` more, five minutes apart on the clock."""
    clock.set(T0)
    exporter = Exporter(config_for(sim.source(bench.provider)), clock=clock)
    runner = exporter.runners[0]
    polls: list[Poll] = []
    try:
        for n in range(1, args.polls + 2):
            plan = plan_poll(runner, clock.now())
            before = sim.requests(bench.provider)
            cpu, wall = time.process_time(), time.perf_counter()
            ok = await runner.poll()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if not ok:
                raise RuntimeError(f"{bench.provider} poll {n} failed: {runner.health.last_error}")
            rcpu, rwall = time.process_time(), time.perf_counter()
            await exporter.rendered_now()
            rcpu, rwall = time.process_time() - rcpu, time.perf_counter() - rwall
            made = {bench.name_of(p): k for p, k in diff(sim.requests(bench.provider), before).items()}
            minimum = await bench.minimum(plan, runner, args.agents, QUEUES)
            span = f"{(plan.end - plan.start) // 60}m" if plan.end > plan.start else "-"
            polls.append(Poll(n, span, made, minimum, cpu, wall, rcpu, rwall, runner.health.series))
            clock.advance(runner.config.every.seconds)
    finally:
        await exporter.aclose()
    return polls


def by_name(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"


async def main(args: argparse.Namespace) -> Result:
    result = Result(
        title=f"Poll cost, {args.agents:,} agents",
        command=" ".join(["python bench/poll.py", *sys.argv[1:]]),
        columns=[
            "provider",
            "poll",
            "span",
            "API requests",
            "minimum",
            "CPU s",
            "wall s",
            "render CPU s",
            "render wall s",
            "series",
        ],
    )
    wanted = args.providers.split(",") if args.providers else list(ALL_PROVIDERS)
    available = [p for p in wanted if p in SOURCES and SOURCES[p].available]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        clock = SharedClock(Path(tmp) / "clock", start=T0)
        sim = stack.enter_context(SimulatorProcess(available, args.agents, args.contacts_per_slot, Path(tmp) / "clock"))
        for provider in wanted:
            if provider not in available:
                result.rows.append([provider, "not available", *["-"] * 8])
                result.targets.append(
                    Target(f"{provider}: API requests per poll", "= minimum", "-", None, "provider not available")
                )
                continue
            bench = SOURCES[provider]
            polls = await run_polls(bench, sim, clock, args)
            for p in polls:
                result.rows.append(
                    [
                        provider,
                        f"{p.n} (first)" if p.n == 1 else str(p.n),
                        p.span,
                        by_name(p.requests),
                        by_name(p.minimum),
                        f"{p.cpu:.3f}",
                        f"{p.wall:.3f}",
                        f"{p.render_cpu:.3f}",
                        f"{p.render_wall:.3f}",
                        f"{p.series:,}",
                    ]
                )
            extra = [p for p in polls if p.requests != p.minimum]
            result.targets.append(
                Target(
                    f"{provider}: API requests per poll",
                    "= minimum",
                    "equal in every poll" if not extra else f"{len(extra)} of {len(polls)} polls differ",
                    not extra,
                )
            )
            result.notes.append(f"{provider} minimum: {bench.formula}.")
            if provider == "genesys":
                steady = [p.cpu for p in polls[1:]] or [polls[0].cpu]
                result.targets.append(
                    Target(
                        f"{args.agents:,}-agent Genesys poll CPU",
                        f"< {CPU_TARGET:g} s",
                        f"steady median {statistics.median(steady):.3f} s, max {max(steady):.3f} s; "
                        f"first poll {polls[0].cpu:.3f} s",
                        max(steady) < CPU_TARGET,
                        "judged on the polls every 5 minutes; the first poll also backfills the longest window "
                        "and fetches every user's name",
                    )
                )
    result.notes.append(
        "CPU is time.process_time() of the exporter process around SourceRunner.poll(); the simulator runs in "
        "its own process. Wall time includes the simulator's own time to answer, on the same 2 cores."
    )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=20_000)
    p.add_argument("--contacts-per-slot", type=float, default=1200.0, help="contacts per 5 minutes, all agents")
    p.add_argument("--polls", type=int, default=3, help="steady polls after the first")
    p.add_argument("--providers", default="", help="comma-separated; default all four")
    return p


if __name__ == "__main__":
    print(asyncio.run(main(parser().parse_args())).text())
