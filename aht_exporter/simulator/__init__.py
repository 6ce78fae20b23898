"""Loopback simulators of the providers' APIs, serving one deterministic `workload.Workload`.

They let the exporter run end to end (`--demo`, the e2e tests, the benchmarks) with no credentials and
no internet, and they know the ground truth (`Workload.truth`) that the exported figures must equal.
"""

from __future__ import annotations

from aiohttp import web

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
