"""The 50 requests/minute budget, proved on a fast-forwarded event loop (looptime): no wall-clock waiting.

Requests are recorded at the loop time they leave; no 60-second window may hold more than the limit,
token calls and retries included, and targets that do not fit one poll are served round-robin.
"""

import asyncio
import bisect
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.pacing import Accounts, Pacer
from aht_exporter.providers.ozonetel import OzonetelConfig, OzonetelProvider, requests_per_poll
from aht_exporter.redact import Redactor
from aht_exporter.registry import build_config
from aht_exporter.scheduler import SourceRunner
from tests.helpers import T0

pytestmark = pytest.mark.looptime

BASE = "https://in1-ccaas-api.ozonetel.com"
EVERY = 300.0


def most_in_any_minute(times: list[float]) -> int:
    """The most requests any 60-second window [t, t + 60) holds."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + 60) - i for i, t in enumerate(times)), default=0)


def test_the_window_counter_counts_what_it_should() -> None:
    assert most_in_any_minute([]) == 0
    assert most_in_any_minute([0, 59.9, 60, 119.9]) == 2
    assert most_in_any_minute([0, 1, 2, 61]) == 3


class Recorder:
    """A mocked Ozonetel that notes when each request arrives, by loop time."""

    def __init__(self, mock: respx.MockRouter, *, failing_every: int = 0) -> None:
        self.times: list[float] = []
        self.tokens = 0
        self.targets: list[str] = []
        self.failing_every = failing_every
        mock.post(f"{BASE}/ca_apis/CAToken/generateToken").mock(side_effect=self.token)
        mock.post(f"{BASE}/ca_apis/aht").mock(side_effect=self.aht)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def token(self, request: httpx.Request) -> httpx.Response:
        self.times.append(self.now())
        self.tokens += 1
        return httpx.Response(200, json={"token": f"tok-{self.tokens}", "message": ""})

    def aht(self, request: httpx.Request) -> httpx.Response:
        self.times.append(self.now())
        body = json.loads(request.content)
        if self.failing_every and len(self.times) % self.failing_every == 0:
            return httpx.Response(503, text="busy")  # retried by the ApiClient: through the pacer too
        if "agentId" in body:
            self.targets.append(body["agentId"])
            message = {"AgentID": body["agentId"], "AgentName": "A", "AHT": "00:01:00"}
        else:
            self.targets.append(body["campaignName"])
            message = {"CampaignID": body["campaignName"], "CampaignName": "C", "AHT": "00:02:00"}
        return httpx.Response(200, json={"status": "success", "message": message})


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True) as m:
        yield m


def big_source(**overrides: Any) -> OzonetelConfig:
    raw: dict[str, Any] = {
        "name": "oz",
        "provider": "ozonetel",
        "user_name": "acme",
        "api_key": "k3y-k3y-k3y",
        "agents": [f"agent{i:03d}" for i in range(200)],
        "campaigns": [f"Campaign {i}" for i in range(100)],
        **overrides,
    }
    source = build_config({"sources": [raw]}, "t", {}).sources[0]
    assert isinstance(source, OzonetelConfig)
    return source


async def poll_every_five_minutes(
    runner: SourceRunner, clock: FakeClock, polls: int, wall_step: float = EVERY
) -> list[bool]:
    """Poll at 0, 300, 600 s... of loop time, as the scheduler would; the wall clock moves `wall_step` a poll."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = []
    for k in range(polls):
        await asyncio.sleep(max(0.0, start + k * EVERY - loop.time()))
        clock.set(T0 + k * wall_step)
        results.append(await runner.poll())
    return results


@pytest.mark.asyncio
async def test_300_targets_never_exceed_50_requests_in_any_minute(mock: respx.MockRouter) -> None:
    server = Recorder(mock, failing_every=37)
    config = big_source()
    clock = FakeClock(T0)
    provider = OzonetelProvider(config, SourceHealth("oz", "ozonetel", 3), clock=clock)
    runner = SourceRunner(config, provider, clock=clock, redactor=Redactor([]))

    # Three polls, a 503 retried now and then, and a token renewal (the wall clock moves 30 minutes a poll).
    assert await poll_every_five_minutes(runner, clock, 3, wall_step=1800) == [True] * 3

    assert most_in_any_minute(server.times) <= 50
    gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
    assert min(gaps) >= 60 / 50  # evenly paced: never two requests closer than the limit allows
    assert server.tokens == 2
    assert runner.health.api_requests[("aht", "503")] > 15  # the retries were there, and inside the budget
    # Every poll used its time: about 233 requests in its 285 s, none in the last 15 s before the next.
    for k in range(3):
        in_poll = [t for t in server.times if k * EVERY <= t < (k + 1) * EVERY]
        assert 225 <= len(in_poll) <= 234 and max(in_poll) < k * EVERY + 285
    await provider.aclose()


@pytest.mark.asyncio
async def test_targets_that_do_not_fit_are_served_round_robin_oldest_first(mock: respx.MockRouter) -> None:
    server = Recorder(mock)
    config = big_source()
    clock = FakeClock(T0)
    provider = OzonetelProvider(config, SourceHealth("oz", "ozonetel", 3), clock=clock)
    runner = SourceRunner(config, provider, clock=clock, redactor=Redactor([]))
    everyone = [*config.agents, *config.campaigns]
    per_poll = requests_per_poll(config)
    assert per_poll == 233

    assert await poll_every_five_minutes(runner, clock, 3) == [True] * 3

    first, second, third = (server.targets[k * per_poll : (k + 1) * per_poll] for k in range(3))
    assert first == everyone[:per_poll]  # never served: in config order
    # Then the 67 never served, then the least recently served.
    assert second == everyone[per_poll:] + everyone[: per_poll - (300 - per_poll)]
    assert third == everyone[per_poll - 67 : per_poll] + everyone[per_poll:] + everyone[: per_poll - 2 * 67]
    # Each poll's update holds only what it refreshed; the store keeps the rest (AverageUpdate semantics).
    assert runner.snapshot is not None and len(runner.snapshot.windows["2h"]) == 300
    await provider.aclose()


@pytest.mark.asyncio
async def test_sources_of_one_account_share_the_budget(mock: respx.MockRouter) -> None:
    server = Recorder(mock)
    clock = FakeClock(T0)
    agents = big_source(name="oz-agents", campaigns=[], agents=[f"a{i}" for i in range(80)])
    campaigns = big_source(name="oz-campaigns", agents=[], campaigns=[f"c{i}" for i in range(80)])
    accounts = Accounts()
    providers = [
        OzonetelProvider(c, SourceHealth(c.name, "ozonetel", 3), clock=clock, accounts=accounts)
        for c in (agents, campaigns)
    ]
    updates = await asyncio.gather(*(p.fetch_averages() for p in providers))
    assert [len(u.averages) for u in updates] == [80, 80]
    assert most_in_any_minute(server.times) <= 50
    for p in providers:
        await p.aclose()


@pytest.mark.asyncio
async def test_a_pause_holds_every_request_back_then_pacing_resumes() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(50)
    sent: list[float] = []
    for _ in range(3):
        await pacer.wait_turn()
        sent.append(loop.time())
    pacer.pause(60)
    assert pacer.paused_for == 60
    for _ in range(2):
        await pacer.wait_turn()
        sent.append(loop.time())
    assert sent == pytest.approx([0, 1.22, 2.44, 62.44, 63.66])
    assert pacer.requests_within(60) == 50 and pacer.requests_within(-1) == 0


@pytest.mark.asyncio
async def test_a_pause_also_holds_back_requests_that_already_had_their_slot() -> None:
    # Another source's request took its slot before the pause: it must not go out during the pause.
    loop = asyncio.get_running_loop()
    pacer = Pacer(50)
    await pacer.wait_turn()
    waiting = asyncio.ensure_future(pacer.wait_turn())  # its slot is at 1.22 s
    await asyncio.sleep(0.5)
    pacer.pause(60)
    await waiting
    assert loop.time() == pytest.approx(60.5)


@pytest.mark.asyncio
async def test_a_bursting_pacer_holds_a_request_back_only_when_the_window_is_full() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(3, slack=0, burst=True)
    sent: list[float] = []
    for _ in range(7):
        await pacer.wait_turn()
        sent.append(loop.time())
    assert sent == pytest.approx([0, 0, 0, 60, 60, 60, 120])
    pacer.pause(100)
    await pacer.wait_turn()
    assert loop.time() == pytest.approx(220)
    assert pacer.requests_within(59) == 3 and pacer.requests_within(60) == 6


def test_one_pacer_per_account_key_the_first_askers_rate() -> None:
    accounts = Accounts()
    first = accounts.pacer(("ozonetel", "u"), 50)
    assert accounts.pacer(("ozonetel", "u"), 10) is first and first.per_minute == 50
    assert accounts.pacer(("ozonetel", "v"), 50) is not first
    assert Accounts().pacer(("ozonetel", "u"), 50) is not first  # another exporter's accounts are its own
