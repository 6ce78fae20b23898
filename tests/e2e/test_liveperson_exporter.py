"""The exporter against the LivePerson simulator over real loopback HTTP: /metrics equals ground truth."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from aht_exporter.clock import FakeClock, SystemClock
from aht_exporter.config import Config
from aht_exporter.model import Labels
from aht_exporter.probe import run_probe
from aht_exporter.providers.liveperson import LivePersonConfig
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.demo import demo_workload
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.liveperson import (
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    DEMO_TOKEN,
    DEMO_TOKEN_SECRET,
    LivePersonSimulator,
    demo_source,
)
from aht_exporter.simulator.workload import Totals, total_by_group
from tests.helpers import T0, Series, parse_exposition, samples

GAUGES = {"aht_handle_time_seconds": "handle_seconds", "aht_contacts_handled": "contacts_handled"}
ABSENT = (
    "aht_talk_time_seconds",
    "aht_hold_time_seconds",
    "aht_acw_time_seconds",
    "aht_contacts_offered",
    "aht_contacts_answered",
    "aht_contacts_abandoned",
)


def sources(url: str, sim: LivePersonSimulator) -> list[dict[str, Any]]:
    """The demo source, and one of each other way in: OAuth 1.0a, the Domain API, each grouping, filters."""
    two_skills = [skill for skill, _ in sim.skills[:2]]
    return [
        demo_source(url),
        {
            "name": "lp-oauth1-by-skill",
            "provider": "liveperson",
            "account_id": "12345678",
            "csds_url": url,  # both domains looked up; a loopback answer keeps the Domain API's http scheme
            "auth": "oauth1",
            "consumer_key": DEMO_CONSUMER_KEY,
            "consumer_secret": DEMO_CONSUMER_SECRET,
            "token": DEMO_TOKEN,
            "token_secret": DEMO_TOKEN_SECRET,
            "group_by": ["queue"],
            "windows": ["30m", "2h"],
        },
        {
            "name": "lp-lookup-by-agent",
            "provider": "liveperson",
            "account_id": "12345678",
            "csds_url": url,
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "group_by": ["agent"],
            "windows": ["15m", "1h"],
        },
        {
            "name": "lp-account",
            "provider": "liveperson",
            "account_id": "12345678",
            "base_url": url,
            "sentinel_url": url,
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "group_by": [],
            "windows": ["5m", "23h"],
        },
        {
            "name": "lp-two-skills-by-agent",
            "provider": "liveperson",
            "account_id": "12345678",
            "base_url": url,
            "sentinel_url": url,
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "skills": two_skills,
            "group_by": ["agent"],
            "windows": ["1h"],
        },
    ]


@dataclass
class Stack:
    clock: FakeClock
    sim: LivePersonSimulator
    config: Config
    exporter: Exporter
    client: httpx.AsyncClient
    waits: list[float]

    async def scrape(self) -> Series:
        await self.exporter.rendered_now()
        r = await self.client.get("/metrics")
        assert r.status_code == 200
        return parse_exposition(r.text)


async def stack_for(
    raw_sources: Callable[[str, LivePersonSimulator], list[dict[str, Any]]], **sim_options: Any
) -> AsyncIterator[Stack]:
    clock = FakeClock(T0)
    sim = LivePersonSimulator(demo_workload(), clock, **sim_options)
    url = await sim.start()
    config = build_config({"sources": raw_sources(url, sim)}, "<test>", {})
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        # Never waits: records the backoff, and lets a held simulator request finish meanwhile.
        waits.append(seconds)
        sim.resume()
        for _ in range(100):
            await asyncio.sleep(0)

    exporter = Exporter(config, clock=clock, sleep=sleep)
    runner: web.AppRunner
    runner, bound = await start_server(exporter, "127.0.0.1:0")
    async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
        yield Stack(clock, sim, config, exporter, client, waits)
    await runner.cleanup()
    await exporter.aclose()
    await sim.stop()


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[Stack]:
    async for s in stack_for(sources):
        yield s


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run (no wall-clock wait) until `condition` holds."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def exported(series: Series, name: str, source: str, window: str) -> dict[Labels, float]:
    out = {}
    for labels, value in samples(series, name, source=source, window=window).items():
        assert dict(labels)["provider"] == "liveperson"
        out[tuple((k, v) for k, v in labels if k not in ("source", "provider", "window"))] = value
    return out


def truth_for(stack: Stack, source: LivePersonConfig, start: int, end: int, as_of: float) -> dict[Labels, Totals]:
    if source.skills == "all" and source.agents == "all":
        return stack.sim.truth(start, end, source.group_by, as_of)
    chats = [
        c
        for c in stack.sim.chats(start, end, as_of)
        if (source.skills == "all" or c.queue_id in source.skills)
        and (source.agents == "all" or c.agent_id in source.agents)
    ]
    return total_by_group(chats, [*source.group_by, "media_type"])


def assert_matches_truth(stack: Stack, series: Series, source: LivePersonConfig, as_of: float) -> int:
    """Every gauge of every window and label set equals the simulator's ground truth."""
    key = ("aht_exporter_data_end_timestamp_seconds", (("provider", "liveperson"), ("source", source.name)))
    data_end = int(series[key])
    checked = 0
    for window in source.windows:
        truth = truth_for(stack, source, data_end - window.seconds, data_end, as_of)
        assert truth, f"the workload has chats in {source.name} {window}"
        for gauge, attr in GAUGES.items():
            got = exported(series, gauge, source.name, window.text)
            want = {labels: float(getattr(t, attr)) for labels, t in truth.items()}
            assert got.keys() == want.keys(), f"{source.name} {window} {gauge}: label sets differ"
            for labels in want:
                assert got[labels] == pytest.approx(want[labels], abs=1e-9), (source.name, window, gauge, labels)
                checked += 1
        for gauge in ABSENT:
            assert exported(series, gauge, source.name, window.text) == {}, f"LivePerson gives no {gauge}"
        aht = exported(series, "aht_seconds", source.name, window.text)
        want_aht = {lab: t.handle_seconds / t.contacts_handled for lab, t in truth.items() if t.contacts_handled}
        assert aht.keys() == want_aht.keys()
        for labels, value in want_aht.items():
            assert aht[labels] == pytest.approx(value, abs=1e-9)
    return checked


def lp_sources(stack: Stack) -> list[LivePersonConfig]:
    out = []
    for source in stack.config.sources:
        assert isinstance(source, LivePersonConfig)
        out.append(source)
    return out


@pytest.mark.asyncio
async def test_first_poll_equals_ground_truth_for_every_window_and_label_set(stack: Stack) -> None:
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    for source in lp_sources(stack):
        assert series[("aht_exporter_source_up", (("provider", "liveperson"), ("source", source.name)))] == 1
        # both gauges of at least one label set in every window; many more where grouped
        assert assert_matches_truth(stack, series, source, stack.clock.now()) >= 2 * len(source.windows)
    demo = exported(series, "aht_contacts_handled", "demo-liveperson", "12h")
    assert all(dict(labels)["media_type"] == "chat" and {"queue", "agent"} <= dict(labels).keys() for labels in demo)


@pytest.mark.asyncio
async def test_later_polls_pick_up_late_chats_and_slide_the_windows(stack: Stack) -> None:
    await stack.exporter.poll_all()
    before = await stack.scrape()
    stack.clock.advance(300)  # chats that closed before the boundary but were reported late now show up
    assert await stack.exporter.poll_all()
    after = await stack.scrape()
    for source in lp_sources(stack):
        assert_matches_truth(stack, after, source, stack.clock.now())
    assert before != after
    stack.clock.advance(3600)
    assert await stack.exporter.poll_all()
    slid = await stack.scrape()
    for source in lp_sources(stack):
        assert_matches_truth(stack, slid, source, stack.clock.now())


@pytest.mark.asyncio
async def test_an_in_progress_interval_never_leaks_into_a_window(stack: Stack) -> None:
    stack.clock.set(T0 - 7 * 60 + 9 * 60 + 59)  # 10:09:59: the 10:05-10:10 interval is nearly full
    await stack.exporter.poll_all()
    series = await stack.scrape()
    now = stack.clock.now()
    data_end = T0 - 7 * 60 + 300  # 10:05
    assert stack.sim.truth(data_end, now, []), "chats closed in the in-progress interval"
    for source in lp_sources(stack):
        assert_matches_truth(stack, series, source, now)
    five = exported(series, "aht_contacts_handled", "lp-account", "5m")
    assert list(five.values()) == [
        stack.sim.truth(data_end - 300, data_end, [], now)[(("media_type", "chat"),)].contacts_handled
    ]


class BehindClock:
    """The vendor's clock, `lag` seconds behind ours."""

    def __init__(self, ours: FakeClock, lag: float) -> None:
        self.ours, self.lag = ours, lag

    def now(self) -> float:
        return self.ours.now() - self.lag


@pytest.mark.asyncio
async def test_a_vendor_clock_behind_ours_fails_the_poll_instead_of_leaking_a_filling_interval() -> None:
    clock = FakeClock(T0 - 7 * 60 + 300 + 0.2)  # 10:05:00.2, and `delay: 0s`
    sim = LivePersonSimulator(demo_workload(), BehindClock(clock, 40))  # it is 10:04:20 at LivePerson
    url = await sim.start()
    source = {**demo_source(url), "name": "lp", "group_by": [], "delay": "0s", "windows": ["5m"]}
    exporter = Exporter(build_config({"sources": [source]}, "<test>", {}), clock=clock)
    try:
        assert not await exporter.poll_all()
        (runner,) = exporter.runners
        assert "the newest interval, still filling, ends at 2026-03-02T10:05:00.000Z" in (
            runner.health.last_error or ""
        )
        assert runner.snapshot is None  # nothing half-filled was ever exported
        clock.advance(60)  # LivePerson's 10:05 interval has closed; ours reaches 10:06
        assert await exporter.poll_all()
        assert runner.snapshot is not None and runner.snapshot.data_end == T0 - 7 * 60 + 300
    finally:
        await exporter.aclose()
        await sim.stop()


@pytest.mark.asyncio
async def test_refresh_polls_send_one_request_per_source_and_cache_tokens_and_domains(stack: Stack) -> None:
    sim = stack.sim
    await stack.exporter.poll_all()
    assert sim.requests[sim.engactivity_path] == 5
    stack.clock.advance(300)
    await stack.exporter.poll_all()
    assert sim.requests[sim.engactivity_path] == 10
    assert sim.requests[sim.token_path] == 4  # one per OAuth 2.0 source, cached
    assert sim.requests[sim.csds_path("leDataReporting")] == 2  # the two sources without base_url, once
    assert sim.requests[sim.csds_path("sentinel")] == 1  # the one OAuth 2.0 source without sentinel_url


@pytest.mark.asyncio
async def test_an_expired_token_is_replaced_without_failing_the_poll(stack: Stack) -> None:
    await stack.exporter.poll_all()
    stack.sim.expire_tokens()
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()
    assert stack.sim.requests[stack.sim.token_path] == 8  # each OAuth 2.0 source: a 401, one new token


@pytest_asyncio.fixture
async def one_slot() -> AsyncIterator[Stack]:
    async for s in stack_for(lambda url, _: [demo_source(url)], max_concurrent=1):
        yield s


@pytest.mark.asyncio
async def test_a_429_from_the_concurrency_limit_backs_off_and_succeeds(one_slot: Stack) -> None:
    stack, sim = one_slot, one_slot.sim
    await stack.exporter.poll_all()  # gets a token
    sim.pause()
    async with httpx.AsyncClient(base_url=sim.base_url) as other:
        # Another client of the same account holds the only slot until the exporter's backoff.
        token = await other.post(
            sim.token_path,
            params={"grant_type": "client_credentials"},
            data={"client_id": "demo-client", "client_secret": "demo-secret"},
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        held = asyncio.create_task(other.get(f"{sim.engactivity_path}?timeframe=5&v=1", headers=headers))
        await until(lambda: sim.in_flight == 1)
        stack.clock.advance(300)
        # A safety net, not a wait: if the backoff never released the slot, fail instead of hanging.
        async with asyncio.timeout(60):
            assert await stack.exporter.poll_all()
            assert (await held).status_code == 200
    assert sim.rate_limited == 1
    assert len(stack.waits) == 1 and 1.0 <= stack.waits[0] <= 2.0
    series = await stack.scrape()
    key = (("provider", "liveperson"), ("source", "demo-liveperson"))
    assert series[("aht_exporter_rate_limited_total", key)] == 1
    assert_matches_truth(stack, series, lp_sources(stack)[0], stack.clock.now())


@pytest.mark.asyncio
async def test_ids_are_liveperson_longs_and_filters_take_them(stack: Stack) -> None:
    await stack.exporter.poll_all()
    series = await stack.scrape()
    queues = {dict(labels)["queue"] for labels in exported(series, "aht_contacts_handled", "demo-liveperson", "12h")}
    assert "-1" in queues  # LivePerson's "no skill", a series like any other skill's
    assert all(q.isdigit() for q in queues - {"-1"})
    assert queues - {"-1"} <= {skill for skill, _ in stack.sim.skills}
    filtered = lp_sources(stack)[-1]
    assert filtered.skills != "all" and len(filtered.skills) == 2
    assert_matches_truth(stack, series, filtered, stack.clock.now())


@pytest_asyncio.fixture
async def demo() -> AsyncIterator[Stack]:
    """Only the demo source, as `--demo` runs it."""
    async for s in stack_for(lambda url, _: [demo_source(url)]):
        yield s


@pytest.mark.parametrize("fault", [Fault.EXTRA_FIELDS, Fault.UNAUTHORIZED])
@pytest.mark.asyncio
async def test_faults_that_must_be_survived_are(demo: Stack, fault: Fault) -> None:
    stack = demo
    await stack.exporter.poll_all()
    stack.sim.faults.inject(fault)
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()
    series = await stack.scrape()
    assert_matches_truth(stack, series, lp_sources(stack)[0], stack.clock.now())
    assert stack.sim.faults.injected[fault] >= 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.MISSING_FIELD, "engactivity response: Object missing required field `totalHandlingTime` - at `$."),
        (Fault.WRONG_TYPE, "engactivity response: Expected `int | float`, got `str` - at `$.metricsByIntervals["),
        (Fault.ERROR_IN_200, "answered 200 with an error: Engagement Activity is temporarily unavailable"),
        (Fault.NOT_JSON, "engactivity: response is not JSON"),
        (Fault.RATE_LIMITED_BARE, "rate limited: Too many concurrent requests"),
    ],
)
@pytest.mark.asyncio
async def test_faults_fail_the_poll_with_a_clear_error_and_recover(demo: Stack, fault: Fault, error: str) -> None:
    stack = demo
    await stack.exporter.poll_all()
    stack.sim.faults.inject(fault)
    stack.clock.advance(300)
    assert not await stack.exporter.poll_all()
    for runner in stack.exporter.runners:
        assert runner.health.last_error is not None and error in runner.health.last_error, runner.health.last_error
    stack.sim.faults.clear()
    stack.clock.advance(300)
    assert await stack.exporter.poll_all()
    if fault is Fault.RATE_LIMITED_BARE:
        assert stack.waits and min(stack.waits) >= 1.0


# --- OAuth 2.0: which sentinel token engactivity takes (issue 13) ---------------------------------------------

UP = (("provider", "liveperson"), ("source", "demo-liveperson"))
REFUSED_V2 = (
    "GET /operations/api/account/12345678/engactivity: HTTP 401: Unauthorized: this API does not accept tokens of "
    "sentinel API 2.0: engactivity refused the OAuth 2.0 token from sentinel (token_version v2): try "
    "token_version: v2-query or v1, or OAuth 1.0 keys (auth: oauth1) if your account still has them; see "
    "docs/providers/liveperson.md"
)


@pytest.mark.asyncio
async def test_the_v2_default_asks_sentinel_api_v2_on_its_path_and_a_v2_only_engactivity_takes_it() -> None:
    async for stack in stack_for(lambda url, _: [demo_source(url)], accepted_token_versions=("2.0",)):
        sim = stack.sim
        assert await stack.exporter.poll_all()
        assert sim.requests[sim.token_path_for("v2")] == 1
        assert sim.requests[sim.token_path_for("v1")] == 0
        assert sim.tokens_by_version == {"2.0": 1} and sim.refused_tokens == 0
        series = await stack.scrape()
        assert series[("aht_exporter_source_up", UP)] == 1
        assert_matches_truth(stack, series, lp_sources(stack)[0], stack.clock.now())


@pytest.mark.asyncio
async def test_engactivity_refusing_the_v2_token_fails_the_poll_in_one_line_saying_what_to_try() -> None:
    async for stack in stack_for(lambda url, _: [demo_source(url)], accepted_token_versions=("1.0",)):
        sim = stack.sim
        (runner,) = stack.exporter.runners
        assert not await stack.exporter.poll_all()
        assert runner.health.last_error == f"data request to {httpx.URL(sim.base_url).netloc.decode()} {REFUSED_V2}"
        assert sim.tokens_by_version == {"2.0": 2}  # the token, and the one new token the 401 earns
        stack.clock.advance(300)
        assert not await stack.exporter.poll_all()
        assert sim.tokens_by_version == {"2.0": 3}  # one more a poll, never a loop
        assert sim.refused_tokens == 4
        series = await stack.scrape()
        assert series[("aht_exporter_source_up", UP)] == 0
        assert series[("aht_exporter_tokens_issued_total", UP)] == 3  # what an operator sees of it


@pytest.mark.parametrize("token_version", ["v1", "v2-query"])
@pytest.mark.asyncio
async def test_each_selectable_token_version_reaches_engactivity(token_version: str) -> None:
    version = {"v1": "1.0", "v2-query": "2.0"}[token_version]

    def sources(url: str, _: LivePersonSimulator) -> list[dict[str, Any]]:
        return [{**demo_source(url), "token_version": token_version}]

    async for stack in stack_for(sources, accepted_token_versions=(version,)):
        sim = stack.sim
        assert await stack.exporter.poll_all()
        assert sim.requests[sim.token_path_for(token_version)] == 1
        assert sim.tokens_by_version == {version: 1}
        assert_matches_truth(stack, await stack.scrape(), lp_sources(stack)[0], stack.clock.now())


@pytest.mark.asyncio
async def test_the_probe_reports_the_refusal_and_its_hint_leads_to_a_working_token_version() -> None:
    """The probe's hint (`token_version` or `auth: oauth1`) must stay true: following it, the source is sane."""
    clock = SystemClock()  # as a vendor's: the probe compares our clock with the `Date` header
    sim = LivePersonSimulator(demo_workload(), clock, accepted_token_versions=("1.0",))
    url = await sim.start()
    try:
        reports = {}
        for token_version in ("v2", "v1"):
            source = {**demo_source(url), "token_version": token_version}
            out = io.StringIO()
            rc = await run_probe(build_config({"sources": [source]}, "<probe>", {}), out, clock=clock)
            reports[token_version] = (rc, out.getvalue())
    finally:
        await sim.stop()
    rc, report = reports["v2"]
    assert rc == 1
    assert "auth: REFUSED (GET /operations/api/account/12345678/engactivity 401)" in report
    assert "engactivity refused the OAuth 2.0 token from sentinel (token_version v2): try token_version: v2-query" in (
        report
    )
    assert (
        "warning: sentinel issued an OAuth 2.0 token but engactivity refused it: try another token version "
        "(`token_version`: v2, v2-query or v1) or OAuth 1.0 keys (`auth: oauth1`)"
    ) in report
    assert "request: POST /sentinel/api/v2/account/12345678/app/token -> 200" in report
    rc, report = reports["v1"]
    assert rc == 0, report
    assert "request: POST /sentinel/api/account/12345678/app/token -> 200" in report
    assert "verdict: looks sane" in report
