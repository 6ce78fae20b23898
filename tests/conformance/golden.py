"""One provider's golden exposition: its demo sources, polled by the real Exporter against its simulator
on a fixed clock and a fixed workload, less the families that cannot be the same twice."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path

from aht_exporter.clock import FakeClock
from aht_exporter.scheduler import Exporter
from aht_exporter.simulator.demo import demo_config
from aht_exporter.simulator.workload import Workload
from tests.conformance.cases import ROOT, demo_of
from tests.helpers import T0

GOLDEN = ROOT / "tests" / "golden"
UPDATE = "AHT_UPDATE_GOLDEN"

# Two polls: the first fills the windows, the second re-fetches what the vendor may have revised and
# moves the counters on by one bucket. POLL_GAP is the demo's `every`.
POLL_GAP = 300
# Bounds the whole scenario: two polls of a loopback simulator take about a second.
SCENARIO_LIMIT = 60.0


def golden_workload() -> Workload:
    """Small, so that a reviewer can read a golden file, yet holding every target the demo sources name
    (Ozonetel's asks for five agents and three campaigns); fixed here, so that a change to the demo's own
    workload does not rewrite every golden file."""
    return Workload(seed=16, queues=3, agents=5, contacts_per_slot=4.0, report_lag=180.0)


# Families whose values differ from one run to the next, left out whole (never a value rewritten):
DROPPED = {
    "aht_exporter_poll_duration_seconds": "the wall time each poll took",
    "aht_exporter_build_info": "the package's and the interpreter's versions",
}
DROPPED_PREFIXES = {
    "process_": "the process collector's, read at each scrape (exposition.ScrapeTail)",
    "python_gc_": "the garbage collector's, read at each scrape (exposition.ScrapeTail)",
}


def dropped(family: str) -> bool:
    return family in DROPPED or family.startswith(tuple(DROPPED_PREFIXES))


def family_of(line: str) -> str | None:
    """The family a `# HELP` or `# TYPE` line opens, else None (a sample of the family opened last)."""
    if line.startswith(("# HELP ", "# TYPE ")):
        return line.split(" ", 3)[2]
    return None


def cut(body: bytes) -> tuple[bytes, set[str]]:
    """The text exposition without the DROPPED families, and the names of those it held."""
    kept: list[str] = []
    seen: set[str] = set()
    keep = True
    for line in body.decode().splitlines(keepends=True):
        family = family_of(line)
        if family is not None:
            keep = not dropped(family)
            if not keep:
                seen.add(family)
        if keep:
            kept.append(line)
    return "".join(kept).encode(), seen


@dataclass(frozen=True)
class Exposition:
    text: bytes  # as a scrape of /metrics would get it, every family
    openmetrics: bytes
    simulator_url: str

    @property
    def golden(self) -> bytes:
        return cut(self.text)[0]


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.prom"


async def scenario(name: str) -> Exposition:
    demo = demo_of(name)
    clock = FakeClock(T0)
    sim = demo.make(golden_workload(), clock)
    url = await sim.start("127.0.0.1", 0)
    try:
        exporter = Exporter(demo_config(demo.sources(url)), clock=clock)
        try:
            async with asyncio.timeout(SCENARIO_LIMIT):
                first = await exporter.poll_all()
                assert first, [r.health.last_error for r in exporter.runners]
                clock.advance(POLL_GAP)
                second = await exporter.poll_all()
                assert second, [r.health.last_error for r in exporter.runners]
                rendered = await exporter.rendered_now()
        finally:
            await exporter.aclose()
    finally:
        await sim.stop()
    return Exposition(rendered.text, rendered.openmetrics, url)


@functools.cache
def exposition(name: str) -> Exposition:
    """The scenario's result, made once per test run and shared by the tests that read it."""
    return asyncio.run(scenario(name))
