"""`--demo`: the built-in provider simulators on ephemeral loopback ports, and sources pointed at them."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from aht_exporter.clock import Clock
from aht_exporter.config import Config, build_config
from aht_exporter.simulator.genesys import GenesysSimulator
from aht_exporter.simulator.workload import Workload

DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # not a secret: the simulator's own, printed in the README
DEMO_SEED = 1


def demo_workload() -> Workload:
    # A few minutes of reporting lag, as real analytics have, so re-fetching closed buckets matters.
    return Workload(seed=DEMO_SEED, queues=4, agents=20, contacts_per_slot=6.0, report_lag=180.0)


def genesys_sources(genesys_url: str) -> list[dict[str, Any]]:
    """The demo's Genesys sources, as raw config."""
    return [
        {
            "name": "demo-genesys",
            "provider": "genesys",
            "base_url": genesys_url,
            "login_url": genesys_url,
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "group_by": ["media_type", "queue"],
            "windows": ["30m", "1h", "1d"],
        },
        {
            "name": "demo-genesys-agents",
            "provider": "genesys",
            "base_url": genesys_url,
            "login_url": genesys_url,
            "client_id": DEMO_CLIENT_ID,
            "client_secret": DEMO_CLIENT_SECRET,
            "bucket": "15m",
            "group_by": ["agent"],
            "windows": ["15m", "1h"],
        },
    ]


def demo_config(genesys_url: str) -> Config:
    raw: dict[str, Any] = {"defaults": {"every": "5m", "delay": "1m"}, "sources": genesys_sources(genesys_url)}
    return build_config(raw, "<demo>", {})


class Demo:
    """The simulators, started and stopped together."""

    def __init__(self, clock: Clock, workload: Workload | None = None) -> None:
        self.clock = clock
        self.workload = workload or demo_workload()
        self.genesys = GenesysSimulator(
            self.workload, clock, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET
        )
        self._stack = AsyncExitStack()

    async def start(self) -> Config:
        url = await self.genesys.start("127.0.0.1", 0)
        self._stack.push_async_callback(self.genesys.stop)
        return demo_config(url)

    async def stop(self) -> None:
        await self._stack.aclose()
