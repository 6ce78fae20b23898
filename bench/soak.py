"""Soak: the demo with time compressed by a fake clock, 1,000 polls with faults injected.

    python bench/soak.py [--polls 1000] [--fault-every 7]

Prints RSS at the start (after a warm-up that fills the simulators' caches) and at the end, the
polls and errors, and whether RSS grew by less than 5%. Loopback only; no wall-clock waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import random
import time
from typing import Any

from aht_exporter.clock import FakeClock
from aht_exporter.demo import Demo, demo_config
from aht_exporter.scheduler import Exporter
from aht_exporter.simulator.faults import Fault
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
    demo = Demo(clock, Workload(seed=1, queues=4, agents=20, contacts_per_slot=6.0, report_lag=180.0, cache_slots=300))
    await demo.start()
    # Pacing is not what this measures: the paced demo accounts get a generous budget, so 1,000 polls
    # take minutes rather than the hours their real limits would spread them over.
    sources = [s | {"rate_limit": 60_000} if s["provider"] in ("koreai", "ozonetel") else s for s in demo.sources]
    exporter = Exporter(
        demo_config(sources, {"every": "5m", "delay": "1m", "timeout": "2s"}), clock=clock, sleep=no_sleep
    )
    rng = random.Random(7)
    injected = 0
    start_rss = rss_mb()
    started = time.perf_counter()
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
        for sim in demo.simulators.values():
            sim.faults.clear()
        clock.advance(300)
    gc.collect()
    end_rss = rss_mb()
    wall = time.perf_counter() - started
    errors = sum(r.health.polls["error"] for r in exporter.runners)
    successes = sum(r.health.polls["success"] for r in exporter.runners)
    await exporter.aclose()
    await demo.stop()
    return {
        "polls": polls,
        "sources": len(exporter.runners),
        "faults_injected": injected,
        "poll_errors": errors,
        "poll_successes": successes,
        "rss_start_mb": start_rss,
        "rss_end_mb": end_rss,
        "growth_pct": 100 * (end_rss - start_rss) / start_rss,
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--polls", type=int, default=1000)
    p.add_argument("--fault-every", type=int, default=7)
    p.add_argument("--warmup", type=int, default=300, help="polls before the starting RSS is taken (fills caches)")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # every injected fault logs a warning: not the point here
    r = asyncio.run(soak(args.polls, args.fault_every, min(args.warmup, max(0, args.polls - 1))))
    print(f"{'polls (each: every source)':<32}{r['polls']:>10}")
    print(f"{'sources':<32}{r['sources']:>10}")
    print(f"{'faults injected':<32}{r['faults_injected']:>10}")
    print(f"{'source polls failed':<32}{r['poll_errors']:>10}")
    print(f"{'source polls succeeded':<32}{r['poll_successes']:>10}")
    print(f"{'RSS after warm-up (MB)':<32}{r['rss_start_mb']:>10.1f}")
    print(f"{'RSS at the end (MB)':<32}{r['rss_end_mb']:>10.1f}")
    print(f"{'growth':<32}{r['growth_pct']:>9.1f}%")
    print(f"{'wall time (s)':<32}{r['wall_s']:>10.1f}")
    verdict = "met" if r["growth_pct"] <= 5 else "MISSED"
    print(f"target: RSS grows by at most 5% -> {verdict}")


if __name__ == "__main__":
    main()
