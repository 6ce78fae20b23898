"""Soak: the demo with time compressed by a fake clock, 1,000 polls with faults injected.

    python bench/soak.py [--polls 1000] [--fault-every 7] [--warmup 10]

Each poll polls every source, then scrapes /metrics through the real HTTP server (loopback), as
Prometheus would. Prints RSS at the start and at the end, the polls, the failed source polls and the
failed scrapes, and whether RSS grew by at most 5%; exits 1 when it did not (or a scrape failed).

The starting RSS is read after a short warm-up, `--warmup` polls (10 by default, 1% of the run): the
first poll backfills the longest window (a day), so the simulators generate that day (291 of the 300
slots their workload memo is bounded to here; it is full at the 10th poll) and the stores fill; the
first polls also open the HTTP connections, size the rendered bodies and grow Python's allocator arenas
once. What grows after that is what a leak would look like. Loopback only, and no wall-clock waiting:
the rate limits that count real time (Ozonetel's simulator, the exporter's pause after a 429) are given
the fake clock or ended, as the fake minutes that pass would end them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import sys
import time
from dataclasses import replace
from typing import Any

import httpx

from aht_exporter.clock import FakeClock
from aht_exporter.providers.ozonetel import OzonetelProvider
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import DEMO_PROVIDERS, Demo, demo_config
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.ozonetel import DEMO_RATE_LIMIT, OzonetelSimulator
from aht_exporter.simulator.workload import Workload

# Faults that answer at once: a soak measures memory, not timeouts.
FAST_FAULTS = (
    Fault.HTTP_500,
    Fault.HTTP_503,
    Fault.RATE_LIMITED_BARE,
    Fault.UNAUTHORIZED,
    Fault.TRUNCATED,
    Fault.NOT_JSON,
    Fault.MISSING_FIELD,
    Fault.WRONG_TYPE,
    Fault.EXTRA_FIELDS,
    Fault.ERROR_IN_200,
    Fault.RESET,
)
START = 1772445600 + 7 * 60  # 2026-03-02T10:07:00Z


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def no_sleep(_: float) -> None:
    return None


async def soak(polls: int, fault_every: int, warmup: int) -> dict[str, Any]:
    clock = FakeClock(START)
    # The simulators share this process: their workload's memo of generated slots is bounded to about a
    # day, so that what grows over the soak is the exporter's, not the simulators' cache filling up.
    # Ozonetel's simulator counts its rate limit on real time unless told otherwise: on the fake clock, 1,000
    # polls in seconds of wall time are spread over the days they stand for, as the other limits are.
    ozonetel_sim = replace(
        DEMO_PROVIDERS["ozonetel"],
        make=lambda w, c: OzonetelSimulator(w, c, rate_limit=DEMO_RATE_LIMIT, monotonic=c.now),
    )
    demo = Demo(
        clock,
        Workload(seed=1, queues=4, agents=20, contacts_per_slot=6.0, report_lag=180.0, cache_slots=300),
        {**DEMO_PROVIDERS, "ozonetel": ozonetel_sim},
    )
    await demo.start()
    # Pacing is not what this measures: the exporter paces on real time, so the paced demo accounts get a
    # generous budget, and 1,000 polls take seconds rather than the hours their real limits would need.
    sources = [s | {"rate_limit": 60_000} if s["provider"] in ("koreai", "ozonetel") else s for s in demo.sources]
    exporter = Exporter(
        demo_config(sources, {"every": "5m", "delay": "1m", "timeout": "2s"}), clock=clock, sleep=no_sleep
    )
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    rng = random.Random(7)
    injected = scrape_errors = 0
    start_rss = rss_mb()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=f"http://{bound[0]}", timeout=10) as scraper:
        for i in range(polls):
            if i == warmup:
                gc.collect()
                start_rss = rss_mb()
            if fault_every and i % fault_every == fault_every - 1:
                provider = rng.choice(list(demo.simulators))
                demo.simulators[provider].faults.inject(rng.choice(FAST_FAULTS), count=2)
                injected += 1
            await exporter.poll_all()
            await exporter.rendered_now()
            response = await scraper.get("/metrics")
            if response.status_code != 200 or b"aht_exporter_build_info" not in response.content:
                scrape_errors += 1
            for sim in demo.simulators.values():
                sim.faults.clear()
            clock.advance(300)
            # Ozonetel's pause after a bare 429 is a minute of the loop's real time; five fake minutes
            # have passed, so end it, as a real minute would have (else one such fault costs 60 s here).
            for source in exporter.runners:
                if isinstance(source.provider, OzonetelProvider):
                    source.provider.pacer.resume()
    gc.collect()
    end_rss = rss_mb()
    wall = time.perf_counter() - started
    errors = sum(r.health.polls["error"] for r in exporter.runners)
    successes = sum(r.health.polls["success"] for r in exporter.runners)
    await runner.cleanup()
    await exporter.aclose()
    await demo.stop()
    return {
        "polls": polls,
        "warmup": warmup,
        "sources": len(exporter.runners),
        "faults_injected": injected,
        "poll_errors": errors,
        "poll_successes": successes,
        "scrape_errors": scrape_errors,
        "rss_start_mb": start_rss,
        "rss_end_mb": end_rss,
        "growth_pct": 100 * (end_rss - start_rss) / start_rss,
        "wall_s": wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--polls", type=int, default=1000)
    p.add_argument("--fault-every", type=int, default=7)
    p.add_argument(
        "--warmup", type=int, default=10, help="polls before the starting RSS is read (the first backfills a day)"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # every injected fault logs a warning: not the point here
    r = asyncio.run(soak(args.polls, args.fault_every, min(args.warmup, max(0, args.polls - 1))))
    print(f"{'polls (each: every source)':<32}{r['polls']:>10}")
    print(f"{'sources':<32}{r['sources']:>10}")
    print(f"{'faults injected':<32}{r['faults_injected']:>10}")
    print(f"{'source polls failed':<32}{r['poll_errors']:>10}")
    print(f"{'source polls succeeded':<32}{r['poll_successes']:>10}")
    print(f"{'scrapes failed':<32}{r['scrape_errors']:>10}")
    print(f"{'RSS after ' + str(r['warmup']) + ' polls (MB)':<32}{r['rss_start_mb']:>10.1f}")
    print(f"{'RSS at the end (MB)':<32}{r['rss_end_mb']:>10.1f}")
    print(f"{'growth':<32}{r['growth_pct']:>9.1f}%")
    print(f"{'wall time (s)':<32}{r['wall_s']:>10.1f}")
    met = r["growth_pct"] <= 5 and r["scrape_errors"] == 0
    print(f"target: RSS grows by at most 5%, every scrape answers -> {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
