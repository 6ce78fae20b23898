"""End-to-end fixtures: the Genesys simulator and the exporter, on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
from aiohttp import web

from aht_exporter.clock import FakeClock
from aht_exporter.config import Config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import demo_config, demo_workload
from aht_exporter.simulator.genesys import GenesysSimulator, demo_sources
from tests.helpers import T0, Series, parse_exposition


@dataclass
class Stack:
    clock: FakeClock
    sim: GenesysSimulator
    config: Config
    exporter: Exporter
    client: httpx.AsyncClient
    runner: web.AppRunner

    async def scrape(self) -> Series:
        await self.exporter.rendered_now()
        r = await self.client.get("/metrics")
        assert r.status_code == 200
        return parse_exposition(r.text)


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[Stack]:
    clock = FakeClock(T0)
    sim = GenesysSimulator(demo_workload(), clock, client_id="demo-client", client_secret="demo-secret")
    url = await sim.start()
    config = demo_config(demo_sources(url))
    exporter = Exporter(config, clock=clock)
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
        yield Stack(clock, sim, config, exporter, client, runner)
    await runner.cleanup()
    await exporter.aclose()
    await sim.stop()
