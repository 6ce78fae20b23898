"""Polling with a controllable clock and a scripted provider: no wall-clock waits."""

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.memory import LET_GO_AT_ONCE
from aht_exporter.model import Bucket, Field, Names, ProviderError, Sums, make_labels
from aht_exporter.providers.base import BucketProvider, ClientNeeds, DataAge
from aht_exporter.providers.genesys import GenesysConfig
from aht_exporter.redact import Redactor
from aht_exporter.registry import build_config
from aht_exporter.scheduler import SourceRunner, poll_deadline, trigger_for
from aht_exporter.state import StateStore
from aht_exporter.timebuckets import parse_iso

TEN = int(parse_iso("2026-03-02T10:00:00Z"))
B = 1800
VOICE = make_labels(media_type="voice")

Fetch = Callable[[int, int], list[Bucket]]


class ScriptedProvider(BucketProvider[GenesysConfig]):
    """Answers fetch() from a function; records every span asked for."""

    name = "scripted"
    data_age = DataAge(bucket=B, delay=60)

    def __init__(self, health: SourceHealth, answer: Fetch) -> None:
        config = build_config(
            {
                "sources": [
                    {
                        "name": health.source,
                        "provider": "genesys",
                        "region": "mypurecloud.com",
                        "client_id": "id",
                        "client_secret": "very-secret-value",
                        "windows": ["30m", "2h"],
                        "refresh": "1h",
                        "stale_after": 2,
                    }
                ]
            },
            "t",
            {},
        ).sources[0]
        assert isinstance(config, GenesysConfig)
        super().__init__(config, health)
        self.answer = answer
        self.spans: list[tuple[int, int]] = []
        self.names_calls = 0

    def client_needs(self) -> ClientNeeds:
        return ClientNeeds(error_message=lambda body: None)

    @property
    def fields(self) -> frozenset[Field]:
        return frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})

    async def fetch(self, start: int, end: int) -> list[Bucket]:
        self.spans.append((start, end))
        result = self.answer(start, end)
        return result

    async def names(self) -> Names:
        self.names_calls += 1
        return Names(queues={"q": "Q"})


def steady(handle: float = 60.0) -> Fetch:
    def answer(start: int, end: int) -> list[Bucket]:
        return [
            Bucket(t, t + B, VOICE, {Field.HANDLE_TIME: handle, Field.CONTACTS_HANDLED: 1})
            for t in range(start, end, B)
        ]

    return answer


def failing(start: int, end: int) -> list[Bucket]:
    raise ProviderError("POST /x: HTTP 503: down")


def runner_for(answer: Fetch, clock: FakeClock, name: str = "src") -> tuple[SourceRunner, ScriptedProvider]:
    provider = ScriptedProvider(SourceHealth(name, "genesys", 2), answer)
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor(["very-secret-value"]))
    return runner, provider


@pytest.mark.asyncio
async def test_first_poll_backfills_the_longest_window_of_closed_buckets() -> None:
    clock = FakeClock(TEN + 6 * 60)  # boundary 10:05, newest closed 30m bucket ends 10:00
    runner, provider = runner_for(steady(), clock)
    assert await runner.poll()
    assert provider.spans == [(TEN - 7200, TEN)]
    assert runner.snapshot is not None
    snap = runner.snapshot.in_seconds()
    assert snap.windows["30m"][VOICE] == Sums(handle_time_seconds=60.0, contacts_handled=1)
    assert snap.windows["2h"][VOICE] == Sums(handle_time_seconds=240.0, contacts_handled=4)
    assert runner.health.data_end == TEN
    assert runner.health.up and runner.health.polled
    await provider.aclose()


@pytest.mark.asyncio
async def test_before_delay_has_passed_the_previous_boundary_is_used() -> None:
    clock = FakeClock(TEN + 59)  # 10:00:59, delay 1m: boundary is still 09:55
    runner, provider = runner_for(steady(), clock)
    await runner.poll()
    assert provider.spans == [(TEN - 1800 - 7200, TEN - 1800)]
    await provider.aclose()


@pytest.mark.asyncio
async def test_later_polls_refetch_only_the_refresh_span_and_pick_up_revisions() -> None:
    clock = FakeClock(TEN + 6 * 60)
    handle = [60.0]
    runner, provider = runner_for(lambda s, e: steady(handle[0])(s, e), clock)
    await runner.poll()
    clock.advance(30 * 60)  # 10:36: bucket 10:00-10:30 has closed
    handle[0] = 90.0  # the provider revised everything it serves
    await runner.poll()
    assert provider.spans[1] == (TEN + 1800 - 3600, TEN + 1800)
    assert runner.snapshot is not None
    snap = runner.snapshot.in_seconds()
    assert snap.data_end == TEN + 1800
    # 2h window: 2 old buckets at 60 s, 2 re-fetched at 90 s
    assert snap.windows["2h"][VOICE] == Sums(handle_time_seconds=300.0, contacts_handled=4)
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_failed_poll_keeps_the_data_until_stale_after_then_withdraws() -> None:
    clock = FakeClock(TEN + 6 * 60)
    answer: list[Fetch] = [steady()]
    runner, _ = runner_for(lambda s, e: answer[0](s, e), clock)
    await runner.poll()
    answer[0] = failing
    clock.advance(300)
    assert not await runner.poll()
    assert runner.health.up is False
    assert runner.health.last_error == "POST /x: HTTP 503: down"
    assert not runner.health.stale and runner.snapshot is not None
    clock.advance(300)
    await runner.poll()
    assert runner.health.stale  # stale_after: 2
    assert runner.health.polls == {"success": 1, "error": 2}


@pytest.mark.asyncio
async def test_recovery_after_failures_backfills_the_gap() -> None:
    clock = FakeClock(TEN + 6 * 60)
    answer: list[Fetch] = [steady()]
    runner, provider = runner_for(lambda s, e: answer[0](s, e), clock)
    await runner.poll()
    answer[0] = failing
    clock.advance(3 * 3600)
    await runner.poll()
    answer[0] = steady()
    clock.advance(300)
    assert await runner.poll()
    assert not runner.health.stale
    # 3 hours later: the gap since the last fetch (10:00) is wider than refresh, and the longest
    # window (2h) bounds it.
    assert provider.spans[-1] == (TEN + 3 * 3600 - 7200, TEN + 3 * 3600)
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_hanging_provider_fails_the_poll_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aht_exporter.scheduler.poll_deadline", lambda config: 0.05)

    class Hanging(ScriptedProvider):
        async def fetch(self, start: int, end: int) -> list[Bucket]:
            await asyncio.Event().wait()
            return []

    clock = FakeClock(TEN + 6 * 60)
    provider = Hanging(SourceHealth("h", "genesys", 2), steady())
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    assert not await runner.poll()
    assert runner.health.last_error == "poll did not finish within 0s"
    await provider.aclose()


@pytest.mark.asyncio
async def test_an_unexpected_exception_fails_the_poll_without_killing_the_daemon() -> None:
    def broken(start: int, end: int) -> list[Bucket]:
        raise KeyError("surprise")

    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(broken, clock)
    assert not await runner.poll()
    assert runner.health.last_error == "internal error: KeyError: 'surprise'"
    await provider.aclose()


@pytest.mark.asyncio
async def test_secrets_in_provider_errors_are_redacted() -> None:
    def leaky(start: int, end: int) -> list[Bucket]:
        raise ProviderError("vendor echoed very-secret-value back")

    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(leaky, clock)
    await runner.poll()
    assert runner.health.last_error == "vendor echoed <redacted> back"
    await provider.aclose()


@pytest.mark.asyncio
async def test_names_are_looked_up_at_most_hourly() -> None:
    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(steady(), clock)
    for _ in range(12):
        await runner.poll()
        clock.advance(300)
    assert provider.names_calls == 1
    clock.advance(3600)
    await runner.poll()
    assert provider.names_calls == 2
    await provider.aclose()


class SlowNames(ScriptedProvider):
    async def names(self) -> Names:
        await asyncio.sleep(3600)  # a directory of 100,000 users behind a rate limit
        return Names()


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_name_lookup_that_outlasts_the_poll_never_fails_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(TEN + 6 * 60)
    provider = SlowNames(SourceHealth("s", "genesys", 2), steady())
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING):
        assert await runner.poll()
    assert asyncio.get_running_loop().time() - started == pytest.approx(poll_deadline(provider.config), abs=1)
    assert runner.health.up and runner.snapshot is not None and runner.snapshot.windows["30m"]
    (record,) = caplog.records
    assert (
        record.getMessage() == "name lookup failed"
        and "not finished within the poll's time" in record.__dict__["error"]
    )
    await provider.aclose()


def _fires(every: int, delay: int, after: str, n: int = 3) -> list[str]:
    trigger = trigger_for(every, delay)
    now = datetime.fromisoformat(after)
    out = []
    previous = None
    for _ in range(n):
        nxt = trigger.get_next_fire_time(previous, now)
        out.append(nxt.strftime("%H:%M:%S"))
        previous, now = nxt, nxt
    return out


@pytest.mark.parametrize(
    ("every", "delay", "after", "expected"),
    [
        (300, 60, "2026-03-02T10:02:00+00:00", ["10:06:00", "10:11:00", "10:16:00"]),
        (300, 0, "2026-03-02T10:02:00+00:00", ["10:05:00", "10:10:00", "10:15:00"]),
        (900, 90, "2026-03-02T10:02:00+00:00", ["10:16:30", "10:31:30", "10:46:30"]),
        (3600, 240, "2026-03-02T10:02:00+00:00", ["10:04:00", "11:04:00", "12:04:00"]),
        (7200, 60, "2026-03-02T10:02:00+00:00", ["12:01:00", "14:01:00", "16:01:00"]),
        (2700, 60, "2026-03-02T10:02:00+00:00", ["10:31:00", "11:16:00", "12:01:00"]),  # 45m: epoch multiples
        (86400, 60, "2026-03-02T10:02:00+00:00", ["00:01:00", "00:01:00", "00:01:00"]),  # daily: hour 0
        (172800, 60, "2026-03-02T10:02:00+00:00", ["00:01:00", "00:01:00", "00:01:00"]),  # 2d: epoch multiples
    ],
)
def test_polls_fire_at_utc_multiples_of_every_plus_delay(
    every: int, delay: int, after: str, expected: list[str]
) -> None:
    assert _fires(every, delay, after) == expected
    assert datetime.fromisoformat(after).tzinfo == UTC


DEEP = '{"a":' * 100_000 + "1" + "}" * 100_000  # built by repetition: no recursion in the test itself


class DeepNames(ScriptedProvider):
    """Names once, then a reply nested 100,000 deep, as a hostile directory might send."""

    async def names(self) -> Names:
        self.names_calls += 1
        if self.names_calls == 1:
            return Names(queues={"q": "Sales"})
        return Names(queues=json.loads(DEEP))  # RecursionError, whatever json_body makes of it


@pytest.mark.asyncio
async def test_a_name_lookup_that_breaks_its_parser_never_fails_the_poll_and_keeps_the_old_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(TEN + 6 * 60)
    provider = DeepNames(SourceHealth("s", "genesys", 2), steady())
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    assert await runner.poll()
    clock.advance(3600)  # names are due again
    with caplog.at_level(logging.WARNING):
        assert await runner.poll()
    assert provider.names_calls == 2
    assert runner.health.up and runner.health.polls == {"success": 2}
    assert runner._names == Names(queues={"q": "Sales"})
    (record,) = caplog.records
    assert record.getMessage() == "name lookup failed" and record.__dict__["error"].startswith("RecursionError: ")
    await provider.aclose()


@pytest.mark.asyncio
async def test_a_vendor_error_text_is_cut_and_made_printable_before_it_is_shown() -> None:
    def hostile(start: int, end: int) -> list[Bucket]:
        raise ProviderError("bad\ud800text " + "x" * 100_000)

    runner, provider = runner_for(hostile, FakeClock(TEN + 6 * 60))
    assert not await runner.poll()
    error = runner.health.last_error
    assert error is not None and error.startswith("bad\ufffdtext x") and len(error) <= 1024
    error.encode()  # the status page encodes it: a surrogate there answered 500
    await provider.aclose()


def test_a_runner_keeps_its_store_s_changes_only_for_a_state_store(tmp_path: Path) -> None:
    provider = ScriptedProvider(SourceHealth("src", "genesys", 2), steady())
    clock = FakeClock(TEN)
    alone = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    assert alone.store.keeps_changes is False
    state = StateStore(tmp_path)
    try:
        saving = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]), state=state)
        assert saving.store.keeps_changes is True
    finally:
        state.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("refused", [False, True])
async def test_a_poll_s_buckets_are_freed_in_the_worker_thread_a_few_thousand_at_a_time(refused: bool) -> None:
    """Freed on the event loop, as the poll's frame ended, a 100,000-agent poll's buckets were 11 to 26 ms of
    the loop's own CPU; freed in one go in the worker, 16 to 33 ms with the GIL held. The provider's list is
    emptied in steps by the worker that stored it, and freed there (docs/performance.md); so is a list the
    store refused (a bucket outside the span asked for fails the poll)."""
    freed_in: list[str] = []
    sizes: list[int] = []
    steps_in: set[str] = set()

    class Watched(list[Bucket]):
        def __delitem__(self, key: object) -> None:
            sizes.append(len(self))
            steps_in.add(threading.current_thread().name)
            super().__delitem__(key)  # type: ignore[arg-type]

        def __del__(self) -> None:
            freed_in.append(threading.current_thread().name)

    def answer(start: int, end: int) -> list[Bucket]:
        buckets = steady()(start, end) * 2_000  # 8,000 buckets: more than one step
        if refused:
            buckets[-1] = Bucket(end, end + B, VOICE, {Field.HANDLE_TIME: 1.0, Field.CONTACTS_HANDLED: 1})
        return Watched(buckets)

    clock = FakeClock(TEN + 6 * 60)
    runner, provider = runner_for(answer, clock)
    assert await runner.poll() is not refused
    if not refused:
        assert runner.snapshot is not None
        assert runner.snapshot.in_seconds().windows["2h"][VOICE] == Sums(
            handle_time_seconds=480_000.0, contacts_handled=8_000
        )
        assert freed_in and freed_in[0] != threading.main_thread().name
    else:  # the failure's traceback holds the (emptied) list a while: its buckets are what weighed
        assert "not one of the 30-minute buckets asked for" in (runner.health.last_error or "")
    assert steps_in and threading.main_thread().name not in steps_in
    assert sizes == [8_000, 8_000 - LET_GO_AT_ONCE, 8_000 - 2 * LET_GO_AT_ONCE, 8_000 - 3 * LET_GO_AT_ONCE]
    await provider.aclose()
