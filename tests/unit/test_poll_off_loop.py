"""A poll's CPU work runs off the event loop (issue 18): the store's updates and snapshot, and the Genesys
reply's decoding, in worker threads. A poll cancelled while its store work runs must not leave the store
half-updated, nor touched by two threads at once: the next poll waits for that work to end."""

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import Bucket, Field, make_labels
from aht_exporter.providers import genesys
from aht_exporter.providers.genesys import GenesysProvider
from aht_exporter.scheduler import SourceRunner
from aht_exporter.store import SourceStore
from tests.unit.genesys_config import API, LOGIN, genesys_config
from tests.unit.test_scheduler import TEN, B, runner_for, steady

WAIT = 10.0  # seconds: the bound of every wait below; none is reached when the code is right


async def until(event: threading.Event) -> None:
    """Wait, without blocking the loop, for a worker thread to set `event`."""
    assert await asyncio.to_thread(event.wait, WAIT), "the worker thread never got there"


def bucket_store(runner: SourceRunner) -> SourceStore:
    assert isinstance(runner.store, SourceStore)
    return runner.store


def gated(runner: SourceRunner, method: str, calls: int) -> tuple[threading.Event, threading.Event]:
    """Make the store's `method` wait, on its `calls`-th call, for a gate the test opens; returns
    (inside, gate): `inside` is set once that call has started."""
    inside, gate = threading.Event(), threading.Event()
    real = getattr(runner.store, method)
    seen = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == calls:
            inside.set()
            assert gate.wait(WAIT), "the test never opened the gate"
        return real(*args, **kwargs)

    setattr(runner.store, method, wrapper)
    return inside, gate


async def reference() -> tuple[list[tuple[int, int]], Any]:
    """Two polls, 30 minutes apart, none cancelled: the spans fetched and the final snapshot."""
    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(steady(), clock)
    assert await runner.poll()
    clock.advance(B)
    assert await runner.poll()
    await provider.aclose()
    return provider.spans, runner.snapshot


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["replace", "prune", "snapshot"])
async def test_a_poll_cancelled_during_its_store_work_leaves_the_store_whole_for_the_next(method: str) -> None:
    spans, snapshot = await reference()
    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(steady(), clock)
    inside, gate = gated(runner, method, calls=1)
    first = asyncio.create_task(runner.poll())
    await until(inside)  # the loop runs while the store work does: it is in a thread
    first.cancel()  # as a reload or the poll's deadline does
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, WAIT)  # the poll ends at once; its thread goes on
    clock.advance(B)
    second = asyncio.create_task(runner.poll())
    for _ in range(50):
        await asyncio.sleep(0)
    # The next poll chooses its span from what the store holds: it waits for the cancelled work first.
    assert provider.spans == spans[:1]
    assert not second.done()
    gate.set()
    assert await asyncio.wait_for(second, WAIT)
    assert provider.spans == spans
    assert runner.snapshot == snapshot
    assert bucket_store(runner).fetched_until == TEN + B
    await provider.aclose()


@pytest.mark.asyncio
async def test_store_work_that_fails_after_its_poll_was_cancelled_fails_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spans, snapshot = await reference()
    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(steady(), clock)
    inside, gate = gated(runner, "prune", calls=1)
    real_prune = bucket_store(runner).prune
    broken = {"yes": True}

    def prune(data_end: int) -> None:
        real_prune(data_end)  # the gated wrapper: waits for the gate
        if broken.pop("yes", False):
            raise RuntimeError("a bug in the store")

    bucket_store(runner).prune = prune  # type: ignore[method-assign]
    first = asyncio.create_task(runner.poll())
    await until(inside)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, WAIT)
    gate.set()
    clock.advance(B)
    assert await asyncio.wait_for(runner.poll(), WAIT)  # the store holds the first poll's buckets, pruned
    assert provider.spans == spans
    assert runner.snapshot == snapshot
    assert "never retrieved" not in caplog.text
    await provider.aclose()


@pytest.mark.asyncio
async def test_the_snapshot_is_built_off_the_loop_and_the_poll_still_succeeds() -> None:
    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(steady(), clock)
    inside, gate = gated(runner, "snapshot", calls=1)
    poll = asyncio.create_task(runner.poll())
    await until(inside)
    ticks = 0
    for _ in range(5):  # the loop goes on serving while the snapshot is summed
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not poll.done()
    gate.set()
    assert await asyncio.wait_for(poll, WAIT)
    assert runner.snapshot is not None and runner.snapshot.data_end == TEN
    await provider.aclose()


@pytest.mark.asyncio
async def test_the_genesys_reply_is_decoded_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = {
        "results": [
            {
                "group": {"queueId": "q1", "mediaType": "voice"},
                "data": [
                    {
                        "interval": "2026-03-02T09:30:00.000Z/2026-03-02T10:00:00.000Z",
                        "metrics": [{"metric": "tHandle", "stats": {"sum": 120000.0, "count": 2}}],
                    }
                ],
            }
        ]
    }
    threads: list[int] = []
    real = genesys.parse_aggregates_json

    def parse(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(genesys, "parse_aggregates_json", parse)
    config = genesys_config()
    provider = GenesysProvider(config, SourceHealth(config.name, "genesys", 2), clock=FakeClock(TEN))
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(f"{LOGIN}/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "tok", "token_type": "bearer", "expires_in": 86400})
        )
        query = mock.post(f"{API}/api/v2/analytics/conversations/aggregates/query").mock(
            return_value=httpx.Response(200, json=reply)
        )
        try:
            buckets = await provider.fetch(TEN - B, TEN)
        finally:
            await provider.aclose()
    request = query.calls.last.request
    assert request.headers["Authorization"] == "Bearer tok"
    assert json.loads(request.content) == {
        "interval": "2026-03-02T09:30:00.000Z/2026-03-02T10:00:00.000Z",
        "granularity": "PT30M",
        "groupBy": ["mediaType", "queueId"],
        "metrics": ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon", "nOffered"],
    }
    assert buckets == [
        Bucket(
            TEN - B,
            TEN,
            make_labels(media_type="voice", queue="q1"),
            {Field.HANDLE_TIME: 120.0, Field.CONTACTS_HANDLED: 2.0},
        )
    ]
    assert len(threads) == 1 and threads[0] != threading.get_ident()  # decoded, but not on the loop's thread
