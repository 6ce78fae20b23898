"""`provider: amazon_connect` config keys (issue 17): instance_arn, or instance_id + region; bucket 15m or 30m;
group_by; queues; base_url. Each wrong value is refused with the key that is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from aht_exporter.providers.amazon_connect import AmazonConnectConfig
from aht_exporter.providers.amazon_connect_api import metric_data_body

ARN = "arn:aws:connect:eu-west-2:123456789012:instance/11111111-2222-4333-8444-555555555555"
INSTANCE_ID = "11111111-2222-4333-8444-555555555555"


def config(**keys: Any) -> AmazonConnectConfig:
    return AmazonConnectConfig.model_validate({"name": "connect", "provider": "amazon_connect", **keys})


def problems(**keys: Any) -> list[tuple[str, str]]:
    return list(config(**keys).problems())


def test_an_instance_arn_gives_region_endpoint_and_the_defaults() -> None:
    c = config(instance_arn=ARN)
    assert problems(instance_arn=ARN) == []
    assert c.arn_parts == ("aws", "eu-west-2", "123456789012", INSTANCE_ID)
    assert c.api_url == "https://connect.eu-west-2.amazonaws.com"
    assert (c.bucket_seconds, c.group_by, c.queues, c.refresh_seconds) == (900, ["media_type", "queue"], [], 7200)


def test_instance_id_and_region_need_no_arn_and_china_has_its_own_domain() -> None:
    assert problems(instance_id=INSTANCE_ID, region="us-east-1") == []
    assert config(instance_id=INSTANCE_ID, region="us-east-1").api_url == "https://connect.us-east-1.amazonaws.com"
    china = config(instance_arn=ARN.replace("arn:aws:", "arn:aws-cn:").replace("eu-west-2", "cn-north-1"))
    assert china.api_url == "https://connect.cn-north-1.amazonaws.com.cn"
    assert config(instance_id=INSTANCE_ID, region="cn-north-1").api_url.endswith(".amazonaws.com.cn")


def test_base_url_replaces_the_endpoint_for_the_simulator() -> None:
    c = config(instance_arn=ARN, base_url="http://127.0.0.1:8080/")
    assert problems(instance_arn=ARN, base_url="http://127.0.0.1:8080/") == []
    assert c.api_url == "http://127.0.0.1:8080"
    assert problems(instance_arn=ARN, base_url="http://connect.example.com") == [
        ("base_url", "plain http:// is refused for a non-loopback host (set allow_insecure_http: true to allow it)")
    ]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({}, ("instance_arn", "set either instance_arn, or instance_id + region")),
        (
            {"instance_arn": ARN, "instance_id": INSTANCE_ID},
            ("instance_arn", "set either instance_arn, or instance_id + region"),
        ),
        (
            {"instance_arn": ARN.replace("instance/", "queue/")},
            ("instance_arn", "is not an instance ARN (arn:aws:connect:REGION:ACCOUNT:instance/ID)"),
        ),
        (
            {"instance_arn": ARN, "region": "us-east-1"},
            ("region", "us-east-1 is not the region of instance_arn (eu-west-2)"),
        ),
        ({"instance_id": INSTANCE_ID}, ("region", "is required with instance_id")),
        (
            {"instance_arn": ARN, "bucket": "5m"},
            ("bucket", "5m is not supported (use 15m or 30m: FIFTEEN_MIN or THIRTY_MIN)"),
        ),
        (
            {"instance_arn": ARN, "bucket": "30m", "windows": ["15m"]},
            ("windows[0]", "15m is not a multiple of the source's 30m bucket"),
        ),
        ({"instance_arn": ARN, "group_by": ["queue", "queue"]}, ("group_by", "lists a label twice")),
        (
            {"instance_arn": ARN, "queues": ["q1", ""]},
            ("queues[1]", "is not a queue id or ARN (1 to 250 printable characters)"),
        ),
        (
            {"instance_arn": ARN, "queues": ["q\n1"]},
            ("queues[0]", "is not a queue id or ARN (1 to 250 printable characters)"),
        ),
        (
            {"instance_arn": ARN, "queues": ["q1", f"{ARN}/queue/q1"]},
            ("queues[1]", f"{ARN}/queue/q1 is listed twice"),
        ),
    ],
)
def test_a_wrong_key_is_named(keys: dict[str, Any], problem: tuple[str, str]) -> None:
    assert problem in problems(**keys)


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ({"instance_arn": ARN, "group_by": ["routing_profile"]}, ("group_by", 0)),
        ({"instance_id": "not-a-uuid", "region": "us-east-1"}, ("instance_id",)),
        ({"instance_id": INSTANCE_ID, "region": "Europe"}, ("region",)),
        ({"instance_arn": ARN, "client_secret": "x"}, ("client_secret",)),
        ({"instance_arn": ARN, "bucket": "fifteen"}, ("bucket",)),
    ],
)
def test_a_value_of_the_wrong_form_or_an_unknown_key_is_refused(keys: dict[str, Any], where: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**keys)
    assert caught.value.errors()[0]["loc"] == where


@pytest.mark.parametrize("bucket", ["15m", "30m"])
def test_the_bucket_is_the_interval_period(bucket: str) -> None:
    c = config(instance_arn=ARN, bucket=bucket, windows=["30m", "1h"])
    body = metric_data_body(ARN, 0, 1800, c.bucket_seconds, c.group_by, ["q1"])
    assert body["Interval"] == {
        "TimeZone": "UTC",
        "IntervalPeriod": {"15m": "FIFTEEN_MIN", "30m": "THIRTY_MIN"}[bucket],
    }
