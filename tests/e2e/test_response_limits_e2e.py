"""Hostile replies over real loopback HTTP, through the whole exporter (issue 12, break 2).

A fake Genesys on 127.0.0.1 issues a token, then answers the aggregates query with an endless body or a
gzip bomb. The poll fails within the source's `max_response_size`, the status page and the metrics say
so, and the other source, served by the Genesys simulator, keeps polling. The fake counts what it sent:
the reader of the endless body stopped long before the fake ran out (it stops at a ceiling a reader ignoring
the bound would reach, so that this test can never eat the host's memory).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from aht_exporter.clock import FakeClock
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator import serve_app
from aht_exporter.simulator.demo import demo_config, demo_workload
from aht_exporter.simulator.genesys import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, GenesysSimulator, demo_sources
from tests.helpers import T0, parse_exposition

MIB = 1 << 20
CEILING = 64 * MIB  # a reader that ignores the 1MiB bound takes all of this
TOO_LARGE = (
    "data request to {host} POST /api/v2/analytics/conversations/aggregates/query: response larger than "
    "max_response_size 1MiB ({how}); raise it in the config if this is expected"
)


class Hostile:
    """A Genesys that issues tokens and answers every query with `mode`: endless, or a gzip bomb."""

    def __init__(self) -> None:
        self.mode = "endless"
        self.sent = 0  # body bytes written (inflated bytes, for the bomb)
        self.queries = 0
        self.app = web.Application()
        self.app.router.add_post("/oauth/token", self.token)
        self.app.router.add_post("/api/v2/analytics/conversations/aggregates/query", self.query)

    async def token(self, request: web.Request) -> web.Response:
        return web.json_response({"access_token": "hostile-token-0123456789", "expires_in": 86400})

    def _chunks(self) -> Iterator[bytes]:
        if self.mode == "endless":
            while self.sent < CEILING:
                self.sent += 64 << 10
                yield b"[" * (64 << 10)
            return
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        while self.sent < CEILING:
            self.sent += MIB
            yield compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        yield compressor.flush()

    async def query(self, request: web.Request) -> web.StreamResponse:
        self.queries += 1
        headers = {"Content-Type": "application/json"} | ({"Content-Encoding": "gzip"} if self.mode == "bomb" else {})
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for chunk in self._chunks():
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the reader hung up: what the bound is for
        return response


@dataclass
class Stack:
    hostile: Hostile
    exporter: Exporter
    client: httpx.AsyncClient


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[Stack]:
    clock = FakeClock(T0)
    sim = GenesysSimulator(demo_workload(), clock, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)
    healthy = demo_sources(await sim.start())[0]
    hostile = Hostile()
    hostile_runner, hostile_url = await serve_app(hostile.app, "127.0.0.1", 0)
    bad = healthy | {"name": "hostile", "base_url": hostile_url, "login_url": hostile_url}
    config = demo_config([healthy, bad | {"max_response_size": "1MiB"}])
    exporter = Exporter(config, clock=clock)
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
        yield Stack(hostile, exporter, client)
    await runner.cleanup()
    await exporter.aclose()
    await hostile_runner.cleanup()
    await sim.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(("mode", "how"), [("endless", "on the wire"), ("bomb", "decompressed")])
async def test_a_hostile_reply_fails_its_poll_at_the_bound_and_the_other_source_polls_on(
    stack: Stack, mode: str, how: str
) -> None:
    stack.hostile.mode = mode
    healthy, hostile = stack.exporter.runners

    assert await healthy.poll()
    assert not await hostile.poll()

    host = httpx.URL(hostile.config.base_url or "").netloc.decode()
    assert hostile.health.last_error == TOO_LARGE.format(host=host, how=how)
    assert stack.hostile.queries == 1  # not retried: the next reply would be as large
    if mode == "endless":  # the bomb's 64 MiB inflated is 64 KiB on the wire: the socket buffers take it all
        assert stack.hostile.sent < CEILING // 2  # the reader hung up; the socket buffers took the rest
    await stack.exporter.rendered_now()
    series = parse_exposition((await stack.client.get("/metrics")).text)
    up = {dict(labels)["source"]: value for (name, labels), value in series.items() if name == "aht_exporter_source_up"}
    assert up == {"hostile": 0, "demo-genesys": 1}
    page = (await stack.client.get("/")).text
    assert "response larger than max_response_size 1MiB" in page
