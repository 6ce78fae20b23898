"""The Ozonetel provider over mocked HTTP: exact requests, the token's life, and every reply seed 001 lists.

Every test runs on a fast-forwarded event loop (looptime): the pacing waits are real waits in loop
time, over in no time on the wall.
"""

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.exposition import render
from aht_exporter.health import SourceHealth
from aht_exporter.model import AverageUpdate, Names, ProviderError, RateLimited, Sums, make_labels
from aht_exporter.pacing import Accounts
from aht_exporter.providers.ozonetel import OzonetelConfig, OzonetelProvider
from aht_exporter.redact import Redactor
from aht_exporter.registry import build_config
from aht_exporter.scheduler import SourceRunner
from tests.helpers import T0, RecordingSleep, fixture, parse_exposition, samples

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

BASE = "https://in1-ccaas-api.ozonetel.com"
DATA_AT = "data request to in1-ccaas-api.ozonetel.com "  # what an error about a request or its reply starts with
AHT = f"{BASE}/ca_apis/aht"
TOKEN = f"{BASE}/ca_apis/CAToken/generateToken"
KEY = "oz-key-Q7w9e2Lm"
SEED_ERRORS = fixture("ozonetel_aht_errors.json")


def oz_config(**overrides: Any) -> OzonetelConfig:
    raw: dict[str, Any] = {"name": "oz", "provider": "ozonetel", "user_name": "acme", "api_key": KEY}
    raw.update(overrides)
    source = build_config({"sources": [raw]}, "test.yaml", {}).sources[0]
    assert isinstance(source, OzonetelConfig)
    return source


def make(**overrides: Any) -> tuple[OzonetelProvider, SourceHealth, FakeClock]:
    overrides.setdefault("agents", ["a1"])
    health = SourceHealth("oz", "ozonetel", 3)
    clock = FakeClock(T0)
    provider = OzonetelProvider(oz_config(**overrides), health, clock=clock, sleep=RecordingSleep())
    return provider, health, clock


def token_reply(token: str = "tok-1") -> httpx.Response:
    return httpx.Response(200, json={"token": token, "message": ""})  # [doc] the Generate Token page


def agent_reply(agent: str = "a1", aht: str = "00:02:37", name: str = "Asha Rao") -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "message": {"AgentID": agent, "AgentName": name, "AHT": aht}})


def campaign_reply(cid: str, name: str, aht: str) -> httpx.Response:
    return httpx.Response(
        200, json={"status": "success", "message": {"CampaignID": cid, "CampaignName": name, "AHT": aht}}
    )


def error_reply(message: str, status: str = "error", http: int = 200) -> httpx.Response:
    return httpx.Response(http, json={"status": status, "message": message})


def by_target(request: httpx.Request) -> str:
    body = json.loads(request.content)
    return str(body.get("agentId") or body.get("campaignName"))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


A1 = make_labels(agent="a1", media_type="voice")


async def test_the_token_request_then_the_aht_request_are_sent_exactly(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=agent_reply())
    provider, health, _ = make()

    update = await provider.fetch_averages()

    treq = token.calls[0].request
    assert treq.headers["apiKey"] == KEY
    assert treq.headers["Content-Type"] == "application/json"
    assert "Authorization" not in treq.headers
    assert json.loads(treq.content) == {"userName": "acme"}
    areq = aht.calls[0].request
    assert areq.url == AHT
    assert areq.headers["Authorization"] == "Bearer tok-1"
    assert areq.headers["apiKey"] == KEY
    assert areq.headers["Content-Type"] == "application/json"
    assert areq.headers["User-Agent"].startswith("aht-exporter/")
    assert json.loads(areq.content) == {"userName": "acme", "agentId": "a1"}
    assert update == AverageUpdate({A1: 157.0})
    assert await provider.names() == Names(agents={"a1": "Asha Rao"})
    assert health.api_requests == {("token", "200"): 1, ("aht", "200"): 1}
    await provider.aclose()


async def test_a_campaign_is_asked_by_name_and_exported_by_campaign_id(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=campaign_reply("1201", "Sales Outbound", "00:00:27"))
    provider, _, _ = make(agents=[], campaigns=["Sales Outbound"])
    update = await provider.fetch_averages()
    assert json.loads(aht.calls[0].request.content) == {"userName": "acme", "campaignName": "Sales Outbound"}
    assert update.averages == {make_labels(media_type="voice", queue="1201"): 27.0}
    assert await provider.names() == Names(queues={"1201": "Sales Outbound"})
    await provider.aclose()


async def test_an_agent_whose_aht_is_00_02_37_exports_157_seconds(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=httpx.Response(200, json=fixture("ozonetel_aht_agent.json")))
    provider, _, clock = make(agents=["xx"])
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    assert await runner.poll()
    series = parse_exposition(render([runner.view()]).text.decode())
    labels = (("agent", "xx"), ("media_type", "voice"), ("provider", "ozonetel"), ("source", "oz"), ("window", "2h"))
    assert samples(series, "aht_seconds") == {labels: 157.0}
    assert samples(series, "aht_agent_info") == {(("agent", "xx"), ("agent_name", "xxxxxxx"), ("source", "oz")): 1.0}
    assert samples(series, "aht_handle_time_seconds") == {} and samples(series, "aht_contacts_handled") == {}
    await provider.aclose()


async def test_basic_auth_sends_only_the_api_key(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=agent_reply())
    provider, _, _ = make(auth="basic")
    assert (await provider.fetch_averages()).averages == {A1: 157.0}
    assert token.call_count == 0
    assert aht.calls[0].request.headers["apiKey"] == KEY
    assert "Authorization" not in aht.calls[0].request.headers
    await provider.aclose()


# --- the token ----------------------------------------------------------------------------------------


async def test_the_token_is_kept_55_minutes_then_a_new_one_is_generated(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    aht = mock.post(AHT).mock(return_value=agent_reply())
    provider, health, clock = make()
    await provider.fetch_averages()
    clock.advance(55 * 60 - 1)
    await provider.fetch_averages()
    clock.advance(1)
    await provider.fetch_averages()
    assert token.call_count == 2 and health.tokens_issued == 2
    assert [c.request.headers["Authorization"] for c in aht.calls] == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    await provider.aclose()


# A bare 401 is not the vendor's word for an expired token: see test_ozonetel_methods.py.
@pytest.mark.parametrize(
    "expired",
    [error_reply("Token Expired", "false"), error_reply("Token Expired", "false", 401)],
    ids=["token-expired-200", "token-expired-401"],
)
async def test_token_expired_renews_the_token_once_and_asks_again(
    mock: respx.MockRouter, expired: httpx.Response
) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("old"), token_reply("new")])
    aht = mock.post(AHT).mock(side_effect=[expired, agent_reply()])
    provider, _, _ = make()
    assert (await provider.fetch_averages()).averages == {A1: 157.0}
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in aht.calls] == ["Bearer old", "Bearer new"]
    await provider.aclose()


async def test_token_expired_again_with_a_new_token_fails_the_poll_and_says_why(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("old"), token_reply("new")])
    mock.post(AHT).mock(return_value=error_reply("Token Expired", "false"))
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"Token Expired even with a token generated just now \(does another"):
        await provider.fetch_averages()
    assert token.call_count == 2
    await provider.aclose()


async def test_tokens_renewed_by_many_requests_at_once_are_renewed_once(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("t1"), token_reply("t2"), token_reply("t3")])
    provider, _, _ = make()
    assert provider.tokens is not None
    assert await asyncio.gather(*(provider.tokens.get(provider._generate_token) for _ in range(5))) == ["t1"] * 5
    assert (
        await asyncio.gather(*(provider.tokens.renew("t1", provider._generate_token) for _ in range(5))) == ["t2"] * 5
    )
    assert token.call_count == 2
    await provider.aclose()


async def test_sources_of_one_account_share_its_token(mock: respx.MockRouter) -> None:
    # [doc] each new token invalidates the older ones: the server here accepts only the newest.
    issued: list[str] = []

    def generate(_: httpx.Request) -> httpx.Response:
        issued.append(f"t{len(issued) + 1}")
        return token_reply(issued[-1])

    def aht(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] != f"Bearer {issued[-1]}":
            return error_reply("Token Expired", "false")
        return agent_reply(by_target(request))

    mock.post(TOKEN).mock(side_effect=generate)
    mock.post(AHT).mock(side_effect=aht)
    clock = FakeClock(T0)
    accounts = Accounts()  # what the exporter hands every provider it builds
    agents = OzonetelProvider(
        oz_config(name="oz-agents", agents=["a1"]),
        SourceHealth("oz-agents", "ozonetel", 3),
        clock=clock,
        accounts=accounts,
    )
    more = OzonetelProvider(
        oz_config(name="oz-more", agents=["a2"]),
        SourceHealth("oz-more", "ozonetel", 3),
        clock=clock,
        accounts=accounts,
    )
    other = OzonetelProvider(
        oz_config(name="oz-other", agents=["a3"], user_name="globex"),
        SourceHealth("oz-other", "ozonetel", 3),
        clock=clock,
        accounts=accounts,
    )
    assert agents.tokens is more.tokens and agents.tokens is not other.tokens
    for _ in range(12):  # an hour of polls, every five minutes
        for provider in (agents, more):
            update = await provider.fetch_averages()
            assert list(update.averages.values()) == [157.0]
        clock.advance(300)
    assert issued == ["t1", "t2"]  # at 0 and 55 minutes: one token for the account, never a fight
    for provider in (agents, more, other):
        await provider.aclose()


async def test_never_more_than_10_tokens_in_any_hour(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply(f"t{i}") for i in range(11)])
    mock.post(AHT).mock(return_value=error_reply("Token Expired", "false"))  # every token is refused at once
    provider, _, clock = make()
    for _ in range(9):  # the first poll generates two tokens, each later one a single renewal
        with pytest.raises(ProviderError, match="even with a token generated just now"):
            await provider.fetch_averages()
        clock.advance(60)
    assert token.call_count == 10
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value) == (
        "no new token: 10 were generated in the last hour, the most Ozonetel allows (the next is allowed in 3060s)"
    )
    assert token.call_count == 10
    clock.advance(3060)  # the first generation leaves the hour
    with pytest.raises(ProviderError, match="even with a token"):
        await provider.fetch_averages()
    assert token.call_count == 11
    await provider.aclose()


@pytest.mark.parametrize(
    "case", ["user name key is invalid", "user name value is invalid"], ids=["UserName-is-null", "invalid-user"]
)
async def test_a_refused_token_fails_the_poll_with_the_vendor_message(mock: respx.MockRouter, case: str) -> None:
    reply = fixture("ozonetel_token_replies.json")[case]
    mock.post(TOKEN).mock(return_value=httpx.Response(200, json=reply))
    aht = mock.post(AHT).mock(return_value=agent_reply())
    provider, _, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert (
        str(info.value)
        == f"token request to in1-ccaas-api.ozonetel.com POST /ca_apis/CAToken/generateToken: {reply['message']}"
    )
    assert KEY not in str(info.value)
    assert aht.call_count == 0
    await provider.aclose()


async def test_a_token_reply_without_token_names_the_field(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=httpx.Response(200, json={"message": ""}))
    provider, _, _ = make()
    with pytest.raises(ProviderError, match=r"generateToken: Object missing required field `token` - at `\$`$"):
        await provider.fetch_averages()
    await provider.aclose()


# --- the method ---------------------------------------------------------------------------------------


async def test_a_405_to_post_tries_get_with_the_same_body_once_and_remembers(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    post = mock.post(AHT).mock(return_value=httpx.Response(405))
    get = mock.get(AHT).mock(return_value=agent_reply())
    provider, _, _ = make()
    await provider.fetch_averages()
    await provider.fetch_averages()
    assert post.call_count == 1
    assert get.call_count == 2
    assert json.loads(get.calls[0].request.content) == {"userName": "acme", "agentId": "a1"}
    assert get.calls[0].request.headers["Content-Type"] == "application/json"
    await provider.aclose()


async def test_method_get_is_tried_first_when_configured(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    get = mock.get(AHT).mock(return_value=agent_reply())
    provider, _, _ = make(method="GET")
    await provider.fetch_averages()
    assert get.call_count == 1
    await provider.aclose()


async def test_405_to_both_methods_fails_the_poll(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=httpx.Response(405))
    mock.get(AHT).mock(return_value=httpx.Response(405, text="Method Not Allowed"))
    provider, health, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value) == (
        "data request to in1-ccaas-api.ozonetel.com "
        "/ca_apis/aht for agent 'a1': POST and GET not allowed: is base_url (https://in1-ccaas-api.ozonetel.com) "
        "the account's API domain? (POST /ca_apis/aht: HTTP 405: Method Not Allowed; "
        "GET /ca_apis/aht: HTTP 405: Method Not Allowed)"
    )
    assert health.tokens_issued == 1  # a 405 is about the method: no new token
    await provider.aclose()


# --- the error replies of seed 001 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "userName is empty",
        "apiKey is empty",
        "agentId and campaignName both passed",
        "agentId and campaignName both empty",
        "invalid apiKey or userName",
    ],
)
@pytest.mark.parametrize("http", [200, 400])
async def test_an_account_or_request_error_fails_the_poll_with_the_vendor_message(
    mock: respx.MockRouter, case: str, http: int
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=httpx.Response(http, json=SEED_ERRORS[case]))
    provider, _, _ = make(agents=["a1", "a2"])
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    # The vendor's words, as one line (an HTTP error's text always is; one seed message holds a newline).
    assert " ".join(SEED_ERRORS[case]["message"].split()) in " ".join(str(info.value).split())
    assert aht.call_count == 1  # no point asking for the others
    await provider.aclose()


async def test_user_name_or_api_key_invalid_fails_the_poll_with_that_message(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=error_reply("userName or apiKey is Invalid"))
    provider, health, clock = make()
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([KEY]))
    assert not await runner.poll()
    assert (
        health.last_error
        == "data request to in1-ccaas-api.ozonetel.com POST /ca_apis/aht for agent 'a1': userName or apiKey is Invalid"
    )
    await provider.aclose()


@pytest.mark.parametrize("http", [200, 400])
async def test_an_invalid_agent_drops_its_series_and_the_others_stay(
    mock: respx.MockRouter, http: int, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    replies = {"a1": agent_reply("a1", "00:01:00"), "gone": agent_reply("gone", "00:02:00"), "a3": agent_reply("a3")}
    aht = mock.post(AHT).mock(side_effect=lambda request: replies[by_target(request)])
    provider, _, _ = make(agents=["a1", "gone", "a3"])
    first = await provider.fetch_averages()
    assert len(first.averages) == 3
    replies["gone"] = error_reply("agentId is Invalid", http=http)
    with caplog.at_level(logging.INFO):
        second = await provider.fetch_averages()
        third = await provider.fetch_averages()
    gone = make_labels(agent="gone", media_type="voice")
    assert second.removed == {gone} and gone not in second.averages and len(second.averages) == 2
    assert third.removed == {gone}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # once, until it is valid again
    assert warnings[0].__dict__["target"] == "agent 'gone'" and warnings[0].__dict__["source"] == "oz"
    assert "agentId is Invalid" in warnings[0].__dict__["error"]
    assert "gone" not in (await provider.names()).agents
    assert aht.call_count == 9
    await provider.aclose()


async def test_each_answer_is_published_as_it_arrives(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    replies = {"a1": agent_reply("a1", "00:01:00"), "gone": error_reply("agentId is Invalid"), "a3": agent_reply("a3")}
    mock.post(AHT).mock(side_effect=lambda request: replies[by_target(request)])
    provider, _, _ = make(agents=["a1", "gone", "a3"])
    loop = asyncio.get_running_loop()
    published: list[tuple[float, AverageUpdate]] = []
    started = loop.time()
    update = await provider.fetch_averages(lambda part: published.append((loop.time() - started, part)))
    a3, gone = make_labels(agent="a3", media_type="voice"), make_labels(agent="gone", media_type="voice")
    assert [part for _, part in published] == [
        AverageUpdate({A1: 60.0}),
        AverageUpdate({}, frozenset({gone})),
        AverageUpdate({a3: 157.0}),
    ]
    # One every 1.22 s, as the pacing sends them: not all at the end of the round.
    assert [round(t, 2) for t, _ in published] == [1.22, 2.44, 3.66]  # the token took the first slot
    assert update == AverageUpdate({A1: 60.0, a3: 157.0}, frozenset({gone}))
    await provider.aclose()


async def test_an_invalid_campaign_drops_its_series(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    replies = {"Sales": campaign_reply("11", "Sales", "00:00:30"), "Old": campaign_reply("12", "Old", "00:00:40")}
    mock.post(AHT).mock(side_effect=lambda request: replies[by_target(request)])
    provider, _, _ = make(agents=[], campaigns=["Sales", "Old"])
    await provider.fetch_averages()
    replies["Old"] = error_reply("campaignName is Invalid")
    update = await provider.fetch_averages()
    assert update.removed == {make_labels(media_type="voice", queue="12")}
    assert update.averages == {make_labels(media_type="voice", queue="11"): 30.0}
    assert await provider.names() == Names(queues={"11": "Sales"})
    await provider.aclose()


async def test_only_invalid_targets_still_make_a_successful_poll(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=error_reply("agentId is Invalid"))
    provider, _, _ = make(agents=["x"])
    update = await provider.fetch_averages()
    assert update == AverageUpdate({}, frozenset({make_labels(agent="x", media_type="voice")}))
    await provider.aclose()


@pytest.mark.parametrize("text", ["max limit exceeded", "Max Limit Exceeded", "MAX LIMIT EXCEEDED"])
async def test_max_limit_exceeded_is_counted_once_and_the_rest_waits_for_the_next_poll(
    mock: respx.MockRouter, text: str
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    limited = {"a2"}
    aht = mock.post(AHT).mock(
        side_effect=lambda r: error_reply(text) if by_target(r) in limited else agent_reply(by_target(r))
    )
    provider, health, _ = make(agents=["a1", "a2", "a3"])
    loop = asyncio.get_running_loop()

    first = await provider.fetch_averages()

    assert first.averages == {A1: 157.0}  # what it got before the "slow down"
    assert [by_target(c.request) for c in aht.calls] == ["a1", "a2"]
    assert health.rate_limited == 1
    assert health.api_requests == {("token", "200"): 1, ("aht", "200"): 2}
    # The next poll waits out the minute, then starts with the targets that were not served.
    limited.clear()
    started = loop.time()
    second = await provider.fetch_averages()
    assert [by_target(c.request) for c in aht.calls[2:]] == ["a2", "a3", "a1"]
    assert len(second.averages) == 3
    assert aht.calls[2].request.extensions is not None
    assert loop.time() - started >= 55  # paused for a minute from the refusal, a few seconds ago
    await provider.aclose()


async def test_max_limit_exceeded_on_the_first_target_fails_the_poll_and_is_survived(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(side_effect=[error_reply("max limit exceeded"), agent_reply()])
    provider, health, clock = make()
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([]))
    assert not await runner.poll()
    assert (
        health.last_error == "data request to in1-ccaas-api.ozonetel.com "
        "POST /ca_apis/aht for agent 'a1': max limit exceeded (paused for 60s)"
    )
    assert health.rate_limited == 1
    await asyncio.sleep(300 - 10)  # the next poll, five minutes on
    clock.advance(300)
    assert await runner.poll()
    assert runner.snapshot is not None and runner.snapshot.windows == {
        "2h": {A1: Sums(handle_time_seconds=157.0, contacts_handled=1.0)}  # the vendor's AHT, over one contact
    }
    assert health.rate_limited == 1 and aht.call_count == 2
    await provider.aclose()


async def test_a_429_is_counted_and_pauses_the_account_without_a_retry(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(
        return_value=httpx.Response(429, json={"status": "error", "message": "max limit exceeded"})
    )
    provider, health, _ = make(agents=["a1", "a2"])
    with pytest.raises(RateLimited, match="rate limited: max limit exceeded"):
        await provider.fetch_averages()
    # A retry inside the vendor's minute would only be refused again: the account pauses instead.
    assert aht.call_count == 1
    assert health.rate_limited == 1
    assert provider.pacer.paused_for > 50
    await provider.aclose()


async def test_an_unknown_error_about_one_target_does_not_fail_the_others(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(
        side_effect=lambda r: error_reply("Agent is on a break", "failure") if by_target(r) == "a2" else agent_reply()
    )
    provider, _, _ = make(agents=["a1", "a2"])
    with caplog.at_level(logging.WARNING):
        update = await provider.fetch_averages()
    assert update.averages == {A1: 157.0}
    (record,) = caplog.records
    assert record.getMessage() == "targets not refreshed"
    assert (
        record.__dict__["error"]
        == "data request to in1-ccaas-api.ozonetel.com POST /ca_apis/aht for agent 'a2': Agent is on a break"
    )
    await provider.aclose()


async def test_an_unknown_error_about_every_target_fails_the_poll(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=error_reply("Service temporarily unavailable"))
    provider, _, _ = make(agents=["a1", "a2", "a3"])
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value) == (
        "data request to in1-ccaas-api.ozonetel.com "
        "POST /ca_apis/aht for agent 'a1': Service temporarily unavailable (and 2 more)"
    )
    await provider.aclose()


MALFORMED = [
    (
        httpx.Response(200, json={"status": "success", "message": {"AgentID": "a1"}}),
        "Object missing required field `AHT` - at `$.message`",
    ),
    (
        httpx.Response(200, json={"status": "success", "message": {"AHT": "1:00"}}),
        "Object missing required field `AgentID` - at `$.message`",
    ),
    (
        httpx.Response(200, json={"message": {"AgentID": "a1", "AHT": "00:00:01"}}),
        "Object missing required field `status` - at `$`",
    ),
    (httpx.Response(200, json=["a1"]), "Expected `object`, got `array` - at `$`"),
]


@pytest.mark.parametrize(("reply", "error"), MALFORMED)
async def test_a_malformed_reply_about_one_target_costs_that_target(
    mock: respx.MockRouter, reply: httpx.Response, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(side_effect=lambda r: reply if by_target(r) == "a1" else agent_reply(by_target(r)))
    provider, _, _ = make(agents=["a1", "a2"])
    with caplog.at_level(logging.WARNING):
        update = await provider.fetch_averages()
    assert update.averages == {make_labels(agent="a2", media_type="voice"): 157.0}
    (record,) = caplog.records
    assert record.getMessage() == "targets not refreshed" and error in record.__dict__["error"]
    await provider.aclose()


@pytest.mark.parametrize(("reply", "error"), MALFORMED)
async def test_a_malformed_reply_about_every_target_fails_the_poll_naming_the_field(
    mock: respx.MockRouter, reply: httpx.Response, error: str
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=reply)
    provider, _, _ = make(agents=["a1", "a2"])
    with pytest.raises(
        ProviderError,
        match=f"^{re.escape(DATA_AT)}POST /ca_apis/aht for agent 'a1': {re.escape(error)} \\(and 1 more\\)$",
    ):
        await provider.fetch_averages()
    await provider.aclose()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(200, text="<html>gateway</html>"), "response is not JSON"),
        (httpx.Response(404, text="no such path"), "HTTP 404: no such path"),
    ],
)
async def test_no_usable_answer_fails_the_poll_at_once(
    mock: respx.MockRouter, reply: httpx.Response, error: str
) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=reply)
    provider, _, _ = make(agents=["a1", "a2"])
    with pytest.raises(ProviderError, match=error):
        await provider.fetch_averages()
    assert aht.call_count == 1
    await provider.aclose()


async def test_a_500_is_retried_within_the_budget(mock: respx.MockRouter) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(side_effect=[httpx.Response(503), agent_reply()])
    provider, health, _ = make()
    assert (await provider.fetch_averages()).averages == {A1: 157.0}
    assert aht.call_count == 2
    assert health.api_requests == {("token", "200"): 1, ("aht", "503"): 1, ("aht", "200"): 1}
    await provider.aclose()


async def test_an_unreachable_token_endpoint_is_reported_as_the_token_step_with_its_host(
    mock: respx.MockRouter,
) -> None:
    token = mock.post(TOKEN).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    aht = mock.post(AHT).mock(return_value=httpx.Response(200, json={}))
    provider, health, _ = make()
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    await provider.aclose()
    assert str(info.value) == (
        "token request to in1-ccaas-api.ozonetel.com POST /ca_apis/CAToken/generateToken: "
        "ConnectError: [Errno 111] Connection refused"
    )
    assert token.call_count == 4 and aht.call_count == 0
    assert health.api_requests == {("token", "error"): 4}
