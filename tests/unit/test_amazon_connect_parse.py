"""Amazon Connect's replies -> buckets, names and error texts (aht_exporter/providers/amazon_connect.py).

The fixtures (tests/fixtures/amazon_connect_*.json) are hand-made from botocore's service model; each one says
where its shape comes from in its `source` key, and test_amazon_connect_contract.py parses every one of them with
botocore's own response parser too. Failure paths: every way a reply can be wrong fails the poll with a
ProviderError naming the JSON path, never with another exception.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import pytest

from aht_exporter.model import MAX_SECONDS, MISSING_LABEL, Bucket, Field, ProviderError
from aht_exporter.providers.amazon_connect_api import (
    instance_arn_of_queue,
    merge,
    parse_list_page,
    parse_metric_data,
    resource_id,
)
from aht_exporter.providers.aws import error_text
from tests.helpers import fixture

QUEUE_A = "3f1f4c1e-6a7b-4c2d-9e8f-0a1b2c3d4e5f"
QUEUE_B = "8a6e0804-2bd0-4672-b79d-d97027f9071a"
T = 1772445600  # 2026-03-02 10:00 UTC
INSTANCE = "arn:aws:connect:eu-west-2:123456789012:instance/11111111-2222-4333-8444-555555555555"


def raw(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def parse(payload: Any, group_by: list[str]) -> tuple[list[Bucket], str | None]:
    return parse_metric_data(raw(payload), group_by)


def one_result(**overrides: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "Dimensions": {"QUEUE": QUEUE_A},
        "MetricInterval": {"Interval": "FIFTEEN_MIN", "StartTime": T, "EndTime": T + 900},
        "Collections": [
            {"Metric": {"Name": "SUM_HANDLE_TIME"}, "Value": 100.0},
            {"Metric": {"Name": "CONTACTS_HANDLED"}, "Value": 2.0},
        ],
    }
    result.update(overrides)
    return {"MetricResults": [result]}


def test_queue_and_channel_fixture_gives_seconds_and_contacts_per_bucket() -> None:
    case = fixture("amazon_connect_metric_data_queue_channel.json")
    buckets, token = parse(case["reply"], case["group_by"])
    assert token == "AAMAAUhwJ2Yr0dC8RQjkbHv4rK1pT2xFZWxsbw=="
    assert buckets == [
        Bucket(
            start=T,
            end=T + 900,
            labels=(("media_type", "voice"), ("queue", QUEUE_A)),
            values={
                Field.HANDLE_TIME: 1234.5,
                Field.CONTACTS_HANDLED: 4.0,
                Field.TALK_TIME: 1000.25,
                Field.HOLD_TIME: 90.0,
                Field.ACW_TIME: 144.25,
                Field.CONTACTS_ABANDONED: 1.0,
                Field.CONTACTS_OFFERED: 5.0,
            },
        ),
        Bucket(
            start=T,
            end=T + 900,
            labels=(("media_type", "chat"), ("queue", QUEUE_A)),
            # SUM_HOLD_TIME is null: "cannot be calculated", nothing was held. Left out: zero.
            values={
                Field.HANDLE_TIME: 300.0,
                Field.CONTACTS_HANDLED: 1.0,
                Field.TALK_TIME: 300.0,
                Field.ACW_TIME: 0.0,
                Field.CONTACTS_ABANDONED: 0.0,
                Field.CONTACTS_OFFERED: 1.0,
            },
        ),
        Bucket(
            start=T + 900,
            end=T + 1800,
            labels=(("media_type", "voice"), ("queue", QUEUE_B)),
            values={
                Field.HANDLE_TIME: 610.0,
                Field.CONTACTS_HANDLED: 2.0,
                Field.TALK_TIME: 500.0,
                Field.HOLD_TIME: 60.0,
                Field.ACW_TIME: 50.0,
                Field.CONTACTS_ABANDONED: 0.0,
                Field.CONTACTS_OFFERED: 2.0,
            },
        ),
    ]


def test_agent_fixture_ignores_a_metric_not_asked_for_and_ends_the_paging() -> None:
    case = fixture("amazon_connect_metric_data_agent.json")
    buckets, token = parse(case["reply"], case["group_by"])
    assert token is None
    assert buckets == [
        Bucket(
            start=T,
            end=T + 1800,
            labels=(("agent", "b2c7a8e4-1f3d-4e5a-8b9c-0d1e2f3a4b5c"),),
            values={
                Field.HANDLE_TIME: 900.0,
                Field.CONTACTS_HANDLED: 3.0,
                Field.TALK_TIME: 700.0,
                Field.HOLD_TIME: 100.0,
                Field.ACW_TIME: 100.0,
            },
        )
    ]


def test_no_data_is_an_empty_list_and_an_empty_token_ends_the_paging() -> None:
    assert parse({"MetricResults": []}, ["queue"]) == ([], None)
    assert parse({}, ["queue"]) == ([], None)
    assert parse({"MetricResults": [], "NextToken": ""}, ["queue"]) == ([], None)


def test_a_dimension_left_out_is_the_missing_label_and_an_arn_becomes_its_id() -> None:
    payload = one_result(Dimensions={"QUEUE": f"{INSTANCE}/queue/{QUEUE_B}", "CHANNEL": ""})
    buckets, _ = parse(payload, ["media_type", "queue", "agent"])
    assert buckets[0].labels == (("agent", MISSING_LABEL), ("media_type", MISSING_LABEL), ("queue", QUEUE_B))


def test_a_dimension_we_did_not_group_by_may_hold_anything() -> None:
    payload = one_result(Dimensions={"QUEUE": QUEUE_A, "ROUTING_PROFILE": {"new": [1]}, "AGENT": 5})
    assert parse(payload, ["queue"])[0][0].labels == (("queue", QUEUE_A),)


def test_no_grouping_gives_one_unlabelled_series() -> None:
    buckets, _ = parse(one_result(Dimensions={}), [])
    assert buckets[0].labels == ()
    assert buckets[0].values == {Field.HANDLE_TIME: 100.0, Field.CONTACTS_HANDLED: 2.0}


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (
            {"MetricResults": [{"Collections": []}]},
            "metric data response: MetricResults[0].MetricInterval is missing",
        ),
        (
            one_result(MetricInterval={"StartTime": T}),
            "Object missing required field `EndTime` - at `$.MetricResults[0].MetricInterval`",
        ),
        (
            one_result(Collections=[{"Value": 1.0}]),
            "Object missing required field `Metric` - at `$.MetricResults[0].Collections[0]`",
        ),
        (
            one_result(Collections=[{"Metric": {"Name": "SUM_HANDLE_TIME"}, "Value": "100"}]),
            "Expected `float | null`, got `str` - at `$.MetricResults[0].Collections[0].Value`",
        ),
        (
            one_result(Dimensions={"QUEUE": 7}),
            "metric data response: MetricResults[0].Dimensions.QUEUE is not a string",
        ),
        ({"MetricResults": {"a": 1}}, "Expected `array`, got `object` - at `$.MetricResults`"),
        ({"MetricResults": [], "NextToken": 5}, "Expected `str | null`, got `int` - at `$.NextToken`"),
        (
            one_result(Collections=[{"Metric": {"Name": "SUM_HANDLE_TIME"}, "Value": -5}]),
            "MetricResults[0].Collections[0].Value: -5 is negative",
        ),
        (
            one_result(Collections=[{"Metric": {"Name": "SUM_HOLD_TIME"}, "Value": 1.7e308}]),
            "MetricResults[0].Collections[0].Value: 1.7e+308 is above the limit of 1e+12 s",
        ),
        (
            one_result(Collections=[{"Metric": {"Name": "CONTACTS_HANDLED"}, "Value": 1e13}]),
            "MetricResults[0].Collections[0].Value: 10000000000000 is above the limit of 1e+12 contacts",
        ),
        (
            one_result(MetricInterval={"StartTime": T + 0.5, "EndTime": T + 900}),
            "MetricResults[0].MetricInterval.StartTime: 1772445600.5 is not a whole Unix time in seconds",
        ),
        (
            one_result(MetricInterval={"StartTime": -900, "EndTime": T}),
            "MetricResults[0].MetricInterval.StartTime: -900 is not a whole Unix time in seconds",
        ),
        (
            one_result(MetricInterval={"StartTime": T, "EndTime": 1e300}),
            "MetricResults[0].MetricInterval.EndTime: 1e+300 is not a whole Unix time in seconds",
        ),
        (
            one_result(MetricInterval={"StartTime": T, "EndTime": T}),
            "MetricResults[0].MetricInterval ends before it starts",
        ),
        (
            {"message": "Internal server error"},
            "the vendor answered 200 with an error: ?: Internal server error",
        ),
        (
            {"__type": "com.amazonaws.connect#InternalServiceException", "Message": "failed"},
            "the vendor answered 200 with an error: InternalServiceException: failed",
        ),
        ([1, 2], "metric data response: Expected `object`, got `array`"),
    ],
)
def test_a_reply_we_cannot_trust_fails_naming_the_path(payload: Any, error: str) -> None:
    with pytest.raises(ProviderError) as caught:
        parse(payload, ["queue"])
    assert error in str(caught.value)


def test_a_value_of_exactly_the_limit_is_still_a_figure() -> None:
    payload = one_result(Collections=[{"Metric": {"Name": "SUM_HANDLE_TIME"}, "Value": MAX_SECONDS}])
    assert parse(payload, ["queue"])[0][0].values == {Field.HANDLE_TIME: MAX_SECONDS}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            b"<html>502 Bad Gateway</html>",
            "metric data: response is not JSON (HTTP 200, '<html>502 Bad Gateway</html>')",
        ),
        (b'{"MetricResults": [', "metric data: response is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "metric data response: Expected `object`, got `array`"),
        (b'{"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_not_json_truncated_and_deep_json_fail_the_poll(body: bytes, error: str) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_metric_data(body, ["queue"])
    assert error in str(caught.value)


DEEP = b'{"a":' * 2_000 + b"1" + b"}" * 2_000


@pytest.mark.parametrize("kind", ["queues", "users"])
@pytest.mark.parametrize("body", [b'{"Unknown": ' + DEEP + b"}", b'{"QueueSummaryList": [{"Extra": ' + DEEP + b"}]}"])
def test_a_list_page_nested_too_deeply_fails_the_poll(kind: Literal["queues", "users"], body: bytes) -> None:
    # Found by tests/e2e/test_hostile_property.py: msgspec's depth limit raised RecursionError, which no
    # caller expects from a parser ("poll crashed"), in a field the page model skips.
    with pytest.raises(ProviderError, match=f"{kind} response: nested too deeply to be a {kind} list page"):
        parse_list_page(body, kind)


def test_merge_adds_up_the_same_group_from_two_queue_chunks() -> None:
    labels = (("media_type", "voice"),)
    a = Bucket(start=T, end=T + 900, labels=labels, values={Field.HANDLE_TIME: 10.0, Field.CONTACTS_HANDLED: 1.0})
    b = Bucket(start=T, end=T + 900, labels=labels, values={Field.HANDLE_TIME: 5.5, Field.CONTACTS_OFFERED: 3.0})
    c = Bucket(start=T + 900, end=T + 1800, labels=labels, values={Field.HANDLE_TIME: 1.0})
    assert merge([a, b, c]) == [
        Bucket(
            start=T,
            end=T + 900,
            labels=labels,
            values={Field.HANDLE_TIME: 15.5, Field.CONTACTS_HANDLED: 1.0, Field.CONTACTS_OFFERED: 3.0},
        ),
        c,
    ]


def test_list_pages_keep_standard_queues_and_usernames() -> None:
    pages = fixture("amazon_connect_list_pages.json")
    queues, token = parse_list_page(raw(pages["queues"]), "queues")
    assert [(q.id, q.name) for q in queues] == [("3f1f4c1e-6a7b-4c2d-9e8f-0a1b2c3d4e5f", "Support")]
    assert token == "AAMAAVF1ZXVlcw=="
    assert instance_arn_of_queue(queues[0].arn, "11111111-2222-4333-8444-555555555555") == INSTANCE
    users, token = parse_list_page(raw(pages["users"]), "users")
    assert [(u.id, u.name) for u in users] == [("b2c7a8e4-1f3d-4e5a-8b9c-0d1e2f3a4b5c", "ana.alvarez")]
    assert token is None


def test_an_entry_without_an_id_names_nothing_and_a_missing_list_fails() -> None:
    page = {"UserSummaryList": [{"Username": "ghost"}, {"Id": "", "Username": "empty"}, {"Id": "u1"}]}
    users, _ = parse_list_page(raw(page), "users")
    assert [(u.id, u.name) for u in users] == [("u1", "")]
    with pytest.raises(ProviderError, match="users response: `UserSummaryList` is missing"):
        parse_list_page(raw({"QueueSummaryList": []}), "users")
    with pytest.raises(ProviderError, match=r"Expected `str`, got `int` - at `\$.QueueSummaryList\[0\].Name`"):
        parse_list_page(raw({"QueueSummaryList": [{"Id": "q", "Name": 3}]}), "queues")
    with pytest.raises(ProviderError, match="queues list: response is not JSON"):
        parse_list_page(b"<html>", "queues")


def test_a_queue_arn_of_another_instance_gives_no_instance_arn() -> None:
    arn = f"{INSTANCE}/queue/{QUEUE_A}"
    assert instance_arn_of_queue(arn, "99999999-2222-4333-8444-555555555555") is None
    assert instance_arn_of_queue("arn:aws:connect:eu-west-2:1:instance/x/queue/y", "x") is None
    assert instance_arn_of_queue(QUEUE_A, QUEUE_A) is None
    assert resource_id(arn) == QUEUE_A and resource_id(QUEUE_A) == QUEUE_A


@pytest.mark.parametrize("case", fixture("amazon_connect_errors.json")["cases"], ids=lambda c: str(c["code"]))
def test_error_text_says_code_and_message(case: dict[str, Any]) -> None:
    response = httpx.Response(case["status"], headers=case["headers"], json=case["body"])
    assert error_text(response) == case["text"]


def test_error_text_of_a_page_that_is_no_aws_error() -> None:
    html = httpx.Response(502, text="<html><body>upstream error</body></html>")
    assert error_text(html) == "<html><body>upstream error</body></html>"
    coded = httpx.Response(503, headers={"x-amzn-ErrorType": "ServiceUnavailableException"}, text="down")
    assert error_text(coded) == "ServiceUnavailableException: down"
    huge = httpx.Response(400, json={"message": "x" * 10_000})
    assert error_text(huge) == "?: " + "x" * 300
    deep = httpx.Response(400, content=b"[" * 100_000 + b"]" * 100_000)
    assert error_text(deep).startswith("[[[")
