"""Every provider simulator, started together, with the sources that point at them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from aht_exporter.clock import Clock
from aht_exporter.demo import demo_workload, genesys_sources
from aht_exporter.simulator.faults import Fault, FaultInjector
from aht_exporter.simulator.genesys import GenesysSimulator


class Simulator(Protocol):
    faults: FaultInjector

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    """How to run one provider's simulator, and what its parser says about schema faults."""

    make: Any  # (clock) -> Simulator
    sources: Any  # (base_url) -> list of raw source dicts
    errors: dict[Fault, str]


SIMULATORS: dict[str, Entry] = {
    "genesys": Entry(
        make=lambda clock: GenesysSimulator(
            demo_workload(), clock, client_id="demo-client", client_secret="demo-secret"
        ),
        sources=genesys_sources,
        errors={
            Fault.MISSING_FIELD: "stats.count is not a number",
            Fault.WRONG_TYPE: "stats.sum is not a number",
            Fault.ERROR_IN_200: "answered 200 with an error: service.unavailable",
        },
    ),
}


@dataclass
class Fleet:
    simulators: dict[str, Simulator] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def faults(self, provider: str) -> FaultInjector:
        return self.simulators[provider].faults

    async def stop(self) -> None:
        for sim in self.simulators.values():
            await sim.stop()


async def start_fleet(clock: Clock) -> Fleet:
    fleet = Fleet()
    for provider, entry in SIMULATORS.items():
        sim = entry.make(clock)
        url = await sim.start()
        fleet.simulators[provider] = sim
        fleet.sources.extend(entry.sources(url))
    return fleet
