"""Memory: the exporter's RSS idle, holding ~100k series, and after many polls.

    python bench/memory.py [--agents 20000] [--contacts-per-slot 1200] [--held-polls 10]
                           [--long-agents 2000] [--long-contacts-per-slot 120] [--polls 1000]

Each scenario runs in a fresh exporter process (the Exporter, its HTTP server, one Genesys source)
against a simulator in a process of its own, on a clock both share: poll after poll, five minutes
apart on the clock, with no waiting. Every poll is followed by its render and by one scrape of each
of the four bodies, from a third process. RSS is /proc's VmRSS of the exporter process alone; peak is
its VmHWM.

Two scenarios, because a poll at 100k series costs seconds: the big one holds ~100k series for a few
polls; the long one makes 1,000 polls at a few thousand series, to show whether memory grows with polls.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from common import T0, Result, ScraperProcess, SharedClock, SimulatorProcess, Target, bench_env, peak_rss_mb, rss_mb

RSS_TARGET = 150e6 / 2**20  # 150 MB at 100k series, in MiB as RSS is read (143.1)
SCRAPES = (
    {"Accept-Encoding": "identity"},
    {"Accept-Encoding": "gzip"},
    {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "identity"},
    {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"},
)


class Phase(TypedDict):
    """One JSON line of a scenario's process, as phase() prints it."""

    phase: str
    series: int
    polls: int
    rss: float
    peak: float
    seconds: float


def phase(name: str, series: int, polls: int, started: float) -> None:
    row = {"phase": name, "series": series, "polls": polls, "rss": rss_mb(), "peak": peak_rss_mb()}
    print(json.dumps({**row, "seconds": time.perf_counter() - started}), flush=True)


async def child(args: argparse.Namespace) -> None:
    """One scenario in this fresh process; prints a JSON line per phase."""
    from aht_exporter.cli import prepare_process
    from aht_exporter.registry import build_config
    from aht_exporter.scheduler import Exporter
    from aht_exporter.server import start_server

    prepare_process()  # as cli.serve does: malloc tuned, the HTTP stack loaded, start-up objects frozen
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        clock_file = Path(tmp) / "clock"
        clock = SharedClock(clock_file, start=T0)
        with SimulatorProcess(["genesys"], args.agents, args.contacts_per_slot, clock_file) as sim:
            config = build_config({"sources": [sim.source("genesys")]}, "bench", {})
            exporter = Exporter(config, clock=clock)
            runner, bound = await start_server(exporter, "127.0.0.1:0")
            scraper = ScraperProcess()

            async def poll_render_scrape() -> None:
                if not await exporter.poll_all():
                    raise RuntimeError(f"poll failed: {exporter.runners[0].health.last_error}")
                await exporter.rendered_now()
                for headers in SCRAPES:
                    await asyncio.to_thread(scraper.scrape, f"http://{bound[0]}/metrics", headers)
                clock.advance(300)

            try:
                gc.collect()
                phase("idle: server listening, nothing polled", 0, 0, started)
                await poll_render_scrape()
                phase("after the first poll", exporter.runners[0].health.series, 1, started)
                for n in range(2, args.polls + 1):
                    await poll_render_scrape()
                    if n in (10, 100) and n < args.polls:
                        phase(f"after {n} polls", exporter.runners[0].health.series, n, started)
                phase(f"after {args.polls:,} polls", exporter.runners[0].health.series, args.polls, started)
            finally:
                scraper.close()
            await runner.cleanup()
            await exporter.aclose()


def scenario(agents: int, contacts_per_slot: float, polls: int) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--agents={agents}",
        f"--contacts-per-slot={contacts_per_slot}",
        f"--polls={polls}",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=bench_env())


def phases(child: subprocess.Popen[str]) -> list[Phase]:
    out, _ = child.communicate()
    if child.returncode:
        raise RuntimeError(f"a memory scenario failed with exit code {child.returncode}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(args: argparse.Namespace) -> Result:
    result = Result(
        title="Memory: RSS of the exporter process",
        command=" ".join(["python bench/memory.py", *sys.argv[1:]]),
        columns=["scenario", "phase", "series", "RSS MiB", "peak RSS MiB", "elapsed s"],
    )
    # Both at once, each in its own processes: RSS is per process, and the long one needs no waiting for.
    runs = [(f"{args.agents:,} agents", True, scenario(args.agents, args.contacts_per_slot, args.held_polls))]
    if args.polls:
        runs.append(
            (f"{args.long_agents:,} agents", False, scenario(args.long_agents, args.long_contacts_per_slot, args.polls))
        )
    held_peak = 0.0
    held_series = 0
    for label, big, child in runs:
        for p in phases(child):
            result.rows.append(
                [label, p["phase"], f"{p['series']:,}", f"{p['rss']:.1f}", f"{p['peak']:.1f}", f"{p['seconds']:.1f}"]
            )
            if big and p["series"]:
                held_peak = max(held_peak, p["rss"])
                held_series = max(held_series, int(p["series"]))
    result.targets.append(
        Target(
            f"RSS holding {held_series:,} series",
            f"< 150 MB ({RSS_TARGET:.1f} MiB)",
            f"{held_peak:.1f} MiB (highest reading after a poll)",
            held_peak < RSS_TARGET,
            ""
            if held_peak < RSS_TARGET
            else "the allocators keep part of each poll's transient memory (docs/performance.md has the breakdown)",
        )
    )
    result.notes.append(
        "RSS includes the cached bodies (text and OpenMetrics, identity and gzip, sharing their data part) and "
        "the per-source cache of formatted series; peak RSS includes the transient JSON of the provider's reply. "
        "The two scenarios run at the same time, in separate processes."
    )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=20_000)
    p.add_argument("--contacts-per-slot", type=float, default=1200.0)
    p.add_argument("--held-polls", type=int, default=10, help="polls in the big scenario")
    p.add_argument("--long-agents", type=int, default=500)
    p.add_argument("--long-contacts-per-slot", type=float, default=30.0)
    p.add_argument("--polls", type=int, default=1000, help="polls in the long scenario (0: no long scenario)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    args = parser().parse_args()
    if args.child:
        asyncio.run(child(args))
    else:
        print(main(args).text())
