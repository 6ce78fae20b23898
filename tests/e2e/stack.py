"""One provider's simulator and an exporter polling it over loopback, served, for the e2e exporter tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from aht_exporter.clock import Clock
from aht_exporter.config import Config
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator import ServedSimulator
from tests.helpers import Series, parse_exposition

S = TypeVar("S", bound=ServedSimulator)
T = TypeVar("T", bound="Stack[Any]")


@dataclass
class Stack(Generic[S]):
    clock: Clock
    sim: S
    config: Config
    exporter: Exporter
    client: httpx.AsyncClient

    async def scrape(self) -> Series:
        await self.exporter.rendered_now()
        r = await self.client.get("/metrics")
        assert r.status_code == 200
        return parse_exposition(r.text)


async def serve_stack(
    kind: type[T],
    clock: Clock,
    sim: S,
    demo_source: Callable[[str], dict[str, Any]],
    overrides: tuple[dict[str, Any], ...],
    cleanups: list[Callable[[], Awaitable[Any]]],
) -> T:
    """Start `sim`, and an exporter serving one source per override (the demo source with it on top; one
    plain demo source without any); what to stop afterwards, in reverse, goes into `cleanups`."""
    url = await sim.start()
    raw = [{**demo_source(url), **o} for o in (overrides or ({},))]
    config = build_config({"sources": raw}, "<test>", {})
    exporter = Exporter(config, clock=clock)
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    client = httpx.AsyncClient(base_url=f"http://{bound[0]}")
    cleanups.extend([sim.stop, exporter.aclose, runner.cleanup, client.aclose])
    return kind(clock, sim, config, exporter, client)
