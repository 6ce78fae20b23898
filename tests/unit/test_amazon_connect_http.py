"""The Amazon Connect provider over mocked HTTP: exact SigV4-signed requests, paging, queue listing, the AWS
credential chain, throttling and every failure path (issue 17).

No test reaches the network: every request is answered by respx, and an autouse fixture gives botocore an
empty AWS environment (no AWS_* variables, shared files in a temporary directory, the instance metadata service
disabled), so that the credential chain finds only what a test puts there. Retry waits go to a RecordingSleep.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
import respx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import Bucket, Field, ProviderError
from aht_exporter.providers import amazon_connect
from aht_exporter.providers.amazon_connect import AmazonConnectConfig, AmazonConnectProvider
from aht_exporter.providers.aws import RESOLVE_EVERY, Signer
from aht_exporter.redact import MASK, RUNTIME, Redactor
from aht_exporter.registry import parse_config
from aht_exporter.scheduler import SourceRunner
from tests.helpers import RecordingSleep

pytestmark = pytest.mark.asyncio

REGION = "eu-west-2"
INSTANCE_ID = "11111111-2222-4333-8444-555555555555"
INSTANCE_ARN = f"arn:aws:connect:{REGION}:123456789012:instance/{INSTANCE_ID}"
HOST = f"https://connect.{REGION}.amazonaws.com"
METRIC_URL = f"{HOST}/metrics/data"
QUEUES_URL = f"{HOST}/queues-summary/{INSTANCE_ID}"
USERS_URL = f"{HOST}/users-summary/{INSTANCE_ID}"
KEY = "AKIAZZZZTESTKEY00001"
SECRET = "tEsT/sEcReT+kEy/0123456789abcdefghijklmn"
QUEUE_A = "3f1f4c1e-6a7b-4c2d-9e8f-0a1b2c3d4e5f"
QUEUE_B = "8a6e0804-2bd0-4672-b79d-d97027f9071a"
T = 1772445600  # 2026-03-02 10:00 UTC
NOW = T + 3600 + 7 * 60
METRICS = [
    "SUM_HANDLE_TIME",
    "CONTACTS_HANDLED",
    "SUM_INTERACTION_TIME",
    "SUM_HOLD_TIME",
    "SUM_AFTER_CONTACT_WORK_TIME",
    "CONTACTS_ABANDONED",
    "CONTACTS_QUEUED",
]
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/connect/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An AWS environment with nothing in it: whatever the host has, the chain finds only what a test adds."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


def config(**keys: Any) -> AmazonConnectConfig:
    raw: dict[str, Any] = {
        "name": "connect",
        "provider": "amazon_connect",
        "instance_arn": INSTANCE_ARN,
        "queues": [QUEUE_A, QUEUE_B],
        "access_key_id": KEY,
        "secret_access_key": SECRET,
        **keys,
    }
    return AmazonConnectConfig.model_validate({k: v for k, v in raw.items() if v is not None})


def make(
    clock: FakeClock | None = None, **keys: Any
) -> tuple[AmazonConnectProvider, SourceHealth, RecordingSleep, FakeClock]:
    health = SourceHealth("connect", "amazon_connect", 3)
    sleep = RecordingSleep()
    clock = clock or FakeClock(NOW)
    return AmazonConnectProvider(config(**keys), health, clock=clock, sleep=sleep), health, sleep, clock


def result(start: int, dimensions: dict[str, str], handle: float = 100.0, handled: float = 2.0) -> dict[str, Any]:
    return {
        "Dimensions": dimensions,
        "MetricInterval": {"Interval": "FIFTEEN_MIN", "StartTime": float(start), "EndTime": float(start + 900)},
        "Collections": [
            {"Metric": {"Name": "SUM_HANDLE_TIME"}, "Value": handle},
            {"Metric": {"Name": "CONTACTS_HANDLED"}, "Value": handled},
            {"Metric": {"Name": "SUM_HOLD_TIME"}, "Value": 7.5},
            {"Metric": {"Name": "CONTACTS_QUEUED"}, "Value": None},  # [model] "cannot be calculated": zero
        ],
    }


def aws_error(status: int, code: str, message: str, key: str = "Message") -> httpx.Response:
    return httpx.Response(status, json={key: message}, headers={"x-amzn-ErrorType": f"{code}:http://internal/"})


def verify_signature(request: httpx.Request, credentials: Credentials, region: str = REGION) -> dict[str, str]:
    """The Authorization header's parts, after checking that botocore's SigV4 signer, given the request as sent
    and the same credentials, computes the very signature it carries."""
    m = AUTHORIZATION.fullmatch(request.headers["Authorization"])
    assert m is not None, request.headers["Authorization"]
    stamp = request.headers["X-Amz-Date"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", stamp)
    assert (m["key"], m["date"], m["region"]) == (credentials.access_key, stamp[:8], region)
    names = m["signed"].split(";")
    aws = AWSRequest(
        method=request.method,
        url=str(request.url),
        data=request.content,
        headers={name: request.headers[name] for name in names},
    )
    aws.context["timestamp"] = stamp
    signer = SigV4Auth(credentials, "connect", region)
    assert signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws) == m["signature"]
    return m.groupdict()


def body_of(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


def expected_body(start: int, end: int, queues: list[str], **more: Any) -> dict[str, Any]:
    return {
        "ResourceArn": INSTANCE_ARN,
        "StartTime": start,
        "EndTime": end,
        "Interval": {"TimeZone": "UTC", "IntervalPeriod": "FIFTEEN_MIN"},
        "Filters": [{"FilterKey": "QUEUE", "FilterValues": queues}],
        "Metrics": [{"Name": name} for name in METRICS],
        "MaxResults": 100,
        "Groupings": ["CHANNEL", "QUEUE"],
        **more,
    }


def queue_entry(queue_id: str, name: str, kind: str = "STANDARD", instance: str = INSTANCE_ARN) -> dict[str, Any]:
    return {"Id": queue_id, "Arn": f"{instance}/queue/{queue_id}", "Name": name, "QueueType": kind}


# --- GetMetricDataV2 ---------------------------------------------------------------------------------------------


async def test_metric_data_request_is_exact_signed_by_sigv4_and_parsed(mock: respx.MockRouter) -> None:
    reply = {
        "MetricResults": [
            result(T, {"CHANNEL": "VOICE", "QUEUE": QUEUE_A}),
            result(T + 900, {"CHANNEL": "CHAT", "QUEUE": f"{INSTANCE_ARN}/queue/{QUEUE_B}"}, 60.0, 1.0),
        ]
    }
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json=reply))
    provider, health, _, _ = make()

    buckets = await provider.fetch(T, T + 1800)

    (call,) = route.calls
    request = call.request
    assert request.url == METRIC_URL
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("aht-exporter/")
    assert "X-Amz-Security-Token" not in request.headers  # long-term keys have no session token
    parts = verify_signature(request, Credentials(KEY, SECRET))
    assert parts["signed"] == "content-type;host;x-amz-date"
    assert body_of(request) == expected_body(T, T + 1800, [QUEUE_A, QUEUE_B])
    assert buckets == [
        Bucket(
            start=T,
            end=T + 900,
            labels=(("media_type", "voice"), ("queue", QUEUE_A)),
            values={Field.HANDLE_TIME: 100.0, Field.CONTACTS_HANDLED: 2.0, Field.HOLD_TIME: 7.5},
        ),
        Bucket(
            start=T + 900,
            end=T + 1800,
            labels=(("media_type", "chat"), ("queue", QUEUE_B)),
            values={Field.HANDLE_TIME: 60.0, Field.CONTACTS_HANDLED: 1.0, Field.HOLD_TIME: 7.5},
        ),
    ]
    assert health.api_requests == {("metric_data", "200"): 1}
    assert SECRET not in str(request.headers) and SECRET not in request.content.decode()


async def test_next_token_pages_are_followed_with_the_same_query(mock: respx.MockRouter) -> None:
    pages = [
        httpx.Response(
            200, json={"MetricResults": [result(T, {"CHANNEL": "VOICE", "QUEUE": QUEUE_A})], "NextToken": "p/2+=="}
        ),
        httpx.Response(
            200, json={"MetricResults": [result(T, {"CHANNEL": "CHAT", "QUEUE": QUEUE_A})], "NextToken": ""}
        ),
    ]
    route = mock.post(METRIC_URL).mock(side_effect=pages)
    provider, _, _, _ = make()

    buckets = await provider.fetch(T, T + 900)

    first, second = (body_of(c.request) for c in route.calls)
    assert first == expected_body(T, T + 900, [QUEUE_A, QUEUE_B])
    assert second == {**first, "NextToken": "p/2+=="}
    for call in route.calls:
        verify_signature(call.request, Credentials(KEY, SECRET))
    assert sorted(dict(b.labels)["media_type"] for b in buckets) == ["chat", "voice"]


async def test_more_than_100_queues_go_in_chunks_whose_parts_of_one_group_are_added_up(
    mock: respx.MockRouter,
) -> None:
    queues = [f"q-{i:04d}" for i in range(150)]
    route = mock.post(METRIC_URL).mock(
        side_effect=lambda request: httpx.Response(
            200,
            json={
                "MetricResults": [
                    result(T, {"CHANNEL": "VOICE"}, handle=len(body_of(request)["Filters"][0]["FilterValues"]))
                ]
            },
        )
    )
    provider, _, _, _ = make(queues=queues, group_by=["media_type"])

    buckets = await provider.fetch(T, T + 900)

    filters = [body_of(c.request)["Filters"] for c in route.calls]
    assert filters == [
        [{"FilterKey": "QUEUE", "FilterValues": queues[:100]}],
        [{"FilterKey": "QUEUE", "FilterValues": queues[100:]}],
    ]
    (bucket,) = buckets  # one group, one interval: the two chunks' parts added up
    assert bucket.labels == (("media_type", "voice"),)
    assert bucket.values == {Field.HANDLE_TIME: 150.0, Field.CONTACTS_HANDLED: 4.0, Field.HOLD_TIME: 15.0}


async def test_a_span_of_more_than_3_days_is_asked_for_in_spans_under_3_days(mock: respx.MockRouter) -> None:
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, _ = make()

    assert await provider.fetch(T - 4 * 86400, T) == []

    spans = [(body_of(c.request)["StartTime"], body_of(c.request)["EndTime"]) for c in route.calls]
    assert spans[0][0] == T - 4 * 86400 and spans[-1][1] == T and len(spans) == 2
    assert all(e - s < 3 * 86400 and s % 900 == 0 for s, e in spans)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


# --- ListQueues: every standard queue, and the instance ARN ------------------------------------------------------


def list_queues_pages(instance: str = INSTANCE_ARN) -> list[httpx.Response]:
    return [
        httpx.Response(
            200,
            json={
                "QueueSummaryList": [
                    queue_entry(QUEUE_A, "Sales", instance=instance),
                    queue_entry("aq-1", "", "AGENT"),
                ],
                "NextToken": "next/page+1=",
            },
        ),
        httpx.Response(200, json={"QueueSummaryList": [queue_entry(QUEUE_B, "Support", instance=instance)]}),
    ]


async def test_without_queues_every_standard_queue_is_listed_first_then_hourly_not_every_poll(
    mock: respx.MockRouter,
) -> None:
    listing = mock.get(url__startswith=QUEUES_URL).mock(
        side_effect=lambda request: list_queues_pages()["nextToken" in request.url.params]
    )
    data = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, clock = make(queues=[])

    await provider.fetch(T, T + 900)

    first, second = (c.request for c in listing.calls)
    assert str(first.url) == f"{QUEUES_URL}?maxResults=1000&queueTypes=STANDARD"
    # The token as SigV4 canonicalises a query ('/', '+' and '=' percent-encoded): the URL signed is the URL sent.
    assert str(second.url) == f"{QUEUES_URL}?maxResults=1000&queueTypes=STANDARD&nextToken=next%2Fpage%2B1%3D"
    for request in (first, second):
        assert request.method == "GET" and not request.content
        assert verify_signature(request, Credentials(KEY, SECRET))["signed"] == "host;x-amz-date"
    # Agent queues are left out (GetMetricDataV2 "does not support agent queues").
    assert body_of(data.calls[0].request)["Filters"] == [{"FilterKey": "QUEUE", "FilterValues": [QUEUE_A, QUEUE_B]}]
    assert (await provider.names()).queues == {QUEUE_A: "Sales", QUEUE_B: "Support"}

    clock.advance(3599)
    await provider.fetch(T + 900, T + 1800)
    assert len(listing.calls) == 2  # within the hour: the queues listed at start serve
    clock.advance(1)
    await provider.fetch(T + 1800, T + 2700)
    assert len(listing.calls) == 4 and len(data.calls) == 3  # an hour on: listed again, both pages


async def test_listed_queues_that_fail_fail_the_poll_as_a_data_request(mock: respx.MockRouter) -> None:
    mock.get(url__startswith=QUEUES_URL).mock(
        return_value=aws_error(403, "AccessDeniedException", "User is not authorized to perform connect:ListQueues")
    )
    provider, _, _, _ = make(queues=[])
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    assert str(caught.value) == (
        f"data request to connect.{REGION}.amazonaws.com GET /queues-summary/{INSTANCE_ID}: HTTP 403: "
        "AccessDeniedException: User is not authorized to perform connect:ListQueues"
    )


async def test_a_failed_hourly_relisting_keeps_the_queues_listed_before(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    refused = aws_error(429, "ThrottlingException", "Rate exceeded")
    listing = mock.get(url__startswith=QUEUES_URL).mock(
        side_effect=[*list_queues_pages(), *[refused] * 4, *list_queues_pages()]
    )
    data = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, health, _, clock = make(queues=[])
    await provider.fetch(T, T + 900)
    clock.advance(3600)

    with caplog.at_level(logging.WARNING):
        assert await provider.fetch(T + 900, T + 1800) == []  # the poll goes on with the queues it had

    assert len(listing.calls) == 6 and health.rate_limited == 4
    assert body_of(data.calls[1].request)["Filters"][0]["FilterValues"] == [QUEUE_A, QUEUE_B]
    (record,) = [r for r in caplog.records if r.name == "aht_exporter.providers.amazon_connect"]
    assert record.getMessage() == "queue listing failed: the queues listed before are used"
    assert record.__dict__["source"] == "connect"
    assert "rate limited: ThrottlingException: Rate exceeded" in record.__dict__["error"]
    await provider.fetch(T + 1800, T + 2700)  # listed again at the next poll, not an hour later
    assert len(listing.calls) == 8


async def test_an_instance_without_standard_queues_asks_for_no_data(mock: respx.MockRouter) -> None:
    mock.get(url__startswith=QUEUES_URL).mock(
        return_value=httpx.Response(200, json={"QueueSummaryList": [queue_entry("aq-1", "", "AGENT")]})
    )
    data = mock.post(METRIC_URL)
    provider, _, _, _ = make(queues=[])
    assert await provider.fetch(T, T + 900) == []
    assert not data.calls


async def test_instance_id_and_region_learn_the_instance_arn_from_a_queue_arn(mock: respx.MockRouter) -> None:
    listing = mock.get(url__startswith=QUEUES_URL).mock(side_effect=list_queues_pages())
    data = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, _ = make(instance_arn=None, instance_id=INSTANCE_ID, region=REGION, queues=[QUEUE_B])

    await provider.fetch(T, T + 900)
    await provider.fetch(T + 900, T + 1800)

    assert len(listing.calls) == 2  # once, both pages: the ARN is learned, and `queues` is the filter
    assert [body_of(c.request)["ResourceArn"] for c in data.calls] == [INSTANCE_ARN, INSTANCE_ARN]
    assert body_of(data.calls[0].request)["Filters"][0]["FilterValues"] == [QUEUE_B]


async def test_instance_id_whose_queues_name_no_instance_arn_fails_clearly(mock: respx.MockRouter) -> None:
    other = INSTANCE_ARN.replace("11111111", "99999999")
    mock.get(url__startswith=QUEUES_URL).mock(side_effect=list_queues_pages(instance=other))
    data = mock.post(METRIC_URL)
    provider, _, _, _ = make(instance_arn=None, instance_id=INSTANCE_ID, region=REGION)
    with pytest.raises(
        ProviderError, match=r"^ListQueues: no queue ARN names the instance \(set instance_arn instead\)$"
    ):
        await provider.fetch(T, T + 900)
    assert not data.calls


# --- throttling, errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 400])
async def test_throttling_is_retried_and_counted_whatever_its_status(mock: respx.MockRouter, status: int) -> None:
    ok = httpx.Response(200, json={"MetricResults": [result(T, {"CHANNEL": "VOICE", "QUEUE": QUEUE_A})]})
    route = mock.post(METRIC_URL).mock(side_effect=[aws_error(status, "ThrottlingException", "Rate exceeded"), ok])
    provider, health, sleep, _ = make()

    buckets = await provider.fetch(T, T + 900)

    assert len(buckets) == 1 and len(route.calls) == 2
    assert health.rate_limited == 1  # aht_exporter_rate_limited_total
    assert health.api_requests == {("metric_data", str(status)): 1, ("metric_data", "200"): 1}
    assert len(sleep.waits) == 1 and 0 < sleep.waits[0] <= 30
    # The retry is signed anew (its own X-Amz-Date), and verifies.
    for call in route.calls:
        verify_signature(call.request, Credentials(KEY, SECRET))


async def test_throttling_that_lasts_fails_the_poll_as_rate_limited(mock: respx.MockRouter) -> None:
    mock.post(METRIC_URL).mock(return_value=aws_error(429, "ThrottlingException", "Rate exceeded"))
    provider, health, sleep, _ = make()
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    assert str(caught.value) == (
        f"data request to connect.{REGION}.amazonaws.com POST /metrics/data: "
        "rate limited: ThrottlingException: Rate exceeded"
    )
    assert health.rate_limited == 4 and len(sleep.waits) == 3


async def test_a_400_that_is_no_throttling_fails_at_once(mock: respx.MockRouter) -> None:
    route = mock.post(METRIC_URL).mock(
        return_value=aws_error(400, "InvalidRequestException", "The Filters are invalid")
    )
    provider, health, sleep, _ = make()
    with pytest.raises(ProviderError, match=r"HTTP 400: InvalidRequestException: The Filters are invalid$"):
        await provider.fetch(T, T + 900)
    assert len(route.calls) == 1 and health.rate_limited == 0 and sleep.waits == []


@pytest.mark.parametrize(
    ("status", "code", "message", "key"),
    [
        (403, "InvalidSignatureException", "The request signature we calculated does not match", "message"),
        (403, "UnrecognizedClientException", "The security token included in the request is invalid.", "message"),
        (401, "ExpiredTokenException", "The security token included in the request is expired", "Message"),
        (403, "AccessDeniedException", "User is not authorized to perform connect:GetMetricDataV2", "Message"),
    ],
)
async def test_auth_failures_say_aws_s_code_and_words_and_are_not_retried(
    mock: respx.MockRouter, status: int, code: str, message: str, key: str
) -> None:
    route = mock.post(METRIC_URL).mock(return_value=aws_error(status, code, message, key))
    provider, health, sleep, _ = make()
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    assert str(caught.value) == (
        f"data request to connect.{REGION}.amazonaws.com POST /metrics/data: HTTP {status}: {code}: {message}"
    )
    assert SECRET not in str(caught.value)
    # A 401 (expired temporary credentials) resolves the credentials again and resends once, newly signed;
    # a 403 is final at once. Neither is retried as a failure would be.
    assert len(route.calls) == (2 if status == 401 else 1) and sleep.waits == [] and health.rate_limited == 0
    if status == 401:
        first, second = (call.request for call in route.calls)
        assert first.content == second.content and "Signature=" in second.headers["Authorization"]


@pytest.mark.parametrize("echo", ["header", "signature"])
async def test_an_echoed_authorization_header_or_signature_is_masked(mock: respx.MockRouter, echo: str) -> None:
    def echoing(request: httpx.Request) -> httpx.Response:
        header = request.headers["Authorization"]
        shown = header if echo == "header" else header.rsplit("Signature=", 1)[1]
        return aws_error(403, "InvalidSignatureException", f"The request signature {shown} does not match")

    route = mock.post(METRIC_URL).mock(side_effect=echoing)
    provider, _, _, _ = make()
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    sent = route.calls[0].request.headers["Authorization"]
    text = str(caught.value)
    assert sent.rsplit("Signature=", 1)[1] not in text and SECRET not in text
    assert MASK in text and "HTTP 403: InvalidSignatureException: The request signature" in text
    assert sent in RUNTIME  # and so masked in any log line too


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            httpx.Response(200, text="<html>Bad gateway</html>"),
            "metric data: response is not JSON (HTTP 200, '<html>Bad gateway</html>')",
        ),
        (httpx.Response(200, text='{"MetricResults": [{"Dim'), "metric data: response is not JSON (HTTP 200"),
        (
            httpx.Response(200, json={"message": "Internal server error"}),
            "metric data response: the vendor answered 200 with an error: ?: Internal server error",
        ),
        (
            httpx.Response(200, json={"__type": "com.amazonaws.connect#InternalServiceException", "Message": "Oops"}),
            "the vendor answered 200 with an error: InternalServiceException: Oops",
        ),
        (
            httpx.Response(200, json={"MetricResults": [{"Collections": []}]}),
            "metric data response: MetricResults[0].MetricInterval is missing",
        ),
    ],
)
async def test_a_reply_that_is_not_metric_data_fails_naming_the_request(
    mock: respx.MockRouter, reply: httpx.Response, error: str
) -> None:
    mock.post(METRIC_URL).mock(return_value=reply)
    provider, _, _, _ = make()
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    assert str(caught.value).startswith(f"data request to connect.{REGION}.amazonaws.com POST /metrics/data: ")
    assert error in str(caught.value)


async def test_timeouts_are_retried_then_fail_the_poll(mock: respx.MockRouter) -> None:
    route = mock.post(METRIC_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    provider, health, sleep, _ = make()
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    assert str(caught.value) == f"data request to connect.{REGION}.amazonaws.com POST /metrics/data: timed out"
    assert len(route.calls) == 4 and len(sleep.waits) == 3
    assert health.api_requests == {("metric_data", "error"): 4}


async def test_a_5xx_is_retried_and_a_later_success_counts(mock: respx.MockRouter) -> None:
    ok = httpx.Response(200, json={"MetricResults": []})
    route = mock.post(METRIC_URL).mock(
        side_effect=[aws_error(500, "InternalServiceException", "Request processing failed"), ok]
    )
    provider, health, _, _ = make()
    assert await provider.fetch(T, T + 900) == []
    assert len(route.calls) == 2 and health.rate_limited == 0


# --- names ----------------------------------------------------------------------------------------------------


def user_pages(request: httpx.Request) -> httpx.Response:
    """ListUsers, two users a page, for ever: a token always follows."""
    page = int(request.url.params.get("nextToken", "0"))
    users = [
        {
            "Id": f"agent-{2 * page + i}",
            "Arn": f"{INSTANCE_ARN}/agent/agent-{2 * page + i}",
            "Username": f"user{2 * page + i}",
        }
        for i in range(2)
    ]
    return httpx.Response(200, json={"UserSummaryList": users, "NextToken": str(page + 1)})


async def test_agent_and_queue_names_are_listed_and_bounded_by_max_names(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amazon_connect, "MAX_NAMES", 5)
    users = mock.get(url__startswith=USERS_URL).mock(side_effect=user_pages)
    queues = mock.get(url__startswith=QUEUES_URL).mock(side_effect=list_queues_pages())
    provider, health, _, _ = make(group_by=["queue", "agent"])

    names = await provider.names()

    assert names.agents == {f"agent-{i}": f"user{i}" for i in range(5)}  # 3 pages read, 5 kept
    assert names.queues == {QUEUE_A: "Sales", QUEUE_B: "Support"}
    assert [str(c.request.url) for c in users.calls] == [
        f"{USERS_URL}?maxResults=1000",
        f"{USERS_URL}?maxResults=1000&nextToken=1",
        f"{USERS_URL}?maxResults=1000&nextToken=2",
    ]
    for call in [*users.calls, *queues.calls]:
        verify_signature(call.request, Credentials(KEY, SECRET))
    assert health.api_requests == {("users", "200"): 3, ("queues", "200"): 2}


async def test_no_name_lookup_that_is_not_needed(mock: respx.MockRouter) -> None:
    provider, health, _, _ = make(group_by=["media_type"])
    names = await provider.names()
    assert (names.queues, names.agents) == ({}, {}) and health.api_requests == {}


async def test_a_names_failure_never_fails_the_poll(mock: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    mock.post(METRIC_URL).mock(
        return_value=httpx.Response(
            200, json={"MetricResults": [result(T, {"CHANNEL": "VOICE", "QUEUE": QUEUE_A, "AGENT": "a1"})]}
        )
    )
    users = mock.get(url__startswith=USERS_URL).mock(
        return_value=aws_error(403, "AccessDeniedException", "User is not authorized to perform connect:ListUsers")
    )
    provider, health, _, clock = make(group_by=["media_type", "queue", "agent"], queues=[QUEUE_A])
    mock.get(url__startswith=QUEUES_URL).mock(side_effect=list_queues_pages())
    runner = SourceRunner(provider.config, provider, clock=clock, redactor=Redactor([SECRET]))

    with caplog.at_level(logging.WARNING):
        assert await runner.poll(), health.last_error

    assert health.up and health.last_error is None and len(users.calls) == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "name lookup failed"]
    assert "AccessDeniedException: User is not authorized to perform connect:ListUsers" in record.__dict__["error"]
    await provider.aclose()


# --- credentials -------------------------------------------------------------------------------------------------


async def test_keys_from_the_environment_sign_when_none_are_configured(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment/secret/key/0123456789abcdefgh")
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, _ = make(access_key_id=None, secret_access_key=None)

    await provider.fetch(T, T + 900)

    request = route.calls[0].request
    verify_signature(request, Credentials("AKIAENVIRONMENT00001", "environment/secret/key/0123456789abcdefgh"))
    assert "X-Amz-Security-Token" not in request.headers


async def test_a_profile_of_the_shared_files_gives_temporary_keys_and_their_session_token(
    mock: respx.MockRouter, no_aws_environment: Path
) -> None:
    (no_aws_environment / "credentials").write_text(
        "[default]\naws_access_key_id = AKIADEFAULTPROFILE01\naws_secret_access_key = default-secret-0123456789\n"
        "[reporting]\naws_access_key_id = ASIAREPORTINGPROF001\naws_secret_access_key = reporting/secret/0123456789\n"
        "aws_session_token = FwoGZXIvYXdzEJr//////////session+token/0123456789==\n"
    )
    (no_aws_environment / "config").write_text("[profile reporting]\nregion = eu-west-2\n")
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, _ = make(access_key_id=None, secret_access_key=None, profile="reporting")

    await provider.fetch(T, T + 900)

    request = route.calls[0].request
    token = "FwoGZXIvYXdzEJr//////////session+token/0123456789=="
    assert request.headers["X-Amz-Security-Token"] == token
    parts = verify_signature(request, Credentials("ASIAREPORTINGPROF001", "reporting/secret/0123456789", token))
    assert parts["signed"] == "content-type;host;x-amz-date;x-amz-security-token"
    # The chain's secrets are nowhere in the config: known to the redactor now, an echo of them is masked.
    assert token in RUNTIME and "reporting/secret/0123456789" in RUNTIME


async def test_a_profile_that_does_not_exist_fails_the_poll_saying_so(mock: respx.MockRouter) -> None:
    data = mock.post(METRIC_URL)
    provider, _, _, _ = make(access_key_id=None, secret_access_key=None, profile="nobody")
    with pytest.raises(ProviderError, match=r"^AWS credentials: The config profile \(nobody\) could not be found$"):
        await provider.fetch(T, T + 900)
    assert not data.calls


async def test_no_credentials_anywhere_fails_quickly_and_sends_nothing(mock: respx.MockRouter) -> None:
    data = mock.post(METRIC_URL)
    provider, _, _, _ = make(access_key_id=None, secret_access_key=None)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await provider.fetch(T, T + 900)
    assert time.monotonic() - started < 5  # no metadata service was waited for
    assert str(caught.value) == (
        "AWS credentials: none found (set access_key_id and secret_access_key, a profile, the AWS_* environment, "
        "or give this host a role)"
    )
    assert not data.calls


async def test_credentials_are_resolved_in_a_thread_before_each_poll_while_the_loop_runs_on(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`refresh` may call STS or the metadata service: here it waits for a signal that only the event loop
    can give. Were it run on the loop, the signal would never come (and the bounded wait would fail)."""
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    signal = threading.Event()
    threads: list[int] = []
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    real: Callable[[Signer], None] = Signer.refresh

    def slow_refresh(self: Signer) -> None:
        threads.append(threading.get_ident())
        loop.call_soon_threadsafe(started.set)
        assert signal.wait(timeout=5), "the event loop was blocked while credentials were resolved"
        real(self)

    monkeypatch.setattr(Signer, "refresh", slow_refresh)
    provider, _, _, _ = make()

    async def give_the_signal() -> None:
        await started.wait()  # runs only if the loop is free while refresh() waits
        signal.set()

    await asyncio.wait_for(asyncio.gather(provider.fetch(T, T + 900), give_the_signal()), timeout=10)
    assert threads and threads[0] != threading.get_ident() and len(route.calls) == 1

    signal.clear()
    started.clear()
    threads.clear()
    await asyncio.wait_for(asyncio.gather(provider.fetch(T + 900, T + 1800), give_the_signal()), timeout=10)
    assert len(threads) == 1 and len(route.calls) == 2  # resolved again, before the next poll


async def test_the_chain_is_walked_once_per_resolve_period_not_every_poll(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Role credentials (STS, web identity) refresh themselves before they expire: walking the chain anew for
    every poll would cost an STS call each time. It is walked again after RESOLVE_EVERY, for rotated keys."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment/secret/key/0123456789abcdefgh")
    walks: list[str | None] = []
    real = botocore.session.Session.get_credentials

    def counted(self: botocore.session.Session) -> Any:
        walks.append(self.profile)
        return real(self)

    monkeypatch.setattr(botocore.session.Session, "get_credentials", counted)
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, _ = make(access_key_id=None, secret_access_key=None)
    now = [1000.0]
    provider.signer.monotonic = lambda: now[0]

    await provider.fetch(T, T + 900)
    now[0] += RESOLVE_EVERY - 1
    await provider.fetch(T, T + 900)
    assert len(walks) == 1
    now[0] += 1
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAROTATEDKEY000002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotated/secret/key/0123456789abcdefghijk")
    await provider.fetch(T, T + 900)
    assert len(walks) == 2 and len(route.calls) == 3
    verify_signature(
        route.calls[-1].request, Credentials("AKIAROTATEDKEY000002", "rotated/secret/key/0123456789abcdefghijk")
    )


async def test_configured_keys_never_walk_the_chain(mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: botocore.session.Session) -> Any:
        raise AssertionError("the chain was walked although keys are configured")

    monkeypatch.setattr(botocore.session.Session, "get_credentials", refused)
    mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider, _, _, _ = make()
    assert await provider.fetch(T, T + 900) == []


async def test_a_secret_access_key_file_signs_like_the_key_itself(mock: respx.MockRouter, tmp_path: Path) -> None:
    (tmp_path / "connect_secret").write_text(SECRET + "\n")
    text = (
        "sources:\n"
        "  - name: connect\n"
        "    provider: amazon_connect\n"
        f"    instance_arn: {INSTANCE_ARN}\n"
        f"    queues: [{QUEUE_A}]\n"
        f"    access_key_id: {KEY}\n"
        f"    secret_access_key_file: {tmp_path / 'connect_secret'}\n"
    )
    (source,) = parse_config(text, "<test>", {}).sources
    assert isinstance(source, AmazonConnectConfig)
    route = mock.post(METRIC_URL).mock(return_value=httpx.Response(200, json={"MetricResults": []}))
    provider = AmazonConnectProvider(source, SourceHealth("connect", "amazon_connect", 3), clock=FakeClock(NOW))
    await provider.fetch(T, T + 900)
    verify_signature(route.calls[0].request, Credentials(KEY, SECRET))
