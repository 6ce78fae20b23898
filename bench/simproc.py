"""Provider simulators in a process of their own, for the benchmarks (started by `common.SimulatorProcess`).

    python bench/simproc.py --providers genesys,liveperson --agents 20000 --contacts-per-slot 1200 --clock FILE

Starts one simulator per provider, all serving one workload on the clock shared through FILE; prints one
JSON line, {provider: {"base_url", "source"}}; then answers `requests` on stdin with a JSON line of the
requests each has served so far, by path; exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from common import SharedClock
from sources import SOURCES

from aht_exporter.simulator.workload import Workload

QUEUES = 20


async def main(args: argparse.Namespace) -> None:
    clock = SharedClock(Path(args.clock))
    workload = Workload(seed=1, queues=QUEUES, agents=args.agents, contacts_per_slot=args.contacts_per_slot)
    sims = {}
    hello = {}
    for provider in args.providers.split(","):
        sim, url, source = await SOURCES[provider].start(workload, clock)
        sims[provider] = sim
        hello[provider] = {"base_url": url, "source": source}
    print(json.dumps(hello), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "requests":
                print(json.dumps({p: dict(sim.requests) for p, sim in sims.items()}), flush=True)
    finally:
        for sim in sims.values():
            await sim.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--providers", required=True, help=f"comma-separated, of {', '.join(sorted(SOURCES))}")
    p.add_argument("--agents", type=int, required=True)
    p.add_argument("--contacts-per-slot", type=float, required=True)
    p.add_argument("--clock", required=True)
    asyncio.run(main(p.parse_args()))
