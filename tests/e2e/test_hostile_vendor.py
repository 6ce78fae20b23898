"""A hostile vendor beside a healthy one, end to end: the vendor's bytes in, the scraper's bytes out (issue 12).

The healthy source polls the Genesys simulator over loopback; the hostile one is a Genesys API (mocked with respx
at its own https hosts) that sends what no test fixture did: a lone UTF-16 surrogate in a queue name or an error
text, a negative or overflowing figure, a name reply nested 100,000 deep. Whatever it sends, the healthy source
keeps polling and showing, /metrics stays a valid exposition, / answers 200, and no traceback is printed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from aht_exporter.cli import EXIT_OK, run_once
from aht_exporter.clock import FakeClock
from aht_exporter.config import Config
from aht_exporter.scheduler import Exporter, SourceRunner
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import demo_config, demo_workload
from aht_exporter.simulator.genesys import GenesysSimulator, demo_sources
from aht_exporter.timebuckets import isoformat_z, parse_iso
from tests.helpers import T0, RecordingSleep, Series, parse_exposition, samples

API = "https://api.hostile.example"
LOGIN = "https://login.hostile.example"
HOSTILE = "hostile-genesys"
HEALTHY = "demo-genesys"
TOKEN = "hostile-token-5f2a9c"

# A queue name as the vendor's bytes: JSON's own escape for a lone surrogate, valid JSON that UTF-8 cannot hold.
SURROGATE_QUEUES = b'{"entities": [{"id": "q1", "name": "bad\\ud800name"}], "pageCount": 1}'
DEEP = ('{"a":' * 100_000 + "1" + "}" * 100_000).encode()  # built by repetition, not recursion


def hostile_source() -> dict[str, Any]:
    return {
        "name": HOSTILE,
        "provider": "genesys",
        "base_url": API,
        "login_url": LOGIN,
        "client_id": "hostile-client",
        "client_secret": "hostile-secret-7Qx",
        "group_by": ["media_type", "queue"],
        "windows": ["30m"],
    }


def aggregates(stats: str) -> Callable[[httpx.Request], httpx.Response]:
    """The vendor's answer to any aggregates query: one tHandle per 30-minute bucket asked for, for queue q1,
    with `stats` as raw JSON text (so that -5 and 1.7e308 arrive exactly as sent)."""

    def answer(request: httpx.Request) -> httpx.Response:
        first, last = json.loads(request.content)["interval"].split("/")
        starts = range(int(parse_iso(first)), int(parse_iso(last)), 1800)
        metrics = f'[{{"metric": "tHandle", "stats": {stats}}}]'
        data = ", ".join(
            f'{{"interval": "{isoformat_z(t)}/{isoformat_z(t + 1800)}", "metrics": {metrics}}}' for t in starts
        )
        group = '{"mediaType": "voice", "queueId": "q1"}'
        return httpx.Response(200, content=f'{{"results": [{{"group": {group}, "data": [{data}]}}]}}'.encode())

    return answer


@dataclass
class HostileVendor:
    """The hostile Genesys API's routes, each swappable per test."""

    router: respx.MockRouter
    token: respx.Route = field(init=False)
    query: respx.Route = field(init=False)
    queues: respx.Route = field(init=False)

    def __post_init__(self) -> None:
        self.router.route(host="127.0.0.1").pass_through()  # the simulator and our own /metrics
        self.token = self.router.post(f"{LOGIN}/oauth/token").respond(
            200, json={"access_token": TOKEN, "token_type": "bearer", "expires_in": 86400}
        )
        self.query = self.router.post(f"{API}/api/v2/analytics/conversations/aggregates/query")
        self.query.side_effect = aggregates('{"sum": 120000, "count": 2}')
        self.queues = self.router.get(f"{API}/api/v2/routing/queues").respond(200, content=SURROGATE_QUEUES)


@dataclass
class Stack:
    clock: FakeClock
    vendor: HostileVendor
    exporter: Exporter
    client: httpx.AsyncClient

    async def poll_and_scrape(self) -> Series:
        await self.exporter.poll_all()
        await self.exporter.rendered_now()
        r = await self.client.get("/metrics")
        assert r.status_code == 200
        # Both formats: strict UTF-8, and read by prometheus_client's parsers, which raise on any line they cannot.
        om = await self.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.status_code == 200 and list(parse_openmetrics(om.content.decode("utf-8")))  # type: ignore[no-untyped-call]
        return parse_exposition(r.content.decode("utf-8"))

    def runner(self, name: str) -> SourceRunner:
        return next(r for r in self.exporter.runners if r.name == name)


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[Stack]:
    clock = FakeClock(T0)
    sim = GenesysSimulator(demo_workload(), clock, client_id="demo-client", client_secret="demo-secret")
    url = await sim.start()
    config = demo_config([hostile_source(), demo_sources(url)[0]])
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        vendor = HostileVendor(router)
        exporter = Exporter(config, clock=clock, sleep=RecordingSleep())
        runner, bound = await start_server(exporter, "127.0.0.1:0")
        async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
            yield Stack(clock, vendor, exporter, client)
        await runner.cleanup()
        await exporter.aclose()
    await sim.stop()


def value(series: Series, name: str, **labels: str) -> float:
    (found,) = samples(series, name, **labels).values()
    return found


def assert_healthy_source_polled(series: Series, polls: int) -> None:
    assert value(series, "aht_exporter_source_up", source=HEALTHY) == 1
    assert value(series, "aht_exporter_polls_total", source=HEALTHY, result="success") == polls
    assert samples(series, "aht_seconds", source=HEALTHY)


# --- section 1: one vendor string must not freeze /metrics ---------------------------------------------------


@pytest.mark.asyncio
async def test_a_lone_surrogate_in_a_queue_name_never_freezes_metrics_for_the_source_beside_it(stack: Stack) -> None:
    for poll in range(1, 4):
        series = await stack.poll_and_scrape()
        assert_healthy_source_polled(series, poll)
        assert value(series, "aht_exporter_source_up", source=HOSTILE) == 1  # its data was fine; its name is mended
        assert value(series, "aht_exporter_polls_total", source=HOSTILE, result="success") == poll
        assert value(series, "aht_queue_info", source=HOSTILE, queue="q1", queue_name="bad\ufffdname") == 1
        assert value(series, "aht_seconds", source=HOSTILE, queue="q1") == 60.0
        stack.clock.advance(300)
    assert (await stack.client.get("/")).status_code == 200
    # Exactly what was asked of the hostile vendor: a bearer-token query for our buckets, then names page 1.
    query = stack.vendor.query.calls[0].request
    assert query.headers["Authorization"] == f"Bearer {TOKEN}"
    body = json.loads(query.content)
    assert body["groupBy"] == ["mediaType", "queueId"] and body["granularity"] == "PT30M"
    assert dict(stack.vendor.queues.calls[0].request.url.params) == {"pageSize": "100", "pageNumber": "1"}


@pytest.mark.asyncio
async def test_a_lone_surrogate_in_a_vendor_error_text_keeps_the_status_page_answering(stack: Stack) -> None:
    stack.vendor.query.side_effect = None
    stack.vendor.query.respond(400, content=b'{"code": "bad\\udfffcode", "message": "down \\ud800 for now"}')
    series = await stack.poll_and_scrape()
    assert value(series, "aht_exporter_source_up", source=HOSTILE) == 0
    assert_healthy_source_polled(series, 1)
    error = stack.runner(HOSTILE).health.last_error
    assert error is not None and error.endswith("HTTP 400: bad\ufffdcode: down \ufffd for now")
    page = await stack.client.get("/")
    assert page.status_code == 200 and "down \ufffd for now" in page.text


# --- section 6: numbers --------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("stats", "error"),
    [
        ('{"sum": -5, "count": 1}', "results[0].data[0].metrics[0].stats.sum: -5 is negative"),
        (
            '{"sum": 1.7e308, "count": 1}',
            "results[0].data[0].metrics[0].stats.sum: 1.7e+308 is above the limit of 1e+15 ms",
        ),
        (
            '{"sum": 1000, "count": 1e300}',
            "results[0].data[0].metrics[0].stats.count: 1e+300 is above the limit of 1e+12 contacts",
        ),
    ],
)
async def test_a_figure_out_of_range_fails_its_poll_with_one_line_naming_the_path(
    stack: Stack, stats: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    stack.vendor.query.side_effect = aggregates(stats)
    with caplog.at_level(logging.INFO):
        series = await stack.poll_and_scrape()
    assert stack.runner(HOSTILE).health.last_error == (
        "data request to api.hostile.example POST /api/v2/analytics/conversations/aggregates/query: "
        f"aggregates response: {error}"
    )
    assert value(series, "aht_exporter_source_up", source=HOSTILE) == 0
    assert samples(series, "aht_seconds", source=HOSTILE) == {}  # never a negative or absurd AHT
    assert_healthy_source_polled(series, 1)
    assert all(r.exc_info is None for r in caplog.records), "one line, no traceback"
    failed = [r for r in caplog.records if getattr(r, "source", None) == HOSTILE and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in failed] == ["poll failed"]


# --- section 7: names -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_name_reply_nested_100000_deep_never_fails_the_poll(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack.vendor.queues.respond(200, content=DEEP)
    with caplog.at_level(logging.WARNING):
        series = await stack.poll_and_scrape()
    assert value(series, "aht_exporter_source_up", source=HOSTILE) == 1
    assert value(series, "aht_seconds", source=HOSTILE, queue="q1") == 60.0
    assert samples(series, "aht_queue_info", source=HOSTILE) == {}  # no names yet: none shown
    assert_healthy_source_polled(series, 1)
    warnings = [r for r in caplog.records if getattr(r, "source", None) == HOSTILE]
    assert [r.getMessage() for r in warnings] == ["name lookup failed"]
    assert all(r.exc_info is None for r in caplog.records)


# --- --once ---------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_once_prints_the_exposition_and_no_traceback_for_a_hostile_vendor(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config: Config = demo_config([hostile_source()])
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router, caplog.at_level(logging.INFO):
        HostileVendor(router)
        assert await run_once(config) == EXIT_OK
    out, err = capsys.readouterr()
    assert 'queue_name="bad\ufffdname"' in out
    families = {f.name for f in text_string_to_metric_families(out)}
    assert {"aht_seconds", "aht_queue_info", "aht_exporter_source_up"} <= families
    assert "Traceback" not in err and all(r.exc_info is None for r in caplog.records)
