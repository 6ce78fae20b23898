"""The Ozonetel simulator over loopback HTTP: seed 001's replies, the token's rules, the 50/minute limit.

On a fast-forwarded event loop (looptime): the limiter's minute passes in no wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from aht_exporter.clock import FakeClock
from aht_exporter.simulator.ozonetel import AHT_PATH, TOKEN_PATH, OzonetelSimulator, agent_id
from aht_exporter.simulator.workload import Workload
from tests.helpers import T0, fixture

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

USER, KEY = "acme", "sim-key-0987"
SEED_ERRORS = fixture("ozonetel_aht_errors.json")
WRONG_METHOD = fixture("ozonetel_aht_wrong_method.json")


@asynccontextmanager
async def running(
    workload: Workload | None = None, **options: Any
) -> AsyncIterator[tuple[OzonetelSimulator, httpx.AsyncClient, FakeClock]]:
    clock = FakeClock(T0)
    workload = workload or Workload(seed=5, queues=3, agents=6, media_types=("voice", "chat"), contacts_per_slot=20)
    sim = OzonetelSimulator(workload, clock, user_name=USER, api_key=KEY, **options)
    url = await sim.start()
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            yield sim, client, clock
    finally:
        await sim.stop()


async def token(client: httpx.AsyncClient) -> str:
    r = await client.post(TOKEN_PATH, json={"userName": USER}, headers={"apiKey": KEY})
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "" and isinstance(body["token"], str)
    return str(body["token"])


async def ask(client: httpx.AsyncClient, body: dict[str, Any], tok: str | None, key: str = KEY) -> Any:
    headers = {"apiKey": key} | ({"Authorization": f"Bearer {tok}"} if tok else {})
    r = await client.post(AHT_PATH, json=body, headers=headers)
    return r.status_code, r.json()


async def test_an_agent_and_a_campaign_answer_the_seed_shapes_with_the_truth() -> None:
    async with running() as (sim, client, _):
        tok = await token(client)
        status, body = await ask(client, {"userName": USER, "agentId": "agent001"}, tok)
        assert status == 200 and body["status"] == "success"
        assert set(body["message"]) == {"AgentID", "AgentName", "AHT"}
        assert body["message"]["AgentID"] == "agent001"
        truth = sim.truth_agent("agent001")
        assert truth is not None and 0 < truth < 3600
        assert body["message"]["AHT"] == f"00:{truth // 60:02d}:{truth % 60:02d}"
        status, body = await ask(client, {"userName": USER, "campaignName": "Support"}, tok)
        assert body["message"] == {"CampaignID": "1002", "CampaignName": "Support", "AHT": body["message"]["AHT"]}
        assert sim.truth_campaign("Support") == sim.truth((("media_type", "voice"), ("queue", "1002")))


async def test_the_truth_is_the_rounded_mean_of_voice_calls_over_the_last_two_hours() -> None:
    async with running() as (sim, _, clock):
        workload = sim._workload
        for i, (uid, _) in enumerate(workload.agents):
            calls = [
                c.handle_ms
                for c in workload.contacts(clock.now() - 7200, clock.now(), clock.now())
                if c.agent_id == uid and c.media_type == "voice"
            ]
            expected = round(sum(calls) / len(calls) / 1000 + 1e-9) if calls else None
            assert sim.truth_agent(agent_id(i)) == expected
        before = [sim.truth_agent(a) for a in sim.agent_ids]
        assert all(before)  # 20 contacts every 5 minutes: every agent made calls
        clock.advance(3 * 3600)  # the window slides with the clock
        assert [sim.truth_agent(a) for a in sim.agent_ids] != before
        assert [sim.truth_agent(a, as_of=T0) for a in sim.agent_ids] == before


NO_CALLS = fixture("ozonetel_aht_no_calls.json")
QUIET = Workload(seed=5, queues=3, agents=6, media_types=("chat",))  # no voice call, ever


async def test_no_call_in_two_hours_is_no_data_found() -> None:
    # [sibling API's doc] https://docs.ozonetel.com/reference/post_ca-reports-summaryreport-2, "No data is found"
    async with running(QUIET) as (sim, client, _):
        tok = await token(client)
        status, body = await ask(client, {"userName": USER, "agentId": "agent002"}, tok)
        assert (status, body) == (200, NO_CALLS["no data found"]) and sim.truth_agent("agent002") is None
        status, body = await ask(client, {"userName": USER, "campaignName": "Sales"}, tok)
        assert (status, body) == (200, NO_CALLS["no data found"]) and sim.truth_campaign("Sales") is None


@pytest.mark.parametrize(
    ("no_calls", "case"), [("00:00:00", "AHT 00:00:00"), ("empty", "AHT empty"), ("null", "AHT null")]
)
async def test_no_call_can_also_be_a_zero_empty_or_null_aht(no_calls: str, case: str) -> None:
    async with running(QUIET, no_calls=no_calls) as (sim, client, _):
        tok = await token(client)
        _, body = await ask(client, {"userName": USER, "agentId": "agent002"}, tok)
        assert body == {
            "status": "success",
            "message": {
                "AgentID": "agent002",
                "AgentName": sim._workload.agents[1][1],
                "AHT": NO_CALLS[case]["message"]["AHT"],
            },
        }


@pytest.mark.parametrize(
    ("case", "body", "key"),
    [
        ("userName is empty", {"userName": "", "agentId": "agent001"}, KEY),
        ("apiKey is empty", {"userName": USER, "agentId": "agent001"}, ""),
        ("agentId and campaignName both passed", {"userName": USER, "agentId": "a1", "campaignName": "Sales"}, KEY),
        ("agentId and campaignName both empty", {"userName": USER, "agentId": "", "campaignName": ""}, KEY),
        ("invalid apiKey or userName", {"userName": "someone", "agentId": "agent001"}, KEY),
        ("invalid agentId", {"userName": USER, "agentId": "agent999"}, KEY),
        ("invalid campaignName", {"userName": USER, "campaignName": "Nope"}, KEY),
    ],
)
async def test_every_error_of_seed_001_comes_with_http_200(case: str, body: dict[str, str], key: str) -> None:
    async with running() as (_, client, _):
        tok = await token(client)
        status, reply = await ask(client, body, tok, key)
        assert status == 200
        expected = SEED_ERRORS[case]
        assert reply == {"status": "error", "message": " ".join(expected["message"].split())}


async def test_the_51st_request_in_a_minute_is_max_limit_exceeded() -> None:
    async with running() as (sim, client, _):
        loop = asyncio.get_running_loop()
        tok = await token(client)  # the token call counts too
        for _ in range(49):
            _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, tok)
            assert body["status"] == "success"
        _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, tok)
        assert body == {"status": "error", "message": "max limit exceeded"}
        assert sim.over_limit == 1
        await asyncio.sleep(60 - loop.time() + 0.001)  # the first request leaves the window
        _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, tok)
        assert body["status"] == "success"
        assert sim.requests == {TOKEN_PATH: 1, AHT_PATH: 51} and sim.over_limit == 1


async def test_a_token_lives_60_minutes_and_a_new_one_invalidates_the_old() -> None:
    async with running() as (sim, client, clock):
        old = await token(client)
        new = await token(client)
        _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, old)
        assert body == {"status": "false", "message": "Token Expired", "data": None}
        _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, new)
        assert body["status"] == "success"
        clock.advance(3600)
        _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, new)
        assert body["message"] == "Token Expired"
        status, body = await ask(client, {"userName": USER, "agentId": "agent001"}, None)
        assert status == 401 and body["status"] == "false"
        assert sim.tokens_issued == 2


async def test_at_most_10_tokens_an_hour() -> None:
    async with running() as (_, client, clock):
        for _ in range(10):
            await token(client)
            clock.advance(60)
        r = await client.post(TOKEN_PATH, json={"userName": USER}, headers={"apiKey": KEY})
        assert r.json()["status"] == "false"
        clock.advance(3000)  # an hour after the first
        await token(client)


@pytest.mark.parametrize(
    ("body", "key", "message"),
    [
        ({"userName": "other"}, KEY, "Invalid userName or apiKey"),
        ({"userName": USER}, "wrong", "Invalid userName or apiKey"),
        ({}, KEY, "UserName is null"),
    ],
)
async def test_token_errors_are_the_documented_ones(body: dict[str, str], key: str, message: str) -> None:
    async with running() as (_, client, _):
        r = await client.post(TOKEN_PATH, json=body, headers={"apiKey": key})
        assert (r.status_code, r.json()) == (200, {"status": "false", "message": message, "data": None})


async def test_a_basic_auth_account_needs_no_token() -> None:
    async with running(auth="basic") as (_, client, _):
        status, body = await ask(client, {"userName": USER, "agentId": "agent001"}, None)
        assert status == 200 and body["status"] == "success"


async def test_get_with_a_body_works_and_a_refused_method_is_405() -> None:
    async with running(methods=("GET",)) as (_, client, _):
        tok = await token(client)
        headers = {"apiKey": KEY, "Authorization": f"Bearer {tok}"}
        r = await client.request("GET", AHT_PATH, json={"userName": USER, "agentId": "agent001"}, headers=headers)
        assert r.json()["status"] == "success"
        r = await client.post(AHT_PATH, json={"userName": USER, "agentId": "agent001"}, headers=headers)
        assert r.status_code == 405


@pytest.mark.parametrize(("accepted", "refused"), [("GET", "POST"), ("POST", "GET")])
async def test_a_method_refused_with_401_gets_a_bare_401_and_the_other_is_answered(accepted: str, refused: str) -> None:
    # [unverified] as a CloudAgent route was seen to answer: tests/fixtures/ozonetel_aht_wrong_method.json
    async with running(methods=(accepted,), refuse_method_with=401) as (sim, client, _):
        tok = await token(client)
        headers = {"apiKey": KEY, "Authorization": f"Bearer {tok}"}
        body = {"userName": USER, "agentId": "agent001"}
        r = await client.request(refused, AHT_PATH, json=body, headers=headers)
        shape = WRONG_METHOD[f"401 to {refused}"]
        assert (r.status_code, r.text) == (shape["http"], shape["body"])
        r = await client.request(accepted, AHT_PATH, json=body, headers=headers)
        assert r.json()["status"] == "success"
        assert sim.requests_by_method == {("POST", TOKEN_PATH): 1, (refused, AHT_PATH): 1, (accepted, AHT_PATH): 1}
        assert sim.tokens_issued == 1


async def test_only_the_listed_agents_and_campaigns_exist() -> None:
    async with running(agents=["agent002"], campaigns=["Sales"]) as (sim, client, _):
        assert sim.agent_ids == ["agent002"] and sim.campaign_names == ["Sales"]
        tok = await token(client)
        _, body = await ask(client, {"userName": USER, "agentId": "agent001"}, tok)
        assert body["message"] == "agentId is Invalid"
        _, body = await ask(client, {"userName": USER, "campaignName": "Support"}, tok)
        assert body["message"] == "campaignName is Invalid"
