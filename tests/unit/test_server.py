"""The HTTP endpoints over real loopback HTTP, with no polling at all."""

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import accepts_gzip, check_telemetry_path, parse_listen_address, start_server
from tests.helpers import mask_scrape_time_values

# One Genesys source whose API is a closed loopback port: nothing here polls.
RAW = {
    "sources": [
        {
            "name": "g1",
            "provider": "genesys",
            "base_url": "http://127.0.0.1:9",
            "login_url": "http://127.0.0.1:9",
            "client_id": "id",
            "client_secret": "s3cret-Value",
        }
    ]
}


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Exporter, httpx.AsyncClient]]:
    exporter = Exporter(build_config(RAW, "t", {}))
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
        yield exporter, client
    await runner.cleanup()
    await exporter.aclose()


@pytest.mark.asyncio
async def test_metrics_serves_text_format_by_default(served: tuple[Exporter, httpx.AsyncClient]) -> None:
    _, client = served
    r = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'aht_exporter_source_up{provider="genesys",source="g1"} 0.0' in r.text
    assert "Content-Encoding" not in r.headers


@pytest.mark.asyncio
async def test_metrics_serves_openmetrics_when_asked(served: tuple[Exporter, httpx.AsyncClient]) -> None:
    _, client = served
    r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.text.endswith("# EOF\n")


@pytest.mark.asyncio
async def test_metrics_is_gzipped_when_accepted(served: tuple[Exporter, httpx.AsyncClient]) -> None:
    exporter, client = served
    r = await client.send(client.build_request("GET", "/metrics", headers={"Accept-Encoding": "gzip"}), stream=True)
    raw = await r.aread()  # httpx decodes; compare with the cached body instead
    assert r.headers["Content-Encoding"] == "gzip"
    # Only the values read at each scrape (process_*, python_gc_*) may differ from a body taken now.
    assert mask_scrape_time_values(raw) == mask_scrape_time_values(exporter.rendered.text)
    assert mask_scrape_time_values(gzip.decompress(exporter.rendered.text_gzip)) == mask_scrape_time_values(
        exporter.rendered.text
    )


@pytest.mark.asyncio
async def test_ready_waits_for_every_first_poll(served: tuple[Exporter, httpx.AsyncClient]) -> None:
    exporter, client = served
    r = await client.get("/-/ready")
    assert r.status_code == 503
    assert "g1" in r.text
    exporter.runners[0].health.record_failure(0.0, 0.1, "boom")  # a failed first poll still counts
    assert (await client.get("/-/ready")).status_code == 200
    assert (await client.get("/-/healthy")).status_code == 200


@pytest.mark.asyncio
async def test_status_page_shows_each_source_and_escapes_errors(served: tuple[Exporter, httpx.AsyncClient]) -> None:
    exporter, client = served
    exporter.runners[0].health.record_failure(0.0, 0.1, "<script>alert(1)</script>")
    r = await client.get("/")
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<td>g1</td><td>genesys</td>" in r.text
    assert "&lt;script&gt;" in r.text and "<script>" not in r.text
    assert '<a href="/metrics">' in r.text
    assert "s3cret-Value" not in r.text


@pytest.mark.asyncio
async def test_status_page_says_no_data_yet_for_a_source_that_never_had_any(
    served: tuple[Exporter, httpx.AsyncClient],
) -> None:
    exporter, client = served
    health = exporter.runners[0].health
    for failures in (1, 2, 3):  # past stale_after too: there was nothing to withdraw
        health.record_failure(0.0, 0.1, "connect failed")
        page = (await client.get("/")).text
        assert f"down ({failures} failed polls, no data yet)" in page
        assert "keeping last data" not in page and "data withdrawn" not in page
    health.record_success(10.0, 0.1, 0)
    health.record_failure(20.0, 0.1, "boom")
    assert "down (1 failed polls, keeping last data)" in (await client.get("/")).text


@pytest.mark.asyncio
async def test_status_page_shows_a_lone_surrogate_in_an_error_as_a_replacement_character(
    served: tuple[Exporter, httpx.AsyncClient],
) -> None:
    exporter, client = served
    # What a vendor's JSON error text `"bad\ud800text"` decodes to; aiohttp's text= answered 500 with it.
    exporter.runners[0].health.record_failure(0.0, 0.1, "bad\ud800text")
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<td>bad\ufffdtext (at 1970-01-01 00:00:00 UTC)</td>" in r.text


def test_gzip_negotiation_respects_q_zero() -> None:
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, gzip;q=1.0, *;q=0.5")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("identity")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":9779", (None, 9779)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9779", ("::1", 9779)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_listen_addresses(address: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9779", "host:", ":99999", "host:http"])
def test_bad_listen_addresses(address: str) -> None:
    with pytest.raises(ValueError):
        parse_listen_address(address)


@pytest.mark.asyncio
async def test_every_listen_address_serves_and_the_telemetry_path_moves_metrics() -> None:
    exporter = Exporter(build_config(RAW, "t", {}))
    runner, bound = await start_server(exporter, ["127.0.0.1:0", "127.0.0.1:0"], telemetry_path="/stats")
    try:
        assert len(bound) == 2 and bound[0] != bound[1]
        for address in bound:
            async with httpx.AsyncClient(base_url=f"http://{address}") as client:
                stats = await client.get("/stats")
                assert stats.status_code == 200 and "aht_exporter_build_info" in stats.text
                assert (await client.get("/metrics")).status_code == 404
                assert 'href="/stats"' in (await client.get("/")).text
    finally:
        await runner.cleanup()
        await exporter.aclose()


@pytest.mark.parametrize("path", ["metrics", "/", "/-/healthy", "/-/ready", "/a b", "/m?x=1"])
def test_a_telemetry_path_that_is_not_a_free_absolute_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_telemetry_path(path)
