"""Ozonetel's replies as pure data: HH:MM:SS, the AHT reply's shapes, the error texts of seed 001."""

import json
from pathlib import Path
from typing import Any

import pytest

from aht_exporter.model import ProviderError, make_labels
from aht_exporter.providers.ozonetel import (
    Problem,
    Reading,
    ReplyError,
    Target,
    _typed,
    classify,
    parse_aht_reply,
    parse_hms,
    parse_token_reply,
    reply_error,
)
from tests.helpers import FIXTURES, fixture

AGENT = Target("agent", "xx")
CAMPAIGN = Target("campaign", "xxxx")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:02:37", 157),  # seed 001's agent sample
        ("00:00:27", 27),  # seed 001's campaign sample
        ("01:00:00", 3600),
        ("1:02:03", 3723),  # one-digit hours
        ("25:00:01", 90001),  # hours past a day
        ("123:59:59", 123 * 3600 + 3599),
        (" 00:01:00 ", 60),
        ("00:00:01.5", 1.5),
        ("00:00:00", 0),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_hh_mm_ss_is_parsed_to_seconds(text: str | None, seconds: float | None) -> None:
    assert parse_hms(text) == seconds


@pytest.mark.parametrize("text", ["2:37", "00:60:00", "00:00:60", "-00:01:00", "1h", "abc", "00:02:37Z"])
def test_anything_else_than_hh_mm_ss_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not HH:MM:SS"):
        parse_hms(text)


@pytest.mark.parametrize("text", ["9" * 400 + ":00:00", "00:00:00." + "1" * 10_000, "1" * 10 + ":00:00"])
def test_an_absurd_aht_is_refused_without_overflowing(text: str) -> None:
    # issue 12: 400 digits of hours made int -> float overflow, a poll crash with a traceback.
    with pytest.raises(ValueError) as info:
        parse_hms(text)
    assert len(str(info.value)) < 120


def test_an_aht_beyond_the_limit_of_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match=r"above the limit of 1e\+12 s"):
        parse_hms("999999999:00:00")


def test_an_absurd_aht_fails_the_reply_naming_the_field() -> None:
    payload = {"status": "success", "message": {"AgentID": "xx", "AgentName": "n", "AHT": "9" * 400 + ":00:00"}}
    with pytest.raises(ProviderError, match=r"is not HH:MM:SS - at `\$\.message\.AHT`$"):
        parse_aht_reply(payload, AGENT)


@pytest.mark.parametrize("value", [157, 1.5, True, ["00:02:37"]])
def test_a_non_string_aht_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="not an HH:MM:SS string"):
        parse_hms(value)


def test_the_seed_agent_reply_is_157_seconds_for_agent_xx() -> None:
    payload = fixture("ozonetel_aht_agent.json")
    assert reply_error(payload, "aht") is None
    assert parse_aht_reply(payload, AGENT) == Reading(
        make_labels(agent="xx", media_type="voice"), 157.0, "xx", "xxxxxxx"
    )


def test_the_seed_campaign_reply_is_labelled_by_campaign_id() -> None:
    reading = parse_aht_reply(fixture("ozonetel_aht_campaign.json"), CAMPAIGN)
    assert reading.labels == make_labels(media_type="voice", queue="xxxx")
    assert (reading.seconds, reading.name) == (27.0, "xxxx")


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "success", "message": {"AgentID": "xx", "AgentName": "A", "AHT": "00:02:37"}},
        {"status": "success", "message": [{"AgentID": "xx", "AgentName": "A", "AHT": "00:02:37"}]},
        {"status": "success", "message": '{"AgentID": "xx", "AgentName": "A", "AHT": "00:02:37"}'},
        {"status": "success", "AgentID": "xx", "AgentName": "A", "AHT": "00:02:37"},  # flattened, as printed
        {"status": "SUCCESS", "message": {"AgentID": "xx", "AgentName": "A", "AHT": "00:02:37", "New": 1}},
        {"status": True, "message": {"AgentID": "xx", "AgentName": "A", "AHT": "00:02:37"}},
    ],
    ids=["object", "list-of-one", "json-string", "flattened", "upper-case-status-extra-field", "bool-status"],
)
def test_the_unverified_nestings_of_message_are_all_accepted(payload: dict[str, Any]) -> None:
    assert reply_error(payload, "aht") is None
    assert parse_aht_reply(payload, AGENT).seconds == 157.0


def test_a_numeric_agent_id_becomes_a_string_label() -> None:
    reading = parse_aht_reply({"status": "success", "message": {"AgentID": 42, "AHT": "00:00:10"}}, AGENT)
    assert reading.labels == make_labels(agent="42", media_type="voice")
    assert reading.name is None


@pytest.mark.parametrize("aht", ["", None, "00:00:00"])
def test_no_call_in_two_hours_is_no_value(aht: str | None) -> None:
    reading = parse_aht_reply({"status": "success", "message": {"AgentID": "a", "AHT": aht}}, AGENT)
    assert reading.seconds is None


OK = "success"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"AgentName": "A", "AHT": "00:00:01"}, "Object missing required field `AgentID` - at `$.message`"),
        ({"AgentID": "", "AHT": "00:00:01"}, "`AgentID` is empty - at `$.message.AgentID`"),
        ({"AgentID": " ", "AHT": "00:00:01"}, "`AgentID` is empty - at `$.message.AgentID`"),
        ({"AgentID": True, "AHT": "00:00:01"}, "Expected `int | str`, got `bool` - at `$.message.AgentID`"),
        ({"AgentID": 1.5, "AHT": "00:00:01"}, "Expected `int | str`, got `float` - at `$.message.AgentID`"),
        ({"AgentID": "a"}, "Object missing required field `AHT` - at `$.message`"),
        ({"AgentID": "a", "AHT": 157}, "Expected `str | null`, got `int` - at `$.message.AHT`"),
        ({"AgentID": "a", "AHT": "2:37"}, "'2:37' is not HH:MM:SS - at `$.message.AHT`"),
        ({"AgentID": "a", "AgentName": 7, "AHT": ""}, "Expected `str | null`, got `int` - at `$.message.AgentName`"),
    ],
)
def test_a_bad_field_of_a_success_reply_is_named_by_its_json_path(message: dict[str, Any], error: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_aht_reply({"status": OK, "message": message}, AGENT)
    assert not isinstance(info.value, ReplyError)  # malformed, not a vendor's error
    assert str(info.value) == f"/ca_apis/aht for agent 'xx': {error}"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"status": OK, "message": "done"}, "Expected an object with `AHT`, got a string - at `$.message`"),
        ({"status": OK, "message": [{}, {}]}, "Object missing required field `AgentID` - at `$.message[0]`"),
        (
            {"status": OK, "message": [{"AgentID": "a", "AHT": ""}] * 2},
            "Expected one object with `AHT`, got 2 - at `$.message`",
        ),
        ({"status": OK, "message": []}, "Expected one object with `AHT`, got 0 - at `$.message`"),
        ({"status": OK, "message": ["done"]}, "Expected an object with `AHT`, got a string - at `$.message[0]`"),
        (
            {"status": OK, "message": [[{"AgentID": "a"}]]},
            "Expected `str | object | null`, got `array` - at `$.message[0]`",
        ),
        ({"status": OK, "message": 5}, "Expected `str | object | array | null`, got `int` - at `$.message`"),
        ({"status": OK, "message": None}, "Expected an object with `AHT`, got `null` - at `$.message`"),
        ({"status": OK}, "Object missing required field `message` - at `$`"),
        (
            {"status": OK, "message": '{"AgentID": "a"}'},
            "Object missing required field `AHT` - at `$.message` (in the JSON text it holds)",
        ),
        (
            {"status": OK, "message": '{"AgentID": "a", "AHT": 7}'},
            "Expected `str | null`, got `int` - at `$.message.AHT` (in the JSON text it holds)",
        ),
        ({"status": OK, "message": "{not json"}, "Expected an object with `AHT`, got a string - at `$.message`"),
        ({"status": OK, "AgentID": "a", "AHT": 7}, "Expected `str | null`, got `int` - at `$.AHT`"),
        ({"status": OK, "AgentID": "", "AHT": "00:00:01"}, "`AgentID` is empty - at `$.AgentID`"),
    ],
    ids=[
        "text",
        "list-of-two-empty",
        "list-of-two",
        "empty-list",
        "list-of-text",
        "list-in-list",
        "number",
        "null",
        "absent",
        "json-text-missing-field",
        "json-text-wrong-type",
        "text-not-json",
        "flattened-wrong-type",
        "flattened-empty-id",
    ],
)
def test_a_message_nested_a_wrong_way_is_named_by_its_json_path(payload: dict[str, Any], error: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_aht_reply(payload, AGENT)
    assert not isinstance(info.value, ReplyError)  # malformed, not a vendor's error
    assert str(info.value) == f"/ca_apis/aht for agent 'xx': {error}"


def test_a_campaign_reply_needs_the_campaign_id() -> None:
    with pytest.raises(ProviderError) as info:
        parse_aht_reply({"status": "success", "message": {"AgentID": "1", "AHT": "00:00:01"}}, CAMPAIGN)
    assert str(info.value).endswith("Object missing required field `CampaignID` - at `$.message`")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ([], "Expected `object`, got `array` - at `$`"),
        ("success", "Expected `object`, got `str` - at `$`"),
        ({"message": {"AHT": "00:00:01"}}, "Object missing required field `status` - at `$`"),
        ({"status": 200}, "Expected `bool | str`, got `int` - at `$.status`"),
        ({"status": None, "message": "x"}, "Expected `bool | str`, got `null` - at `$.status`"),
    ],
)
def test_a_reply_without_a_usable_status_is_refused_naming_the_path(payload: object, error: str) -> None:
    with pytest.raises(ProviderError) as info:
        reply_error(payload, "aht")
    assert str(info.value) == f"aht: {error}"


SEED_ERRORS = {k: v for k, v in fixture("ozonetel_aht_errors.json").items() if not k.startswith("_")}
MEANINGS = {
    "userName is empty": Problem.CREDENTIALS,
    "apiKey is empty": Problem.CREDENTIALS,
    "agentId and campaignName both passed": Problem.BAD_REQUEST,
    "agentId and campaignName both empty": Problem.BAD_REQUEST,
    "invalid apiKey or userName": Problem.CREDENTIALS,
    "invalid agentId": Problem.INVALID_TARGET,
    "invalid campaignName": Problem.INVALID_TARGET,
    "rate limit exceeded": Problem.RATE_LIMITED,
}


def test_every_error_of_seed_001_has_a_meaning() -> None:
    assert SEED_ERRORS.keys() == MEANINGS.keys()


@pytest.mark.parametrize("case", list(SEED_ERRORS))
@pytest.mark.parametrize("status", ["error", "Error", "ERROR", "false", "failure"])
def test_every_seed_error_is_recognised_whatever_the_case_of_status(case: str, status: str) -> None:
    payload = {**SEED_ERRORS[case], "status": status}
    error = reply_error(payload, "aht")
    assert error is not None
    assert error.problem is MEANINGS[case]
    assert str(error) == f"aht: {SEED_ERRORS[case]['message']}"  # reported as it is


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("MAX LIMIT EXCEEDED", Problem.RATE_LIMITED),
        ("Max limit exceeded. Please try after some time", Problem.RATE_LIMITED),
        ("Token Expired", Problem.TOKEN_EXPIRED),
        ("AGENTID IS INVALID", Problem.INVALID_TARGET),
        ("Invalid userName or apiKey", Problem.CREDENTIALS),  # the token API's wording
        ("UserName is null", Problem.CREDENTIALS),
        ("Something new went wrong", Problem.UNKNOWN),
    ],
)
def test_error_texts_are_matched_case_insensitively(text: str, problem: Problem) -> None:
    assert classify(text) is problem


def test_an_error_without_message_still_says_so() -> None:
    error = reply_error({"status": "error"}, "aht")
    assert error is not None and str(error) == "aht: (no message)" and error.problem is Problem.UNKNOWN


TOKEN_REPLIES = fixture("ozonetel_token_replies.json")


def test_the_documented_token_reply_gives_the_token() -> None:
    assert parse_token_reply(TOKEN_REPLIES["valid"], "token") == TOKEN_REPLIES["valid"]["token"]


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("user name key is invalid", Problem.CREDENTIALS),
        ("user name value is invalid", Problem.CREDENTIALS),
        ("expired token", Problem.TOKEN_EXPIRED),
    ],
)
def test_documented_token_errors_carry_the_vendor_message(case: str, problem: Problem) -> None:
    with pytest.raises(ReplyError) as info:
        parse_token_reply(TOKEN_REPLIES[case], "token")
    assert str(info.value) == f"token: {TOKEN_REPLIES[case]['message']}"
    assert info.value.problem is problem


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"message": ""}, "Object missing required field `token` - at `$`"),
        ({"token": ""}, "`token` is empty - at `$.token`"),
        ({"token": "  "}, "`token` is empty - at `$.token`"),
        ({"token": 12}, "Expected `str`, got `int` - at `$.token`"),
        ({"token": None}, "Expected `str`, got `null` - at `$.token`"),
        (["tok"], "Expected `object`, got `array` - at `$`"),
    ],
)
def test_a_token_reply_without_a_token_is_refused_naming_the_path(payload: object, error: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_token_reply(payload, "token")
    assert not isinstance(info.value, ReplyError)
    assert str(info.value) == f"token: {error}"


NO_CALLS = fixture("ozonetel_aht_no_calls.json")
NO_DATA_FOUND = [k for k in NO_CALLS if k.startswith("no data found")]


@pytest.mark.parametrize("text", ["No Data Found", "no data found", "NO DATA FOUND", " No  Data\nFound. "])
def test_no_data_found_means_no_calls_whatever_its_case_and_spacing(text: str) -> None:
    assert classify(text) is Problem.NO_DATA


@pytest.mark.parametrize("case", [k for k in NO_DATA_FOUND if NO_CALLS[k]["status"] != "success"])
def test_every_no_data_found_error_reply_means_no_calls(case: str) -> None:
    error = reply_error(NO_CALLS[case], "aht")
    assert error is not None and error.problem is Problem.NO_DATA
    assert " ".join(str(error).split()).lower().startswith("aht: no data found")  # its own text, not JSON


def test_no_data_found_said_with_status_success_means_no_calls() -> None:
    payload = NO_CALLS["no data found, status success"]
    assert reply_error(payload, "aht") is None
    with pytest.raises(ReplyError) as info:
        parse_aht_reply(payload, AGENT)
    assert info.value.problem is Problem.NO_DATA
    assert str(info.value) == "/ca_apis/aht for agent 'xx': No Data Found"


@pytest.mark.parametrize("case", ["AHT 00:00:00", "AHT empty", "AHT null"])
def test_a_zero_empty_or_null_aht_means_no_calls(case: str) -> None:
    assert reply_error(NO_CALLS[case], "aht") is None
    reading = parse_aht_reply(NO_CALLS[case], AGENT)
    assert reading == Reading(make_labels(agent="a1", media_type="voice"), None, "a1", "Asha Rao")


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"message": "No Data Found"}, "No Data Found"),
        (["No Data Found"], "No Data Found"),
        ({"error": "Service down"}, "Service down"),  # one text, whatever its key
        ({"code": 7, "message": "Service down"}, "Service down"),
        ({"code": 7, "detail": "x"}, '{"code": 7, "detail": "x"}'),  # no text of its own: shown as JSON
    ],
)
def test_a_nested_error_message_is_reported_by_its_text(message: object, text: str) -> None:
    error = reply_error({"status": "error", "message": message}, "aht")
    assert error is not None and str(error) == f"aht: {text}"


@pytest.mark.parametrize(("status", "problem"), [(401, Problem.REFUSED), (405, Problem.REFUSED), (403, None)])
def test_a_bare_401_or_405_is_a_refusal_not_an_expired_token(status: int, problem: Problem | None) -> None:
    typed = _typed(ProviderError(f"POST /ca_apis/aht: HTTP {status}: Unauthorized", status=status))
    assert getattr(typed, "problem", None) is problem


def test_a_401_saying_token_expired_is_an_expired_token() -> None:
    typed = _typed(ProviderError("POST /ca_apis/aht: HTTP 401: Token Expired", status=401))
    assert isinstance(typed, ReplyError) and typed.problem is Problem.TOKEN_EXPIRED


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("ozonetel_*.json")), ids=lambda p: p.name)
def test_every_ozonetel_fixture_cites_the_vendor_page_its_shapes_come_from(path: Path) -> None:
    source = json.loads(path.read_text())["_source"]
    assert "https://docs.ozonetel.com/reference/" in json.dumps(source)
