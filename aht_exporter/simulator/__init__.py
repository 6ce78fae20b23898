"""Loopback simulators of the providers' APIs, serving one deterministic `workload.Workload`.

They let the exporter run end to end (`--demo`, the e2e tests, the benchmarks) with no credentials and
no internet, and they know the ground truth (`Workload.truth`) that the exported figures must equal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from aht_exporter.simulator.faults import FaultInjector, Handler

# Seconds a stopping simulator waits for a request still being answered (a `slow` or `timeout` fault):
# short, so that the demo stops within what the 10 s after a SIGTERM leave (README, Running it for real).
SHUTDOWN_TIMEOUT = 1.0


async def serve_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve a simulator's `app` on host:port (0: any free port); its runner and base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"


class ServedSimulator(ABC):
    """A simulator's loopback server: its routes (`add_routes`) behind its own middleware and its fault
    injector's, started on host:port (0: any free port) and stopped, with the base URL it serves."""

    faults: FaultInjector
    _runner: web.AppRunner | None = None
    _base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not started")
        return self._base_url

    @abstractmethod
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The vendor's endpoints this simulator serves."""

    @abstractmethod
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What the vendor checks on every request (credentials, budgets), before the fault injector."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware, self.faults.middleware])
        self.add_routes(app.router)
        self._runner, self._base_url = await serve_app(app, host, port)
        return self._base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._base_url = None, None
