"""`--demo`: the built-in provider simulators on ephemeral loopback ports, and sources pointed at them.

Only the demo entry points (`aht-exporter --demo`, `aht-exporter backfill --demo`) import this module, in
their demo branch: a production start loads no simulator code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aht_exporter.clock import Clock
from aht_exporter.config import Config
from aht_exporter.registry import build_config
from aht_exporter.simulator import amazon_connect, genesys, koreai, liveperson, ozonetel
from aht_exporter.simulator.faults import Fault, FaultInjector
from aht_exporter.simulator.koreai import KoreAISimulator
from aht_exporter.simulator.liveperson import LivePersonSimulator
from aht_exporter.simulator.workload import Workload

if TYPE_CHECKING:
    from aht_exporter.scheduler import Exporter

DEMO_SEED = 1


def demo_workload() -> Workload:
    # A few minutes of reporting lag, as real analytics have, so re-fetching closed buckets matters.
    return Workload(seed=DEMO_SEED, queues=4, agents=20, contacts_per_slot=6.0, report_lag=180.0)


class Simulator(Protocol):
    faults: FaultInjector

    @property
    def base_url(self) -> str: ...

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class DemoProvider:
    """One provider in the demo: how to make its simulator, and the sources that point at it."""

    make: Callable[[Workload, Clock], Simulator]
    sources: Callable[[str], list[dict[str, Any]]]


DEMO_PROVIDERS: dict[str, DemoProvider] = {
    "genesys": DemoProvider(make=genesys.demo_simulator, sources=genesys.demo_sources),
    "koreai": DemoProvider(make=KoreAISimulator, sources=lambda url: [koreai.demo_source(url)]),
    "liveperson": DemoProvider(make=LivePersonSimulator, sources=lambda url: [liveperson.demo_source(url)]),
    "ozonetel": DemoProvider(make=ozonetel.demo_simulator, sources=lambda url: [ozonetel.demo_source(url)]),
    "amazon_connect": DemoProvider(
        make=amazon_connect.demo_simulator, sources=lambda url: [amazon_connect.demo_source(url)]
    ),
}

# Routing labels on every demo source, so that the shipped alerts show them (README, "Labels for routing").
DEMO_DEFAULTS: dict[str, Any] = {"every": "5m", "delay": "1m", "labels": {"team": "contact-center", "site": "demo"}}


def demo_config(sources: list[dict[str, Any]], defaults: dict[str, Any] | None = None) -> Config:
    raw = {"defaults": DEMO_DEFAULTS if defaults is None else defaults, "sources": sources}
    return build_config(raw, "<demo>", {})


@dataclass(frozen=True)
class _Pending:
    provider: str
    fault: Fault
    count: int | None
    after: int


class Demo:
    """Every provider's simulator on an ephemeral loopback port, started and stopped together."""

    def __init__(
        self, clock: Clock, workload: Workload | None = None, providers: dict[str, DemoProvider] | None = None
    ) -> None:
        self.clock = clock
        self.workload = workload or demo_workload()
        self.providers = DEMO_PROVIDERS if providers is None else providers
        self.simulators: dict[str, Simulator] = {}
        self.sources: list[dict[str, Any]] = []
        self._started: list[Simulator] = []
        self.pending: list[_Pending] = []  # faults waiting for their provider's AFTER successful polls

    async def start(self) -> Config:
        for name, provider in self.providers.items():
            sim = provider.make(self.workload, self.clock)
            url = await sim.start("127.0.0.1", 0)
            self._started.append(sim)
            self.simulators[name] = sim
            self.sources.extend(provider.sources(url))
        return demo_config(self.sources)

    def inject(self, spec: str) -> None:
        """`PROVIDER:FAULT[:COUNT][@AFTER]`, e.g. `genesys:503`, `genesys:timeout:4` or `koreai:503@2`: the
        next COUNT data requests (all of them without COUNT) fail, starting once each of the provider's
        sources has had AFTER successful polls (at once without AFTER; see `watch`). A 401 here is a
        revoked client, not an expired token: a new token does not cure it (simulator/faults.py)."""
        head, _, after = spec.partition("@")
        provider, _, rest = head.partition(":")
        fault, _, count = rest.partition(":")
        if provider not in self.simulators:
            raise ValueError(f"{spec!r}: no demo provider {provider!r} (have {', '.join(self.simulators)})")
        try:
            kind = Fault(fault)
        except ValueError:
            raise ValueError(f"{spec!r}: no fault {fault!r} (have {', '.join(f.value for f in Fault)})") from None
        if count and not (count.isdigit() and int(count) > 0):
            raise ValueError(f"{spec!r}: the count must be a whole number above 0")
        if "@" in spec and not after.isdigit():
            raise ValueError(f"{spec!r}: after @, the number of successful polls to wait for")
        pending = _Pending(provider, kind, int(count) if count else None, int(after or 0))
        if pending.after:
            self.pending.append(pending)
        else:
            self._start(pending)

    def _start(self, pending: _Pending) -> None:
        faults = self.simulators[pending.provider].faults
        faults.inject(pending.fault, pending.count, sticky=pending.fault is Fault.UNAUTHORIZED)

    def watch(self, exporter: Exporter) -> None:
        """Start each `@AFTER` fault once every source of its provider has had AFTER successful polls."""
        if not self.pending:
            return
        runners = exporter.runners
        for runner in runners:
            notify = runner.on_update

            def on_update(notify: Callable[[], None] = notify) -> None:
                notify()
                for pending in list(self.pending):
                    mine = [r.health for r in runners if r.config.provider == pending.provider]
                    if mine and min(h.polls["success"] for h in mine) >= pending.after:
                        self.pending.remove(pending)
                        self._start(pending)

            runner.on_update = on_update

    async def stop(self) -> None:
        """Stop every simulator at once: each waits at most its runner's shutdown_timeout (1 s) for a hung
        request, so the demo's stop fits in what is left of the 10 s after a SIGTERM. Idempotent."""
        started, self._started = self._started, []
        await asyncio.gather(*(sim.stop() for sim in started))
