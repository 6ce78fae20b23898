"""/metrics writes the cached parts of a body one after another: whole bodies, HEAD, and scrapers that leave."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import inspect
import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from aht_exporter.exposition import ScrapeTail, Segment, SourceView, joined, render
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, Sums, make_labels
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import WRITE_SLICE, start_server
from aht_exporter.store import Snapshot
from tests.helpers import FixedScrapeFamilies, mask_scrape_time_values

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def big_view() -> SourceView:
    """Enough series for bodies of several parts, each bigger than one write slice."""
    fields = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED, Field.TALK_TIME})
    groups: dict[tuple[tuple[str, str], ...], Sums] = {
        make_labels(agent=f"agent-{i:05d}"): Sums(handle_time_seconds=100.0 + i, contacts_handled=1.0 + i % 7)
        for i in range(6000)
    }
    health = SourceHealth("g1", "genesys", 3, up=True, polled=True)
    return SourceView(health, Snapshot(data_end=0, fields=fields, windows={"30m": groups, "1h": groups}))


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Exporter, str]]:
    source = {"name": "g1", "provider": "genesys", "region": "mypurecloud.com", "client_id": "i", "client_secret": "s"}
    exporter = Exporter(build_config({"sources": [source]}, "t", {}))
    exporter.rendered = render([big_view()])
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    yield exporter, f"http://{bound[0]}"
    await runner.cleanup()
    await exporter.aclose()


@pytest.mark.asyncio
async def test_each_body_arrives_whole_from_its_parts(served: tuple[Exporter, str]) -> None:
    exporter, url = served
    rendered = exporter.rendered
    assert len(rendered.text_format.parts) > 2 and len(rendered.text) > 1_000_000  # several parts, many slices
    async with httpx.AsyncClient(base_url=url) as client:
        for accept, gzipped, expected in (
            ("*/*", False, rendered.text_format),
            ("*/*", True, rendered.text_format),
            (OPENMETRICS, False, rendered.openmetrics_format),
            (OPENMETRICS, True, rendered.openmetrics_format),
        ):
            headers = {"Accept": accept, "Accept-Encoding": "gzip" if gzipped else "identity"}
            r = await client.send(client.build_request("GET", "/metrics", headers=headers), stream=True)
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == len(raw)
            # The cached parts as they are, then the tail this scrape read; the process values in it move.
            cached = expected.gzip_parts if gzipped else expected.parts
            assert raw.startswith(joined(cached))
            body = gzip.decompress(raw) if gzipped else raw
            now = rendered.openmetrics if accept == OPENMETRICS else rendered.text
            assert mask_scrape_time_values(body) == mask_scrape_time_values(now)
            assert body.startswith(b"# HELP aht_seconds") and b"\nprocess_cpu_seconds_total " in body


@pytest.mark.asyncio
async def test_head_answers_the_length_without_a_body_and_keeps_the_connection(served: tuple[Exporter, str]) -> None:
    exporter, url = served
    # The process and GC values are read at each scrape, and their lengths vary: held still here.
    exporter.rendered = dataclasses.replace(exporter.rendered, tail=ScrapeTail([FixedScrapeFamilies()]))
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.head("/metrics", headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) == len(exporter.rendered.text)
        assert r.content == b""
        assert (await client.get("/metrics", headers={"Accept-Encoding": "gzip"})).status_code == 200


@pytest.mark.asyncio
async def test_a_scraper_that_hangs_up_mid_body_leaves_the_server_serving(served: tuple[Exporter, str]) -> None:
    _, url = served
    host, port = url.removeprefix("http://").rsplit(":", 1)
    for _ in range(3):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        await writer.drain()
        await reader.read(65536)  # the headers and the first bytes, then gone
        writer.transport.abort()
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.asyncio
async def test_gzip_scrapes_never_make_the_text_and_uncompressed_ones_inflate_it_off_the_loop_keeping_none(
    served: tuple[Exporter, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, url = served
    rendered = exporter.rendered = render([big_view()])
    big = [s for s in rendered.text_format.parts if isinstance(s, Segment)]
    assert big and all(s.kept is None and s.size >= 64 * 1024 for s in big)  # their deflate data only
    threaded: list[object] = []
    real_to_thread = asyncio.to_thread

    async def to_thread(func: object, /, *args: object) -> object:
        threaded.append(args[0] if args else func)
        return await real_to_thread(func, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    async with httpx.AsyncClient(base_url=url) as client:
        for accept in ("*/*", OPENMETRICS):
            r = await client.get("/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
            assert r.status_code == 200 and len(r.content) > 1_000_000
        assert threaded == []
        first = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        # Each big segment inflated a slice at a time, every slice in a worker thread: at least a step per
        # WRITE_SLICE of its text, and one more that finds the end.
        least = sum(-(-s.size // WRITE_SLICE) + 1 for s in big)
        assert len(threaded) >= least and all(inspect.isgenerator(step) for step in threaded)
        steps = len(threaded)
        second = await client.get("/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": "identity"})
        assert len(threaded) == 2 * steps  # again: nothing of the first scrape's text was kept
    assert all(s.kept is None for s in big)
    assert mask_scrape_time_values(first.content) == mask_scrape_time_values(rendered.text)
    assert mask_scrape_time_values(second.content) == mask_scrape_time_values(rendered.openmetrics)
    assert b'aht_contacts_handled{agent="agent-05998",provider="genesys",source="g1",window="1h"} 7.0' in first.content


def test_a_segment_inflates_in_slices_to_its_text_and_refuses_a_wrong_size() -> None:
    text = b"".join(b'aht_seconds{agent="a%06d",window="1h"} %d.5\n' % (i, i * 7 % 1000) for i in range(40_000))
    segment = Segment.of(text)
    assert segment.kept is None and segment.size == len(text)
    for limit in (1, 4096, WRITE_SLICE, len(text), 10 * len(text)):
        slices = list(segment.text_slices(limit)) if limit > 1 else list(itertools.islice(segment.text_slices(1), 5))
        assert all(0 < len(piece) <= limit for piece in slices)
        if limit > 1:
            assert b"".join(slices) == text
    assert segment.raw == text
    lying = dataclasses.replace(segment, size=segment.size + 1)
    with pytest.raises(ValueError, match="inflated to"):
        b"".join(lying.text_slices(WRITE_SLICE))
