"""Memory: the exporter's RSS idle, holding ~100k series, and after many polls.

    python bench/memory.py [--agents 20000] [--contacts-per-slot 1200] [--held-polls 100]
                           [--long-agents 2000] [--long-contacts-per-slot 120] [--polls 1000]

Each scenario runs in a fresh exporter process (the Exporter, its HTTP server, one Genesys source)
against a simulator in a process of its own, on a clock both share: poll after poll, five minutes
apart on the clock, with no waiting. Every poll is followed by its render and by one scrape of each
gzip body (text and OpenMetrics, as Prometheus asks; `--identity`: the two uncompressed ones too), from a
third process. RSS is /proc's VmRSS of the exporter process alone; peak is its VmHWM.

Two scenarios, because a poll at 100k series costs seconds: the big one holds ~100k series for 100 polls,
its RSS read after every one (the target is judged on the highest); the long one makes 1,000 polls at a few
thousand series, to show whether memory grows with polls.
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
import tracemalloc
from pathlib import Path
from typing import TypedDict

from common import T0, Result, ScraperProcess, SharedClock, SimulatorProcess, Target, bench_env, peak_rss_mb, rss_mb

RSS_TARGET = 150e6 / 2**20  # 150 MB at 100k series, in MiB as RSS is read (143.1)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# What Prometheus asks for (gzip, in either format); `--identity` adds uncompressed scrapes (curl), which
# inflate the data's text a slice at a time as they write it, and keep none.
SCRAPES = ({"Accept-Encoding": "gzip"}, {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"})
IDENTITY_SCRAPES = ({"Accept-Encoding": "identity"}, {"Accept": OPENMETRICS, "Accept-Encoding": "identity"})


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


def where_the_bytes_are(top: int = 15) -> None:
    """What the exporter holds after its polls, by the line that allocated it (tracemalloc, after a full
    collection): the report of `--where`, to stderr. Only what Python allocated: not the C heap's free pages
    nor the interpreter's own (idle RSS)."""
    gc.collect()
    stats = tracemalloc.take_snapshot().statistics("lineno")
    live = sum(s.size for s in stats) / 2**20
    print(f"live Python allocations since the first poll: {live:.1f} MiB", file=sys.stderr)
    for s in stats[:top]:
        frame = s.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"{s.size / 2**20:8.2f} MiB {s.count:9,} blocks  {where}", file=sys.stderr)


def reading(poll: int, series: int) -> None:
    """RSS after every poll (and its render and scrapes): the target is judged on each one."""
    print(json.dumps({"reading": poll, "series": series, "rss": rss_mb()}), flush=True)


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
                for headers in (*SCRAPES, *(IDENTITY_SCRAPES if args.identity else ())):
                    await asyncio.to_thread(scraper.scrape, f"http://{bound[0]}/metrics", headers)
                clock.advance(300)

            try:
                gc.collect()
                phase("idle: server listening, nothing polled", 0, 0, started)
                if args.where:
                    tracemalloc.start()
                await poll_render_scrape()
                phase("after the first poll", exporter.runners[0].health.series, 1, started)
                reading(1, exporter.runners[0].health.series)
                for n in range(2, args.polls + 1):
                    await poll_render_scrape()
                    reading(n, exporter.runners[0].health.series)
                    if n in (10, 100) and n < args.polls:
                        phase(f"after {n} polls", exporter.runners[0].health.series, n, started)
                phase(f"after {args.polls:,} polls", exporter.runners[0].health.series, args.polls, started)
                if args.where:
                    where_the_bytes_are()
            finally:
                scraper.close()
            await runner.cleanup()
            await exporter.aclose()


def scenario(
    agents: int, contacts_per_slot: float, polls: int, where: bool = False, identity: bool = False
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--agents={agents}",
        f"--contacts-per-slot={contacts_per_slot}",
        f"--polls={polls}",
        *(["--where"] if where else []),
        *(["--identity"] if identity else []),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=bench_env())


def phases(child: subprocess.Popen[str]) -> tuple[list[Phase], list[dict[str, float]]]:
    """The scenario's phases, and its reading after every poll."""
    out, _ = child.communicate()
    if child.returncode:
        raise RuntimeError(f"a memory scenario failed with exit code {child.returncode}")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [p for p in lines if "phase" in p], [r for r in lines if "reading" in r]


def main(args: argparse.Namespace) -> Result:
    result = Result(
        title="Memory: RSS of the exporter process",
        command=" ".join(["python bench/memory.py", *sys.argv[1:]]),
        columns=["scenario", "phase", "series", "RSS MiB", "peak RSS MiB", "elapsed s"],
    )
    # Both at once, each in its own processes: RSS is per process, and the long one needs no waiting for.
    held = scenario(args.agents, args.contacts_per_slot, args.held_polls, args.where, args.identity)
    runs = [(f"{args.agents:,} agents", True, held)]
    if args.polls:
        runs.append(
            (f"{args.long_agents:,} agents", False, scenario(args.long_agents, args.long_contacts_per_slot, args.polls))
        )
    held_peak = 0.0
    held_series = 0
    for label, big, child in runs:
        rows, readings = phases(child)
        for p in rows:
            result.rows.append(
                [label, p["phase"], f"{p['series']:,}", f"{p['rss']:.1f}", f"{p['peak']:.1f}", f"{p['seconds']:.1f}"]
            )
        if big and readings:
            highest = max(readings, key=lambda r: r["rss"])
            lowest = min(readings[1:] or readings, key=lambda r: r["rss"])
            held_peak = highest["rss"]
            held_series = int(max(r["series"] for r in readings))
            result.notes.append(
                f"{label}: RSS after each of the {len(readings)} polls: highest {highest['rss']:.1f} MiB (poll "
                f"{int(highest['reading'])}), lowest after the first {lowest['rss']:.1f} MiB (poll "
                f"{int(lowest['reading'])})"
            )
    result.targets.append(
        Target(
            f"RSS holding {held_series:,} series",
            f"< 150 MB ({RSS_TARGET:.1f} MiB)",
            f"{held_peak:.1f} MiB (highest reading after any poll)",
            held_peak < RSS_TARGET,
            ""
            if held_peak < RSS_TARGET
            else "the allocators keep part of each poll's transient memory (docs/performance.md has the breakdown)",
        )
    )
    if args.where:
        result.notes.append("--where: tracemalloc's own memory is in these RSS readings; compare them with nothing")
    text = "inflated by each uncompressed scrape as it writes it" if args.identity else "never made: no scrape asks"
    result.notes.append(
        "RSS includes the cached bodies (text and OpenMetrics, gzip, sharing their data part; the uncompressed "
        f"data text {text}, and never kept) "
        "and the per-source cache of formatted series; peak RSS includes the transient JSON of the provider's "
        "reply. The two scenarios run at the same time, in separate processes."
    )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=20_000)
    p.add_argument("--contacts-per-slot", type=float, default=1200.0)
    p.add_argument("--held-polls", type=int, default=100, help="polls in the big scenario (RSS read after each)")
    p.add_argument("--long-agents", type=int, default=500)
    p.add_argument("--long-contacts-per-slot", type=float, default=30.0)
    p.add_argument("--polls", type=int, default=1000, help="polls in the long scenario (0: no long scenario)")
    p.add_argument(
        "--where",
        action="store_true",
        help="big scenario only, under tracemalloc (slower): after its polls, print what holds the memory, by line",
    )
    p.add_argument(
        "--identity",
        action="store_true",
        help="big scenario: also scrape both formats uncompressed after each poll (Prometheus asks for gzip)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    args = parser().parse_args()
    if args.child:
        asyncio.run(child(args))
    else:
        print(main(args).text())
