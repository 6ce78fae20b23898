"""The exporter against the Ozonetel simulator over real loopback HTTP, on a fast-forwarded event loop.

The simulator enforces Ozonetel's 50 requests a minute on the loop's clock, as the exporter paces on
it: looptime makes the minutes pass in no wall time, and `over_limit` says whether we ever overstepped.
Every exported AHT must equal what the simulator printed (`truth`).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from aht_exporter.clock import FakeClock
from aht_exporter.model import Labels
from aht_exporter.registry import build_config
from aht_exporter.scheduler import Exporter
from aht_exporter.server import start_server
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.ozonetel import AHT_PATH, TOKEN_PATH, OzonetelSimulator
from aht_exporter.simulator.workload import Workload
from tests.e2e.stack import Stack as ServedStack
from tests.helpers import T0, RecordingSleep, Series, samples

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

USER, KEY = "acme_outbound", "e2e-ozonetel-key"
SOURCE = (("provider", "ozonetel"), ("source", "oz"))


def workload(agents: int = 12, queues: int = 3, contacts_per_slot: float = 60) -> Workload:
    return Workload(
        seed=11, queues=queues, agents=agents, media_types=("voice", "chat"), contacts_per_slot=contacts_per_slot
    )


@dataclass
class Stack(ServedStack[OzonetelSimulator]):
    """The shared e2e stack (tests/e2e/stack.py), on a clock the tests move, with Ozonetel's own checks. Built
    by `ozonetel_stack`, not `serve_stack`: its tests pass the exporter a sleep and defaults."""

    clock: FakeClock

    async def next_poll(self, minutes: int = 5) -> bool:
        """Wait for the next poll (loop time and the wall clock move together) and run it."""
        await asyncio.sleep(minutes * 60)
        self.clock.advance(minutes * 60)
        return await self.exporter.poll_all()

    def exported(self, series: Series) -> dict[Labels, float]:
        out = {}
        for labels, value in samples(series, "aht_seconds", source="oz").items():
            assert dict(labels)["window"] == "2h" and dict(labels)["media_type"] == "voice"
            out[tuple((k, v) for k, v in labels if k not in ("source", "provider", "window"))] = value
        return out

    def truth(self, agents: list[str], campaigns: list[str]) -> dict[Labels, float]:
        """What the simulator prints now for each target, by exported labels; no call: absent."""
        want: dict[Labels, float] = {}
        for a in agents:
            if (seconds := self.sim.truth_agent(a)) is not None:
                want[(("agent", a), ("media_type", "voice"))] = float(seconds)
        for c in campaigns:
            if (seconds := self.sim.truth_campaign(c)) is not None:
                want[(("media_type", "voice"), ("queue", self.sim.campaign_id(c)))] = float(seconds)
        return want


@asynccontextmanager
async def ozonetel_stack(
    work: Workload,
    *,
    sim: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    sleep: Any = asyncio.sleep,
) -> AsyncIterator[Stack]:
    clock = FakeClock(T0)
    simulator = OzonetelSimulator(work, clock, user_name=USER, api_key=KEY, **(sim or {}))
    url = await simulator.start()
    raw: dict[str, Any] = {
        "name": "oz",
        "provider": "ozonetel",
        "base_url": url,
        "user_name": USER,
        "api_key": KEY,
        "agents": simulator.agent_ids,
        "campaigns": simulator.campaign_names,
        **(source or {}),
    }
    config = build_config({"defaults": defaults or {}, "sources": [raw]}, "<e2e>", {})
    exporter = Exporter(config, clock=clock, sleep=sleep)
    runner: web.AppRunner | None = None
    try:
        runner, bound = await start_server(exporter, "127.0.0.1:0")
        async with httpx.AsyncClient(base_url=f"http://{bound[0]}") as client:
            yield Stack(clock, simulator, config, exporter, client)
    finally:
        if runner is not None:
            await runner.cleanup()
        await exporter.aclose()
        await simulator.stop()


def most_in_any_minute(times: Iterable[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 60) - i for i, t in enumerate(ordered)), default=0)


async def test_200_targets_stay_within_50_a_minute_and_export_the_simulators_truth() -> None:
    async with ozonetel_stack(workload(agents=180, queues=20)) as stack:
        sim = stack.sim
        agents, campaigns = sim.agent_ids, sim.campaign_names
        assert len(agents) + len(campaigns) == 200
        loop = asyncio.get_running_loop()

        started = loop.time()
        assert await stack.exporter.poll_all()
        assert loop.time() - started < 285  # 201 requests, 1.22 s apart: about four minutes
        series = await stack.scrape()

        assert sim.over_limit == 0
        assert most_in_any_minute(sim.request_times) <= 50
        assert sim.requests == {TOKEN_PATH: 1, AHT_PATH: 200}
        want = stack.truth(agents, campaigns)
        assert 150 < len(want) < 200  # most targets made calls, some made none (absent, not 0)
        assert stack.exported(series) == want
        assert series[("aht_exporter_source_up", SOURCE)] == 1
        assert series[("aht_exporter_rate_limited_total", SOURCE)] == 0
        assert samples(series, "aht_exporter_api_requests_total", source="oz") == {
            (("endpoint", "token"), ("provider", "ozonetel"), ("source", "oz"), ("status", "200")): 1.0,
            (("endpoint", "aht"), ("provider", "ozonetel"), ("source", "oz"), ("status", "200")): 200.0,
        }
        names = {dict(k)["agent"]: dict(k)["agent_name"] for k in samples(series, "aht_agent_info", source="oz")}
        workload_names = dict(zip(agents, (n for _, n in sim._workload.agents), strict=True))
        assert names == {a: workload_names[a] for a in agents if (("agent", a), ("media_type", "voice")) in want}
        queues = {dict(k)["queue"]: dict(k)["queue_name"] for k in samples(series, "aht_queue_info", source="oz")}
        assert set(queues.values()) <= set(campaigns) and queues

        # Five minutes on: the window has slid, the values follow, the token is reused.
        assert await stack.next_poll()
        assert stack.exported(await stack.scrape()) == stack.truth(agents, campaigns)
        assert sim.over_limit == 0 and most_in_any_minute(sim.request_times) <= 50
        assert sim.requests == {TOKEN_PATH: 1, AHT_PATH: 400}


async def test_an_hour_of_polls_renews_the_token_once_and_never_oversteps() -> None:
    async with ozonetel_stack(workload()) as stack:
        for _ in range(14):  # 0 .. 65 minutes
            assert await stack.exporter.poll_all()
            assert stack.exported(await stack.scrape()) == stack.truth(stack.sim.agent_ids, stack.sim.campaign_names)
            await asyncio.sleep(300)
            stack.clock.advance(300)
        assert stack.sim.tokens_issued == 2  # at 0 and at 55 minutes
        assert stack.sim.over_limit == 0


async def test_more_targets_than_a_poll_serves_are_all_exported_after_two_polls() -> None:
    work = workload(agents=280, queues=20, contacts_per_slot=20)
    async with ozonetel_stack(work) as stack:
        assert await stack.exporter.poll_all()
        first = stack.exported(await stack.scrape())
        assert await stack.exporter.poll_all()  # at once: the pacer, not the clock, spaces the requests
        both = stack.exported(await stack.scrape())
        assert stack.sim.over_limit == 0 and most_in_any_minute(stack.sim.request_times) <= 50
        assert stack.sim.requests[AHT_PATH] == 2 * 233
        assert len(first) < len(both) == len(stack.truth(stack.sim.agent_ids, stack.sim.campaign_names))


async def test_an_unknown_agent_is_named_in_a_warning_and_the_others_are_exported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = {"agents": ["agent001", "agent002", "agent003"], "campaigns": ["Sales"]}
    async with ozonetel_stack(workload(), sim={"agents": ["agent001", "agent002"]}, source=source) as stack:
        with caplog.at_level(logging.WARNING):
            assert await stack.exporter.poll_all()
        series = await stack.scrape()
        assert set(stack.exported(series)) == set(stack.truth(["agent001", "agent002"], ["Sales"]))
        (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warning.getMessage() == "invalid target: its series is dropped"
        assert warning.__dict__["target"] == "agent 'agent003'" and warning.__dict__["source"] == "oz"


async def test_a_server_that_refuses_post_is_asked_with_get_from_then_on() -> None:
    async with ozonetel_stack(workload(), sim={"methods": ("GET",)}) as stack:
        assert await stack.exporter.poll_all()
        assert await stack.next_poll()
        want = stack.truth(stack.sim.agent_ids, stack.sim.campaign_names)
        assert stack.exported(await stack.scrape()) == want
        targets = len(stack.sim.agent_ids) + len(stack.sim.campaign_names)
        assert stack.sim.requests[AHT_PATH] == 2 * targets + 1  # one 405, then GET every time


NO_CALLS_FORMS = ["no data found", "00:00:00", "empty", "null"]  # the simulator's `no_calls`


@pytest.mark.parametrize("no_calls", NO_CALLS_FORMS)
async def test_a_target_whose_calls_stop_loses_its_series_and_the_source_stays_up(
    no_calls: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with ozonetel_stack(workload(contacts_per_slot=1), sim={"no_calls": no_calls}) as stack:
        sim = stack.sim
        assert await stack.exporter.poll_all()
        before = stack.exported(await stack.scrape())
        assert before == stack.truth(sim.agent_ids, sim.campaign_names)
        with caplog.at_level(logging.WARNING):
            assert await stack.next_poll(minutes=180)  # a new two hours: some agents made no call in it
        series = await stack.scrape()
        after = stack.exported(series)
        assert after == stack.truth(sim.agent_ids, sim.campaign_names)
        stopped = [labels for labels in before if "agent" in dict(labels) and labels not in after]
        assert stopped  # had a value, now "no calls": absent, not kept
        assert series[("aht_exporter_source_up", SOURCE)] == 1
        assert [r.getMessage() for r in caplog.records if getattr(r, "source", None) == "oz"] == []


@pytest.mark.parametrize("no_calls", NO_CALLS_FORMS)
async def test_a_quiet_night_without_a_call_is_a_successful_poll_with_no_series(no_calls: str) -> None:
    quiet = Workload(seed=11, queues=3, agents=12, media_types=("chat",))  # no voice call, ever
    async with ozonetel_stack(quiet, sim={"no_calls": no_calls}) as stack:
        runner = stack.exporter.runners[0]
        assert await stack.exporter.poll_all()
        for _ in range(2):
            assert await stack.next_poll()
        series = await stack.scrape()
        assert stack.exported(series) == {}
        assert series[("aht_exporter_source_up", SOURCE)] == 1
        assert runner.health.last_error is None and runner.health.polls == {"success": 3}
        assert stack.sim.requests[AHT_PATH] == 3 * 15


@pytest.mark.parametrize(("accepted", "configured"), [("GET", "POST"), ("POST", "GET")])
async def test_a_server_answering_401_to_one_method_is_asked_with_the_other_and_one_token_serves_every_poll(
    accepted: str, configured: str
) -> None:
    sim_options = {"methods": (accepted,), "refuse_method_with": 401}
    async with ozonetel_stack(workload(), sim=sim_options, source={"method": configured}) as stack:
        sim, runner = stack.sim, stack.exporter.runners[0]
        targets = len(sim.agent_ids) + len(sim.campaign_names)
        assert await stack.exporter.poll_all()
        assert sim.tokens_issued == 1 and runner.health.tokens_issued == 1
        assert sim.requests_by_method == {
            ("POST", TOKEN_PATH): 1,
            (configured, AHT_PATH): 1,  # refused once, then never asked again
            (accepted, AHT_PATH): targets,
        }
        for _ in range(4):  # 20 more minutes: straight to the method that works, no new token
            assert await stack.next_poll()
            assert stack.exported(await stack.scrape()) == stack.truth(sim.agent_ids, sim.campaign_names)
        assert sim.tokens_issued == 1 and runner.health.tokens_issued == 1
        assert sim.requests_by_method == {
            ("POST", TOKEN_PATH): 1,
            (configured, AHT_PATH): 1,
            (accepted, AHT_PATH): 5 * targets,
        }
        series = await stack.scrape()
        assert series[("aht_exporter_source_up", SOURCE)] == 1
        assert series[("aht_exporter_tokens_issued_total", SOURCE)] == 1


async def test_a_server_refusing_both_methods_fails_in_one_line_and_spends_one_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ozonetel_stack(workload(), sim={"methods": (), "refuse_method_with": 401}) as stack:
        runner = stack.exporter.runners[0]
        with caplog.at_level(logging.WARNING):
            assert not await stack.exporter.poll_all()
        assert [r.getMessage() for r in caplog.records if getattr(r, "source", None) == "oz"] == ["poll failed"]
        for _ in range(6):  # half an hour of failed polls
            assert not await stack.next_poll()
        error = runner.health.last_error or ""
        host = httpx.URL(stack.sim.base_url).netloc.decode()
        assert error.startswith(
            f"data request to {host} /ca_apis/aht for agent 'agent001': POST and GET refused a token Ozonetel issued"
        )
        assert '"API Authentication" TOKEN_AUTH' in error and "another client" not in error
        assert stack.sim.tokens_issued == 1 and runner.health.tokens_issued == 1
        assert stack.sim.requests[AHT_PATH] == 7 * 2  # the first target, by each method, each poll


async def test_a_basic_auth_account_is_polled_without_a_token() -> None:
    async with ozonetel_stack(workload(), sim={"auth": "basic"}, source={"auth": "basic"}) as stack:
        assert await stack.exporter.poll_all()
        assert stack.exported(await stack.scrape()) == stack.truth(stack.sim.agent_ids, stack.sim.campaign_names)
        assert stack.sim.requests[TOKEN_PATH] == 0


async def test_a_neighbour_eating_the_budget_is_counted_and_survived(caplog: pytest.LogCaptureFixture) -> None:
    async with ozonetel_stack(workload()) as stack:
        sim = stack.sim
        # Another client of the same account has used 46 of this minute's 50 requests.
        async with httpx.AsyncClient(base_url=sim.base_url) as neighbour:
            for _ in range(46):
                await neighbour.post(TOKEN_PATH, json={"userName": "x"}, headers={"apiKey": "y"})
        with caplog.at_level(logging.WARNING):
            assert await stack.exporter.poll_all()  # a token and three targets, then "max limit exceeded"
        series = await stack.scrape()
        assert series[("aht_exporter_rate_limited_total", SOURCE)] == 1
        assert series[("aht_exporter_source_up", SOURCE)] == 1
        assert len(stack.exported(series)) <= 3
        assert [r.getMessage() for r in caplog.records if getattr(r, "source", None) == "oz"] == [
            "rate limited: paused for 60s, the other targets wait"
        ]
        assert await stack.next_poll()  # the rest first, then the others
        assert stack.exported(await stack.scrape()) == stack.truth(sim.agent_ids, sim.campaign_names)
        assert sim.over_limit == 1


async def test_a_refusal_before_anything_was_served_fails_the_poll_until_the_next() -> None:
    async with ozonetel_stack(workload()) as stack:
        async with httpx.AsyncClient(base_url=stack.sim.base_url) as neighbour:
            for _ in range(50):
                await neighbour.post(TOKEN_PATH, json={"userName": "x"}, headers={"apiKey": "y"})
        assert not await stack.exporter.poll_all()
        runner = stack.exporter.runners[0]
        assert runner.health.last_error == (
            f"token request to {httpx.URL(stack.sim.base_url).netloc.decode()} POST /ca_apis/CAToken/generateToken: "
            "max limit exceeded (paused for 60s)"
        )
        assert runner.health.rate_limited == 1
        assert await stack.next_poll()
        assert stack.exported(await stack.scrape()) == stack.truth(stack.sim.agent_ids, stack.sim.campaign_names)


# What the last error says, per fault (as in tests/e2e/test_fault_matrix.py); None: survived.
FAULTS: dict[Fault, str | None] = {
    Fault.TIMEOUT: "timed out",
    Fault.RESET: "Error",
    Fault.HTTP_500: "HTTP 500",
    Fault.HTTP_502: "HTTP 502",
    Fault.HTTP_503: "HTTP 503",
    Fault.RATE_LIMITED: "rate limited: max limit exceeded",
    Fault.RATE_LIMITED_BARE: "rate limited: max limit exceeded",
    Fault.UNAUTHORIZED: None,  # Token Expired with a 401: a new token, and the replay succeeds
    Fault.TRUNCATED: "not JSON",
    Fault.NOT_JSON: "not JSON",
    Fault.MISSING_FIELD: "Object missing required field `AHT` - at `$.message`",
    Fault.WRONG_TYPE: "Expected an object with `AHT`, got a string - at `$.message`",
    Fault.EXTRA_FIELDS: None,
    Fault.ERROR_IN_200: "Service temporarily unavailable",
    Fault.SLOW: "poll did not finish",
    Fault.ENDLESS_BODY: "larger than max_response_size 64MiB (on the wire)",
    Fault.GZIP_BOMB: "larger than max_response_size 64MiB (decompressed)",
    Fault.DEEP_JSON: "nested too deeply",
    Fault.HOSTILE_TEXT: "HTTP 400",
    Fault.HUGE_NUMBER: "got `float` - at `$.message`",
    Fault.NEGATIVE_NUMBER: "got `int` - at `$.message`",
}


@pytest.mark.parametrize("fault", list(Fault), ids=[f.value for f in Fault])
async def test_a_fault_fails_the_poll_with_one_clear_line_and_the_next_poll_recovers(
    fault: Fault, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("aht_exporter.scheduler.poll_deadline", lambda config: 20.0)
    async with ozonetel_stack(workload(4, 2), defaults={"timeout": "300ms"}, sleep=RecordingSleep()) as stack:
        runner = stack.exporter.runners[0]
        assert await stack.exporter.poll_all()
        before = await stack.scrape()
        if fault is Fault.SLOW:
            runner.provider.client.http.timeout = httpx.Timeout(30.0)
        stack.sim.faults.inject(fault, seconds=25.0)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            await stack.exporter.poll_all()
        during = await stack.scrape()
        expected = FAULTS[fault]
        if expected is None:
            assert runner.health.up, runner.health.last_error
            assert stack.exported(during) == stack.exported(before)
        else:
            assert not runner.health.up
            assert expected in (runner.health.last_error or ""), runner.health.last_error
            assert stack.exported(during) == stack.exported(before)  # kept until stale_after
            lines = [r for r in caplog.records if getattr(r, "source", None) == "oz" and r.levelno >= logging.WARNING]
            assert [r.getMessage() for r in lines] == ["poll failed"]
            assert all(r.exc_info is None for r in caplog.records)
        stack.sim.faults.clear()
        assert await stack.next_poll()
        assert stack.exported(await stack.scrape()) == stack.truth(stack.sim.agent_ids, stack.sim.campaign_names)


async def test_answers_are_on_metrics_while_the_round_goes_on() -> None:
    async with ozonetel_stack(workload()) as stack:
        sim = stack.sim
        poll = asyncio.ensure_future(stack.exporter.poll_all())
        await asyncio.sleep(8)  # loop time: the token and about five answers, of 15 targets at 1.22 s each
        assert not poll.done()
        early = stack.exported(await stack.scrape())
        truth = stack.truth(sim.agent_ids, sim.campaign_names)
        assert early and len(early) < len(truth)
        assert all(truth[labels] == value for labels, value in early.items())
        assert await poll
        assert stack.exported(await stack.scrape()) == truth
