"""Ozonetel's replies read by msgspec (issue 16): the same readings and vendor errors as the hand-written parser
it replaced, and every malformed reply named by its JSON path, at the parser and through a mocked poll."""

import json
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.model import ProviderError, make_labels
from aht_exporter.providers.ozonetel import (
    Problem,
    Reading,
    ReplyError,
    Target,
    parse_aht_reply,
    parse_token_reply,
    reply_error,
)
from tests.helpers import FIXTURES
from tests.unit.test_ozonetel_http import AHT, DATA_AT, KEY, TOKEN, make, mock, token_reply

__all__ = ["mock"]  # the respx fixture, shared with test_ozonetel_http

MALFORMED = "malformed"  # a ProviderError that is no vendor's error: its text is new, and names a JSON path

# What the hand-written parser (commit f321ab2) gave for every reply in the Ozonetel fixtures, read as an agent's
# and as a campaign's (and the token replies by parse_token_reply), captured by running that commit's code.
BEFORE: dict[tuple[str, str, str], object] = {
    ("ozonetel_aht_agent.json", "", "agent"): Reading(
        make_labels(agent="xx", media_type="voice"), 157.0, "xx", "xxxxxxx"
    ),
    ("ozonetel_aht_agent.json", "", "campaign"): MALFORMED,
    ("ozonetel_aht_campaign.json", "", "agent"): MALFORMED,
    ("ozonetel_aht_campaign.json", "", "campaign"): Reading(
        make_labels(media_type="voice", queue="xxxx"), 27.0, "xxxx", "xxxx"
    ),
    ("ozonetel_aht_errors.json", "userName is empty", "agent"): (
        Problem.CREDENTIALS,
        "aht: userName should not be empty",
    ),
    ("ozonetel_aht_errors.json", "userName is empty", "campaign"): (
        Problem.CREDENTIALS,
        "aht: userName should not be empty",
    ),
    ("ozonetel_aht_errors.json", "apiKey is empty", "agent"): (Problem.CREDENTIALS, "aht: apiKey should not be empty"),
    ("ozonetel_aht_errors.json", "apiKey is empty", "campaign"): (
        Problem.CREDENTIALS,
        "aht: apiKey should not be empty",
    ),
    ("ozonetel_aht_errors.json", "agentId and campaignName both passed", "agent"): (
        Problem.BAD_REQUEST,
        "aht: Both agentId and campaignName cannot be passed at a time",
    ),
    ("ozonetel_aht_errors.json", "agentId and campaignName both passed", "campaign"): (
        Problem.BAD_REQUEST,
        "aht: Both agentId and campaignName cannot be passed at a time",
    ),
    ("ozonetel_aht_errors.json", "agentId and campaignName both empty", "agent"): (
        Problem.BAD_REQUEST,
        "aht: Both agentId and campaignName cannot be\nempty",
    ),
    ("ozonetel_aht_errors.json", "agentId and campaignName both empty", "campaign"): (
        Problem.BAD_REQUEST,
        "aht: Both agentId and campaignName cannot be\nempty",
    ),
    ("ozonetel_aht_errors.json", "invalid apiKey or userName", "agent"): (
        Problem.CREDENTIALS,
        "aht: userName or apiKey is Invalid",
    ),
    ("ozonetel_aht_errors.json", "invalid apiKey or userName", "campaign"): (
        Problem.CREDENTIALS,
        "aht: userName or apiKey is Invalid",
    ),
    ("ozonetel_aht_errors.json", "invalid agentId", "agent"): (Problem.INVALID_TARGET, "aht: agentId is Invalid"),
    ("ozonetel_aht_errors.json", "invalid agentId", "campaign"): (Problem.INVALID_TARGET, "aht: agentId is Invalid"),
    ("ozonetel_aht_errors.json", "invalid campaignName", "agent"): (
        Problem.INVALID_TARGET,
        "aht: campaignName is Invalid",
    ),
    ("ozonetel_aht_errors.json", "invalid campaignName", "campaign"): (
        Problem.INVALID_TARGET,
        "aht: campaignName is Invalid",
    ),
    ("ozonetel_aht_errors.json", "rate limit exceeded", "agent"): (Problem.RATE_LIMITED, "aht: max limit exceeded"),
    ("ozonetel_aht_errors.json", "rate limit exceeded", "campaign"): (Problem.RATE_LIMITED, "aht: max limit exceeded"),
    ("ozonetel_aht_no_calls.json", "no data found", "agent"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found", "campaign"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, lower case", "agent"): (Problem.NO_DATA, "aht: no data found"),
    ("ozonetel_aht_no_calls.json", "no data found, lower case", "campaign"): (Problem.NO_DATA, "aht: no data found"),
    ("ozonetel_aht_no_calls.json", "no data found, spaced", "agent"): (Problem.NO_DATA, "aht: No Data\nFound."),
    ("ozonetel_aht_no_calls.json", "no data found, spaced", "campaign"): (Problem.NO_DATA, "aht: No Data\nFound."),
    ("ozonetel_aht_no_calls.json", "no data found, nested object", "agent"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, nested object", "campaign"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, nested list", "agent"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, nested list", "campaign"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, status false", "agent"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, status false", "campaign"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, status success", "agent"): (Problem.NO_DATA, "aht: No Data Found"),
    ("ozonetel_aht_no_calls.json", "no data found, status success", "campaign"): (
        Problem.NO_DATA,
        "aht: No Data Found",
    ),
    ("ozonetel_aht_no_calls.json", "AHT 00:00:00", "agent"): Reading(
        make_labels(agent="a1", media_type="voice"), None, "a1", "Asha Rao"
    ),
    ("ozonetel_aht_no_calls.json", "AHT 00:00:00", "campaign"): MALFORMED,
    ("ozonetel_aht_no_calls.json", "AHT empty", "agent"): Reading(
        make_labels(agent="a1", media_type="voice"), None, "a1", "Asha Rao"
    ),
    ("ozonetel_aht_no_calls.json", "AHT empty", "campaign"): MALFORMED,
    ("ozonetel_aht_no_calls.json", "AHT null", "agent"): Reading(
        make_labels(agent="a1", media_type="voice"), None, "a1", "Asha Rao"
    ),
    ("ozonetel_aht_no_calls.json", "AHT null", "campaign"): MALFORMED,
    (
        "ozonetel_token_replies.json",
        "valid",
        "token",
    ): "eyJhbGciOxxxxxxxxxxxxxxxxxkIiwiZXhwIjoxNzE1Nxxxxxxxxxxxxxxxxxxxxh9.BoaomrxxxxxxxxxxxxxxxD8JTYngDL7sE6Q",
    ("ozonetel_token_replies.json", "user name key is invalid", "token"): (
        Problem.CREDENTIALS,
        "token: UserName is null",
    ),
    ("ozonetel_token_replies.json", "user name value is invalid", "token"): (
        Problem.CREDENTIALS,
        "token: Invalid userName or apiKey",
    ),
    ("ozonetel_token_replies.json", "expired token", "token"): (Problem.TOKEN_EXPIRED, "token: Token Expired"),
}


def _cases() -> list[tuple[str, str, str, Any]]:
    cases = []
    for path in sorted(FIXTURES.glob("ozonetel_*.json")):
        data = json.loads(path.read_text())
        replies = {"": data} if "status" in data else {k: v for k, v in data.items() if not k.startswith("_")}
        kinds = ["token"] if "token" in path.name else ["agent", "campaign"]
        cases += [
            (path.name, case, kind, reply) for case, reply in replies.items() for kind in kinds if "http" not in reply
        ]
    return cases


def test_every_fixture_reply_is_compared() -> None:
    assert {(name, case, kind) for name, case, kind, _ in _cases()} == BEFORE.keys()


def _outcome(kind: str, payload: Any) -> object:
    try:
        if kind == "token":
            return parse_token_reply(payload, "token")
        error = reply_error(payload, "aht")
        if error is not None:
            return (error.problem, str(error))
        return parse_aht_reply(payload, Target(kind, "xx" if kind == "agent" else "xxxx"), "aht")  # type: ignore[arg-type]
    except ReplyError as exc:
        return (exc.problem, str(exc))
    except ProviderError as exc:
        assert " - at `$" in str(exc), str(exc)
        return MALFORMED


@pytest.mark.parametrize(("name", "case", "kind", "payload"), _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_fixture_reads_as_the_hand_written_parser_read_it(name: str, case: str, kind: str, payload: Any) -> None:
    assert _outcome(kind, payload) == BEFORE[(name, case, kind)]


# --- every kind of bad reply, named by its JSON path ------------------------------------------------------------

DEEP = "[" * 500 + "]" * 500  # deep, yet within what json.loads (the provider's decoder) reads
DEEPER = "[" * 100_000 + "]" * 100_000  # beyond any decoder's depth limit
OK = '{"status": "success", "message": %s}'

# (the body Ozonetel sends with HTTP 200, what the poll's error says after "...for agent 'a1': ")
BAD_REPLIES = {
    "missing AHT": (OK % '{"AgentID": "a1", "AgentName": "A"}', "Object missing required field `AHT` - at `$.message`"),
    "missing AgentID": (OK % '{"AHT": "00:01:00"}', "Object missing required field `AgentID` - at `$.message`"),
    "missing status": (
        '{"message": {"AgentID": "a1", "AHT": "00:01:00"}}',
        "Object missing required field `status` - at `$`",
    ),
    "missing message": ('{"status": "success"}', "Object missing required field `message` - at `$`"),
    "wrong type AHT": (OK % '{"AgentID": "a1", "AHT": 60}', "Expected `str | null`, got `int` - at `$.message.AHT`"),
    "wrong type AgentID": (
        OK % '{"AgentID": ["a1"], "AHT": "00:01:00"}',
        "Expected `int | str`, got `array` - at `$.message.AgentID`",
    ),
    "wrong type AgentName": (
        OK % '{"AgentID": "a1", "AgentName": {"first": "A"}, "AHT": "00:01:00"}',
        "Expected `str | null`, got `object` - at `$.message.AgentName`",
    ),
    "wrong type status": (
        '{"status": 1, "message": {"AgentID": "a1", "AHT": "00:01:00"}}',
        "Expected `bool | str`, got `int` - at `$.status`",
    ),
    "wrong type status null": (
        '{"status": null, "message": "Service down"}',
        "Expected `bool | str`, got `null` - at `$.status`",
    ),
    "empty AgentID": (OK % '{"AgentID": " ", "AHT": "00:01:00"}', "`AgentID` is empty - at `$.message.AgentID`"),
    "nesting: a list of two": (
        OK % '[{"AgentID": "a1", "AHT": "00:01:00"}, {"AgentID": "a1", "AHT": "00:02:00"}]',
        "Expected one object with `AHT`, got 2 - at `$.message`",
    ),
    "nesting: a list in a list": (
        OK % '[[{"AgentID": "a1", "AHT": "00:01:00"}]]',
        "Expected `str | object | null`, got `array` - at `$.message[0]`",
    ),
    "nesting: one level deeper": (
        OK % '{"data": {"AgentID": "a1", "AHT": "00:01:00"}}',
        "Object missing required field `AgentID` - at `$.message`",
    ),
    "nesting: in the JSON text": (
        OK % json.dumps('{"data": {"AgentID": "a1"}}'),
        "Object missing required field `AgentID` - at `$.message` (in the JSON text it holds)",
    ),
    "nesting: the reply in a list": (
        '[{"status": "success", "message": {"AgentID": "a1", "AHT": "00:01:00"}}]',
        "Expected `object`, got `array` - at `$`",
    ),
    "nesting: a text": (OK % '"AHT is 00:01:00"', "Expected an object with `AHT`, got a string - at `$.message`"),
    "deep: message": (OK % DEEP, "Expected `str | object | null`, got `array` - at `$.message[0]`"),
    "deep: AHT": (
        OK % f'{{"AgentID": "a1", "AHT": {DEEP}}}',
        "Expected `str | null`, got `array` - at `$.message.AHT`",
    ),
    "deep: in the JSON text": (
        OK % json.dumps(f'{{"AgentID": "a1", "x": {DEEPER}, "AHT": "00:01:00"}}'),
        "nested too deeply to be an Ozonetel reply - at `$.message` (in the JSON text it holds)",
    ),
    "huge: AHT text": (
        OK % '{"AgentID": "a1", "AHT": "999999999:00:00"}',
        "'999999999:00:00' is above the limit of 1e+12 s - at `$.message.AHT`",
    ),
    "huge: AHT hours": (
        OK % f'{{"AgentID": "a1", "AHT": "{"9" * 400}:00:00"}}',
        f"'{'9' * 36}... is not HH:MM:SS - at `$.message.AHT`",
    ),
    "huge: AHT number": (
        OK % '{"AgentID": "a1", "AHT": 1.7e308}',
        "Expected `str | null`, got `float` - at `$.message.AHT`",
    ),
    "huge: AHT past a float": (
        OK % '{"AgentID": "a1", "AHT": 1e400}',
        "Expected `str | null`, got `float` - at `$.message.AHT`",
    ),
    "huge: AgentID": (
        OK % '{"AgentID": 1.7e308, "AHT": "00:01:00"}',
        "Expected `int | str`, got `float` - at `$.message.AgentID`",
    ),
    "huge: message": (OK % "1.7e308", "Expected `str | object | array | null`, got `float` - at `$.message`"),
    "negative: AHT text": (
        OK % '{"AgentID": "a1", "AHT": "-00:01:00"}',
        "'-00:01:00' is not HH:MM:SS - at `$.message.AHT`",
    ),
    "negative: AHT number": (
        OK % '{"AgentID": "a1", "AHT": -5}',
        "Expected `str | null`, got `int` - at `$.message.AHT`",
    ),
    "negative: message": (OK % "-5", "Expected `str | object | array | null`, got `int` - at `$.message`"),
    "NaN: AHT": (OK % '{"AgentID": "a1", "AHT": NaN}', "Expected `str | null`, got `float` - at `$.message.AHT`"),
}


@pytest.mark.parametrize(("body", "error"), BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_a_bad_reply_is_a_provider_error_naming_its_json_path(body: str, error: str) -> None:
    payload = json.loads(body)
    with pytest.raises(ProviderError) as info:
        if reply_error(payload, "aht for agent 'a1'") is None:
            parse_aht_reply(payload, Target("agent", "a1"), "aht for agent 'a1'")
    assert not isinstance(info.value, ReplyError) or info.value.problem is Problem.MALFORMED
    assert str(info.value) == f"aht for agent 'a1': {error}"


@pytest.mark.parametrize(("body", "error"), BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_bad_reply_fails_the_poll_naming_its_json_path(mock: respx.MockRouter, body: str, error: str) -> None:
    token = mock.post(TOKEN).mock(return_value=token_reply())
    aht = mock.post(AHT).mock(return_value=httpx.Response(200, content=body.encode()))
    provider, health, _ = make(agents=["a1"])
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value) == f"{DATA_AT}POST /ca_apis/aht for agent 'a1': {error}"
    # One request each, exactly as the vendor documents them; a malformed reply is not retried.
    assert json.loads(token.calls[0].request.content) == {"userName": "acme"}
    (call,) = aht.calls
    assert call.request.headers["Authorization"] == "Bearer tok-1" and call.request.headers["apiKey"] == KEY
    assert json.loads(call.request.content) == {"userName": "acme", "agentId": "a1"}
    assert health.api_requests == {("token", "200"): 1, ("aht", "200"): 1}
    await provider.aclose()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (DEEPER, "response is nested too deeply to be JSON we read (HTTP 200)"),
        ('{"status": "success", "message": {"AgentID": "a1"', "response is not JSON (HTTP 200, "),
    ],
    ids=["deep-whole-body", "cut-short"],
)
@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_body_that_is_no_json_reply_fails_the_poll(mock: respx.MockRouter, body: str, error: str) -> None:
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(return_value=httpx.Response(200, content=body.encode()))
    provider, _, _ = make(agents=["a1"])
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value).startswith(f"{DATA_AT}POST /ca_apis/aht for agent 'a1': {error}")
    await provider.aclose()


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ('"Service temporarily unavailable"', "Service temporarily unavailable"),
        ('{"code": 503, "message": "Service temporarily unavailable"}', "Service temporarily unavailable"),
        (DEEP, "[" * 200),  # shown as JSON, cut to one line's worth
    ],
    ids=["text", "nested", "deep"],
)
@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_error_in_a_200_fails_the_poll_with_the_vendors_words(
    mock: respx.MockRouter, message: str, text: str
) -> None:
    # A vendor's error is no malformed reply: its own text is the news, as before msgspec read the replies.
    mock.post(TOKEN).mock(return_value=token_reply())
    mock.post(AHT).mock(
        return_value=httpx.Response(200, content=f'{{"status": "error", "message": {message}}}'.encode())
    )
    provider, _, _ = make(agents=["a1"])
    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    assert str(info.value) == f"{DATA_AT}POST /ca_apis/aht for agent 'a1': {text}"
    await provider.aclose()


@pytest.mark.parametrize(
    "fields",
    [
        # A lone surrogate, as json.loads reads the escape "\ud800" (msgspec's own decoder refuses it).
        {"AgentID": "a\ud800", "AgentName": "Asha", "AHT": "00:01:00"},
        {"AgentID": 10**30, "AHT": "00:01:00"},  # past any fixed-width integer
        {"AgentID": " a1 ", "AgentName": " ", "AHT": " 00:01:00 "},
    ],
    ids=["lone-surrogate", "huge-integer-id", "padded"],
)
def test_every_nesting_of_the_same_fields_reads_the_same(fields: dict[str, Any]) -> None:
    # Each nesting is read by its own route (the union, the JSON text, the fields beside status): one reading.
    nestings = [fields, [fields], json.dumps(fields)]
    readings = [parse_aht_reply({"status": "success", "message": m}, Target("agent", "a1")) for m in nestings]
    readings.append(parse_aht_reply({"status": "success", **fields}, Target("agent", "a1")))
    ident, name = str(fields["AgentID"]).strip(), str(fields.get("AgentName") or "").strip() or None
    assert readings == [Reading(make_labels(agent=ident, media_type="voice"), 60.0, ident, name)] * 4
