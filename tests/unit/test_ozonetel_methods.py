"""Ozonetel's two documented methods for /ca_apis/aht, and the tokens a refusal may cost.

Both POST and GET (with the same JSON body) are documented; a tenant was seen refusing the method it does not
serve with a bare 401 or 405 (tests/fixtures/ozonetel_aht_wrong_method.json). A refusal is answered by the
other method with the same token before the token is doubted; a new token (each cancels the account's other
tokens, and Ozonetel issues 10 an hour) comes only when the old one may have gone bad, one a poll at most.
Mocked HTTP on a fast-forwarded loop.
"""

import json
import logging

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import AverageUpdate, ProviderError, make_labels
from aht_exporter.pacing import Accounts
from aht_exporter.providers.ozonetel import OzonetelProvider
from aht_exporter.redact import Redactor
from aht_exporter.scheduler import SourceRunner
from tests.helpers import T0, fixture
from tests.unit.test_ozonetel_http import AHT, KEY, TOKEN, agent_reply, make, mock, oz_config, token_reply

pytestmark = [pytest.mark.asyncio, pytest.mark.looptime]

__all__ = ["mock"]  # the respx fixture, shared with test_ozonetel_http

WRONG_METHOD = fixture("ozonetel_aht_wrong_method.json")
A1 = make_labels(agent="a1", media_type="voice")
BODY = {"userName": "acme", "agentId": "a1"}


def refusal(case: str) -> httpx.Response:
    shape = WRONG_METHOD[case]
    return httpx.Response(shape["http"], text=shape["body"])


def sent(request: httpx.Request) -> tuple[str, str, str, str, dict[str, str]]:
    """Method, URL, bearer, apiKey and body of an AHT request (Content-Type is checked on the way)."""
    assert request.headers["Content-Type"] == "application/json"
    return (
        request.method,
        str(request.url),
        request.headers["Authorization"],
        request.headers["apiKey"],
        json.loads(request.content),
    )


async def test_a_401_to_post_is_answered_by_get_with_the_same_token_and_get_is_kept(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    post = mock.post(AHT).mock(return_value=refusal("401 to POST"))
    get = mock.get(AHT).mock(return_value=agent_reply())
    provider, health, clock = make()

    with caplog.at_level(logging.WARNING):
        for _ in range(4):  # 15 minutes of polls
            assert await provider.fetch_averages() == AverageUpdate({A1: 157.0})
            clock.advance(300)

    assert token.call_count == 1 and health.tokens_issued == 1
    assert [sent(c.request) for c in post.calls] == [("POST", AHT, "Bearer tok-1", KEY, BODY)]
    assert [sent(c.request) for c in get.calls] == [("GET", AHT, "Bearer tok-1", KEY, BODY)] * 4
    (warning,) = caplog.records  # once, when it switched
    assert warning.getMessage() == (
        "POST /ca_apis/aht is refused and GET is answered with the same token: using GET from now on "
        "(set `method: GET` to skip the refused one)"
    )
    assert (
        warning.__dict__["error"]
        == "data request to in1-ccaas-api.ozonetel.com POST /ca_apis/aht: HTTP 401: Unauthorized"
    )
    await provider.aclose()


async def test_a_401_to_get_is_answered_by_post_when_get_is_configured(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    get = mock.get(AHT).mock(return_value=refusal("401 to GET"))
    post = mock.post(AHT).mock(return_value=agent_reply())
    provider, health, clock = make(method="GET")
    for _ in range(3):
        assert (await provider.fetch_averages()).averages == {A1: 157.0}
        clock.advance(300)
    assert token.call_count == 1 and health.tokens_issued == 1
    assert [sent(c.request) for c in get.calls] == [("GET", AHT, "Bearer tok-1", KEY, BODY)]
    assert [sent(c.request) for c in post.calls] == [("POST", AHT, "Bearer tok-1", KEY, BODY)] * 3
    await provider.aclose()


async def test_the_method_that_worked_is_kept_when_its_token_expires(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    post = mock.post(AHT).mock(return_value=refusal("401 to POST"))
    get = mock.get(AHT).mock(return_value=agent_reply())
    provider, health, clock = make()
    await provider.fetch_averages()
    clock.advance(55 * 60)  # the token is renewed as it ages, not because of the 401s
    await provider.fetch_averages()
    assert post.call_count == 1
    assert [c.request.headers["Authorization"] for c in get.calls] == ["Bearer tok-1", "Bearer tok-2"]
    assert token.call_count == 2 and health.tokens_issued == 2
    await provider.aclose()


async def test_a_401_to_both_methods_costs_no_second_token_and_says_what_is_wrong(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply(f"tok-{i}") for i in range(1, 4)])
    post = mock.post(AHT).mock(return_value=refusal("401 to POST"))
    get = mock.get(AHT).mock(return_value=refusal("401 to GET"))
    provider, health, clock = make()
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([KEY]))

    for _ in range(11):  # 50 minutes of polls: the token is never doubted, only its setting
        assert not await runner.poll()
        clock.advance(300)

    assert token.call_count == 1 and health.tokens_issued == 1
    assert health.last_error == (
        "data request to in1-ccaas-api.ozonetel.com "
        "/ca_apis/aht for agent 'a1': POST and GET refused a token Ozonetel issued and never accepted, so not an "
        'expired token: is the account\'s "API Authentication" TOKEN_AUTH, as `auth: token` says? (for BASIC_AUTH, '
        "set `auth: basic`) (POST /ca_apis/aht: HTTP 401: Unauthorized; GET /ca_apis/aht: HTTP 401: Unauthorized)"
    )
    assert "another client" not in health.last_error
    assert [sent(c.request) for c in post.calls[:1] + get.calls[:1]] == [
        ("POST", AHT, "Bearer tok-1", KEY, BODY),
        ("GET", AHT, "Bearer tok-1", KEY, BODY),
    ]
    assert post.call_count == get.call_count == 11
    await provider.aclose()


async def test_a_401_to_a_token_that_was_answered_renews_it_once_without_trying_the_other_method(
    mock: respx.MockRouter,
) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    post = mock.post(AHT).mock(side_effect=[agent_reply(), refusal("401 to POST"), agent_reply()])
    get = mock.get(AHT).mock(return_value=agent_reply())
    provider, health, clock = make()
    await provider.fetch_averages()
    clock.advance(300)
    assert (await provider.fetch_averages()).averages == {A1: 157.0}
    # POST answered tok-1 before: the token went bad (another client's new one, say), not the method.
    assert [sent(c.request)[:3] for c in post.calls] == [
        ("POST", AHT, "Bearer tok-1"),
        ("POST", AHT, "Bearer tok-1"),
        ("POST", AHT, "Bearer tok-2"),
    ]
    assert get.call_count == 0
    assert token.call_count == 2 and health.tokens_issued == 2
    await provider.aclose()


async def test_a_renewed_token_refused_by_post_is_tried_with_get(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    post = mock.post(AHT).mock(side_effect=[agent_reply(), refusal("401 to POST"), refusal("401 to POST")])
    get = mock.get(AHT).mock(return_value=agent_reply())
    provider, _, clock = make()
    await provider.fetch_averages()
    clock.advance(300)
    assert (await provider.fetch_averages()).averages == {A1: 157.0}
    assert [sent(c.request)[2] for c in post.calls] == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    assert [sent(c.request)[:3] for c in get.calls] == [("GET", AHT, "Bearer tok-2")]
    assert token.call_count == 2
    await provider.aclose()


async def test_never_more_than_one_new_token_a_poll_for_401s(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply(f"tok-{i}") for i in range(1, 5)])
    answers = iter([agent_reply("a1"), refusal("401 to POST"), agent_reply("a2"), refusal("401 to POST")])
    mock.post(AHT).mock(side_effect=lambda _: next(answers))
    get = mock.get(AHT).mock(return_value=refusal("401 to GET"))
    provider, health, _ = make(agents=["a1", "a2", "a3"])
    published: list[AverageUpdate] = []
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages(published.append)
    assert str(info.value) == (
        "data request to in1-ccaas-api.ozonetel.com "
        "/ca_apis/aht for agent 'a3': POST refused the token, already renewed once in this poll: the next poll "
        "tries again (POST /ca_apis/aht: HTTP 401: Unauthorized)"
    )
    assert token.call_count == 2 and health.tokens_issued == 2  # the first, and one renewal for a2
    assert get.call_count == 0  # POST had answered each of those tokens: the method is right
    assert len(published) == 2  # a1 and a2 stay
    await provider.aclose()


async def test_basic_auth_refused_by_both_methods_says_to_check_the_setting(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN)
    post = mock.post(AHT).mock(return_value=refusal("401 to POST"))
    get = mock.get(AHT).mock(return_value=refusal("401 to GET"))
    provider, health, _ = make(auth="basic")
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value) == (
        "data request to in1-ccaas-api.ozonetel.com "
        "/ca_apis/aht for agent 'a1': POST and GET refused with the apiKey alone: is the account's "
        '"API Authentication" BASIC_AUTH, as `auth: basic` says? (for TOKEN_AUTH, set `auth: token`) '
        "(POST /ca_apis/aht: HTTP 401: Unauthorized; GET /ca_apis/aht: HTTP 401: Unauthorized)"
    )
    assert not token.called and health.tokens_issued == 0
    for call in (post.calls[0], get.calls[0]):
        assert call.request.headers["apiKey"] == KEY and "Authorization" not in call.request.headers
        assert json.loads(call.request.content) == BODY
    await provider.aclose()


async def test_a_405_to_post_then_a_401_to_get_tries_no_new_token(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    mock.post(AHT).mock(return_value=refusal("405 to POST"))
    mock.get(AHT).mock(return_value=refusal("401 to GET"))
    provider, health, _ = make()
    with pytest.raises(
        ProviderError,
        match=r"^data request to in1-ccaas-api\.ozonetel\.com /ca_apis/aht for agent 'a1': "
        r"POST and GET refused a token ",
    ):
        await provider.fetch_averages()
    assert token.call_count == 1 and health.tokens_issued == 1
    await provider.aclose()


async def test_each_token_is_counted_on_the_source_that_had_it_issued(mock: respx.MockRouter) -> None:
    token = mock.post(TOKEN).mock(side_effect=[token_reply("tok-1"), token_reply("tok-2")])
    mock.post(AHT).mock(return_value=agent_reply())
    clock = FakeClock(T0)
    first, second = SourceHealth("oz-1", "ozonetel", 3), SourceHealth("oz-2", "ozonetel", 3)
    accounts = Accounts()
    one = OzonetelProvider(oz_config(name="oz-1", agents=["a1"]), first, clock=clock, accounts=accounts)
    two = OzonetelProvider(oz_config(name="oz-2", agents=["a1"]), second, clock=clock, accounts=accounts)  # one account
    for _ in range(12):  # an hour
        await one.fetch_averages()
        await two.fetch_averages()
        clock.advance(300)
    assert token.call_count == 2
    assert (first.tokens_issued, second.tokens_issued) == (2, 0)  # one token for the account, shared
    await one.aclose()
    await two.aclose()
