"""The exporter against the Kore.ai simulator over real loopback HTTP: /metrics equals ground truth.

Every test runs on looptime's fake loop clock, so the account's pacing (a request a second) costs no real
time. Where the simulator must see that pacing, its clock follows the loop's (LoopClock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from aht_exporter.clock import Clock, FakeClock
from aht_exporter.model import MISSING_LABEL, Labels
from aht_exporter.providers.koreai import FIELDS, KoreAIConfig
from aht_exporter.simulator.demo import demo_workload
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.koreai import KoreAISimulator, demo_source
from aht_exporter.simulator.workload import Totals, Workload
from tests.e2e.stack import Stack as BaseStack
from tests.e2e.stack import serve_stack
from tests.helpers import T0, Series, samples

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

GAUGES = {
    "aht_handle_time_seconds": "handle_seconds",
    "aht_contacts_handled": "contacts_handled",
    "aht_talk_time_seconds": "talk_seconds",
    "aht_hold_time_seconds": "hold_seconds",
    "aht_acw_time_seconds": "acw_seconds",
    "aht_contacts_offered": "contacts_offered",
    "aht_contacts_answered": "contacts_answered",
    "aht_contacts_abandoned": "contacts_abandoned",
}
CALLVOLUME = "/agentassist/api/public/analytics/account/{}/callvolume"


class LoopClock:
    """Wall time that moves with the event loop's time: the simulator sees the provider's pacing."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._base: float | None = None

    def now(self) -> float:
        loop_now = asyncio.get_running_loop().time()
        if self._base is None:
            self._base = loop_now
        return self._start + loop_now - self._base


class Stack(BaseStack[KoreAISimulator]):
    def source(self, name: str = "demo-koreai") -> KoreAIConfig:
        source = next(s for s in self.config.sources if s.name == name)
        assert isinstance(source, KoreAIConfig)
        return source


StackFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def make_stack() -> AsyncIterator[StackFactory]:
    """Builds a simulator and an exporter polling it, with overrides; tears everything down after the test."""
    cleanups: list[Callable[[], Any]] = []

    async def build(
        *sources: dict[str, Any],
        clock: Clock | None = None,
        workload: Workload | None = None,
        **sim_options: Any,
    ) -> Stack:
        clock = clock or FakeClock(T0)
        sim = KoreAISimulator(workload or demo_workload(), clock, **sim_options)
        return await serve_stack(Stack, clock, sim, demo_source, sources, cleanups)

    yield build
    for cleanup in reversed(cleanups):
        await cleanup()


def exported(series: Series, name: str, source: str, window: str) -> dict[Labels, float]:
    out = {}
    for labels, value in samples(series, name, source=source, window=window).items():
        out[tuple((k, v) for k, v in labels if k not in ("source", "provider", "window"))] = value
    return out


def assert_matches_truth(stack: Stack, series: Series, source: KoreAIConfig, as_of: float) -> int:
    """Every gauge of every window and label set equals the simulator's ground truth, to the millisecond."""
    key = (("provider", "koreai"), ("source", source.name))
    assert series[("aht_exporter_source_up", key)] == 1
    data_end = int(series[("aht_exporter_data_end_timestamp_seconds", key)])
    assert {g.removeprefix("aht_") for g in GAUGES} == {f.value for f in FIELDS}
    checked = 0
    for window in source.windows:
        truth: dict[Labels, Totals] = stack.sim.truth(data_end - window.seconds, data_end, source.group_by, as_of)
        assert truth, f"the workload has contacts in {window}"
        for gauge, attr in GAUGES.items():
            got = exported(series, gauge, source.name, window.text)
            want = {labels: float(getattr(t, attr)) for labels, t in truth.items()}
            assert got.keys() == want.keys(), f"{source.name} {window} {gauge}: label sets differ"
            for labels in want:
                assert got[labels] == pytest.approx(want[labels], abs=1e-6), (source.name, window, gauge, labels)
                checked += 1
        aht = exported(series, "aht_seconds", source.name, window.text)
        want_aht = {lab: t.handle_seconds / t.contacts_handled for lab, t in truth.items() if t.contacts_handled}
        assert aht.keys() == want_aht.keys()
        for labels, value in want_aht.items():
            assert aht[labels] == pytest.approx(value, abs=1e-9)
    return checked


async def test_first_poll_equals_ground_truth_for_every_window_and_label_set(make_stack: StackFactory) -> None:
    stack = await make_stack()
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    assert assert_matches_truth(stack, series, stack.source(), stack.clock.now()) > 100
    media = {dict(labels)["media_type"] for labels in samples(series, "aht_contacts_handled")}
    assert media == {"voice", "chat", "message", "email", "callback"}  # rtm came back as chat


async def test_later_polls_pick_up_revised_intervals_and_the_windows_slide(make_stack: StackFactory) -> None:
    stack = await make_stack()
    clock = stack.clock
    assert isinstance(clock, FakeClock)
    await stack.exporter.poll_all()
    before = await stack.scrape()
    clock.advance(300)  # late contacts of closed intervals are now reported: their records are revised
    await stack.exporter.poll_all()
    after = await stack.scrape()
    assert_matches_truth(stack, after, stack.source(), clock.now())
    assert before != after
    clock.advance(900)
    await stack.exporter.poll_all()
    slid = await stack.scrape()
    assert_matches_truth(stack, slid, stack.source(), clock.now())
    key = (("provider", "koreai"), ("source", "demo-koreai"))
    end = "aht_exporter_data_end_timestamp_seconds"
    assert slid[(end, key)] - before[(end, key)] == 900  # 10:00 -> 10:15: one more closed 15m interval


async def test_refresh_polls_ask_only_for_the_trailing_hour(make_stack: StackFactory) -> None:
    stack = await make_stack()
    clock = stack.clock
    assert isinstance(clock, FakeClock)
    await stack.exporter.poll_all()
    clock.advance(300)
    await stack.exporter.poll_all()
    first, second = stack.sim.bodies[0], stack.sim.bodies[-1]
    assert (first["fromTimeStamp"], first["toTimeStamp"]) == ("2026-03-02T08:00:00Z", "2026-03-02T10:00:00Z")
    assert (second["fromTimeStamp"], second["toTimeStamp"]) == ("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z")


@pytest.mark.parametrize("page_size", [3, 25])
async def test_ground_truth_holds_however_many_pages_the_server_splits_the_records_into(
    make_stack: StackFactory, page_size: int
) -> None:
    # Over many pages the poll takes a while: with no reporting lag, what the intervals hold does not
    # change meanwhile, and the simulator's clock follows the paced loop.
    workload = Workload(seed=3, queues=4, agents=20, contacts_per_slot=6.0, report_lag=0.0)
    stack = await make_stack({"page_size": page_size}, clock=LoopClock(T0), workload=workload)
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    pages = len(stack.sim.bodies)
    assert pages == -(-stack.sim.bodies[-1]["skip"] // page_size) + 1 and pages > 3
    assert stack.sim.rate_limited == 0
    assert_matches_truth(stack, series, stack.source(), stack.clock.now())


async def test_several_records_of_one_interval_queue_and_source_are_summed(make_stack: StackFactory) -> None:
    stack = await make_stack(split_records=True)
    assert await stack.exporter.poll_all()
    assert_matches_truth(stack, await stack.scrape(), stack.source(), stack.clock.now())


@pytest.mark.parametrize("group_by", [["queue"], ["media_type"], []])
async def test_every_grouping_adds_up_to_the_truth(make_stack: StackFactory, group_by: list[str]) -> None:
    stack = await make_stack({"group_by": group_by})
    assert await stack.exporter.poll_all()
    assert_matches_truth(stack, await stack.scrape(), stack.source(), stack.clock.now())


async def test_queue_names_from_the_records_are_exported_as_info(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await stack.exporter.poll_all()
    series = await stack.scrape()
    names = {dict(lab)["queue"]: dict(lab)["queue_name"] for lab in samples(series, "aht_queue_info")}
    assert names == dict(demo_workload().queues)


def data_series(series: Series) -> Series:
    return {k: v for k, v in series.items() if k[0].startswith("aht_") and not k[0].startswith("aht_exporter")}


async def test_contacts_abandoned_before_a_queue_are_exported_under_the_queue_none(make_stack: StackFactory) -> None:
    """Issue 13: a record with `queueId: null` failed every queue's data. Now its contacts count, under one
    documented label value, and the other queues' figures are whole."""
    stack = await make_stack(before_queue_ms=60_000)
    assert await stack.exporter.poll_all(), stack.exporter.runners[0].health.last_error
    series = await stack.scrape()
    assert_matches_truth(stack, series, stack.source(), stack.clock.now())
    abandoned = {
        dict(labels)["window"]: value
        for labels, value in samples(series, "aht_contacts_abandoned", queue=MISSING_LABEL).items()
    }
    assert abandoned and all(v > 0 for v in abandoned.values()), "the demo workload abandons some before a queue"
    assert set(samples(series, "aht_contacts_handled", queue=MISSING_LABEL).values()) == {0.0}
    assert not samples(series, "aht_seconds", queue=MISSING_LABEL)  # nothing handled: no AHT
    assert not samples(series, "aht_queue_info", queue=MISSING_LABEL)  # and no made-up name
    assert all(dict(labels)["queue"] for labels in samples(series, "aht_contacts_offered"))  # never queue=""


@pytest.mark.parametrize("group_by", [["queue"], ["media_type"]])
async def test_records_that_leave_out_zero_counters_export_exactly_what_full_records_do(
    make_stack: StackFactory, group_by: list[str]
) -> None:
    dense = await make_stack({"group_by": group_by}, sparse_records=False, before_queue_ms=60_000)
    sparse = await make_stack({"group_by": group_by}, sparse_records=True, before_queue_ms=60_000)
    assert await dense.exporter.poll_all() and await sparse.exporter.poll_all()
    got, want = data_series(await sparse.scrape()), data_series(await dense.scrape())
    assert got == want and len(got) > 50
    assert_matches_truth(sparse, await sparse.scrape(), sparse.source(), sparse.clock.now())


async def test_two_sources_of_one_account_never_exceed_60_requests_a_minute(make_stack: StackFactory) -> None:
    workload = Workload(seed=5, queues=4, agents=20, contacts_per_slot=6.0, report_lag=0.0)
    stack = await make_stack(
        {"page_size": 2},
        {"name": "demo-koreai-queues", "page_size": 2, "group_by": ["queue"]},
        clock=LoopClock(T0),
        workload=workload,
    )
    assert await stack.exporter.poll_all()
    assert len(stack.sim.bodies) > 100  # more than a minute's worth, from both sources at once
    assert stack.sim.rate_limited == 0
    series = await stack.scrape()
    for name in ("demo-koreai", "demo-koreai-queues"):
        assert_matches_truth(stack, series, stack.source(name), stack.clock.now())


async def test_kore_rate_limit_text_in_a_200_fails_the_poll_as_rate_limited(make_stack: StackFactory) -> None:
    stack = await make_stack({"page_size": 10}, rate_limit_per_minute=3, rate_limited_status=200)
    assert not await stack.exporter.poll_all()
    series = await stack.scrape()
    key = (("provider", "koreai"), ("source", "demo-koreai"))
    assert series[("aht_exporter_source_up", key)] == 0
    assert series[("aht_exporter_rate_limited_total", key)] >= 1
    health = stack.exporter.runners[0].health
    assert health.last_error is not None and "rate limited" in health.last_error
    assert "exceeded the per-minute rate limit" in health.last_error


async def test_a_wrong_secret_fails_the_poll_with_a_401_that_names_what_to_check(make_stack: StackFactory) -> None:
    wrong = "wrong-secret-but-long-enough-0123456789"
    stack = await make_stack({"client_secret": wrong})
    assert not await stack.exporter.poll_all()
    health = stack.exporter.runners[0].health
    assert health.api_requests == {("callvolume", "401"): 2}  # one fresh JWT, then no retries
    assert health.last_error is not None
    assert "HTTP 401: 401: Invalid JWT: Signature verification failed" in health.last_error
    assert "check client_id and client_secret" in health.last_error
    assert wrong not in health.last_error
    page = await stack.client.get("/")
    assert wrong not in page.text


async def test_the_request_path_carries_the_account_and_nothing_secret(make_stack: StackFactory) -> None:
    stack = await make_stack()
    await stack.exporter.poll_all()
    account = stack.source().account_id
    assert set(stack.sim.requests) == {CALLVOLUME.format(account)}
    body = stack.sim.bodies[0]
    assert set(body) == {"orgId", "fromTimeStamp", "toTimeStamp", "skip", "limit"}
    assert stack.source().client_secret.get_secret_value() not in str(body)


# What the source's last error says, per fault the simulator injects (simulator/faults.py); None: survived.
FAULTS: dict[Fault, str | None] = {
    Fault.HTTP_503: "HTTP 503",
    Fault.RATE_LIMITED: "rate limited: 429: You've exceeded the per-minute rate limit",
    Fault.RATE_LIMITED_BARE: "rate limited",
    Fault.TRUNCATED: "callvolume: response is not JSON",
    Fault.NOT_JSON: "callvolume: response is not JSON",
    # The interval is essential; a counter left out would be zero (issue 13). Record 0 may be a sparse one
    # without a handle time (nothing handled), so the mistyped one is named at its own index.
    Fault.MISSING_FIELD: "Object missing required field `intervalStartTimeStamp` - at `$.CallVolumeUpdate[0]`",
    Fault.WRONG_TYPE: "].conversationHandleTime`",
    Fault.ERROR_IN_200: "callvolume: answered 200 with an error: 500: Analytics is temporarily unavailable",
    Fault.UNAUTHORIZED: None,  # a fresh JWT, and the replay succeeds
    Fault.EXTRA_FIELDS: None,  # new fields must not break anything
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_each_fault_fails_the_poll_with_a_clear_error_or_is_survived(
    make_stack: StackFactory, fault: Fault
) -> None:
    stack = await make_stack()
    stack.sim.faults.inject(fault)
    ok = await stack.exporter.poll_all()
    health = stack.exporter.runners[0].health
    expected = FAULTS[fault]
    if expected is None:
        assert ok, health.last_error
        assert_matches_truth(stack, await stack.scrape(), stack.source(), stack.clock.now())
        return
    assert not ok
    assert health.last_error is not None and expected in health.last_error
    stack.sim.faults.clear()
    clock = stack.clock
    assert isinstance(clock, FakeClock)
    clock.advance(300)
    assert await stack.exporter.poll_all()  # and the next poll recovers
    assert_matches_truth(stack, await stack.scrape(), stack.source(), clock.now())
