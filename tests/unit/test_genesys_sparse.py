"""Genesys's sparse replies (issue 13): `{"count": 0}` without `sum`, a group without a dimension it was grouped by.

The reply is genesys_aggregates_sparse.json, derived from genesys_aggregates_queue_media.json (the shape of the
conversation aggregates query, https://developer.genesys.cloud/api/rest/v2/analytics/conversation_aggregate,
and of the SDK's ConversationAggregateQueryResponse, which test_genesys_sdk_contract.py checks every
genesys_*.json fixture against). Its zeros come as `{"count": 0}` without `sum`, `min` or `max`: every stat is
optional in the SDK's StatisticalSummary (MyPureCloud/platform-client-sdk-python,
build/docs/StatisticalSummary.md); whether the aggregates query sends them so is unverified. Its second group
has no `queueId`: an outbound call outside any queue. JSON allows no comment, so the citation is here.
docs/providers/genesys.md ("Real-tenant cases") records what the code does with each shape.
"""

import json
from typing import Any

import pytest
import respx

from aht_exporter.health import SourceHealth
from aht_exporter.model import MISSING_LABEL, Field, ProviderError, make_labels
from aht_exporter.providers.genesys import GenesysProvider, fields_for, parse_aggregates_json
from aht_exporter.timebuckets import parse_iso
from tests.helpers import RecordingSleep, fixture, parse_aggregates
from tests.unit.genesys_config import API, LOGIN, genesys_config

Q1 = "1a2b3c4d-0000-4000-8000-000000000001"
NINE = int(parse_iso("2026-03-02T09:00:00Z"))
HALF = NINE + 1800
QUERY = f"{API}/api/v2/analytics/conversations/aggregates/query"
BUCKET = "2026-03-02T09:00:00.000Z/2026-03-02T09:30:00.000Z"
ZERO = dict.fromkeys(fields_for(["media_type", "queue"]), 0.0)


def reply(stats: dict[str, Any], metric: str = "tHandle", group: dict[str, Any] | None = None) -> dict[str, Any]:
    """One group, one bucket, one metric with `stats`."""
    group = {"mediaType": "voice", "queueId": Q1} if group is None else group
    return {
        "results": [{"group": group, "data": [{"interval": BUCKET, "metrics": [{"metric": metric, "stats": stats}]}]}]
    }


# --- {"count": 0} without sum -------------------------------------------------------------------------------------


def test_the_sparse_sample_reads_count_0_without_sum_as_zero_and_the_group_without_a_queue_as_none() -> None:
    buckets = parse_aggregates(fixture("genesys_aggregates_sparse.json"), ["media_type", "queue"])
    assert [(b.start, b.end, b.labels) for b in buckets] == [
        (NINE, HALF, make_labels(media_type="voice", queue=Q1)),
        (HALF, HALF + 1800, make_labels(media_type="voice", queue=Q1)),
        (NINE, HALF, make_labels(media_type="voice", queue=MISSING_LABEL)),
    ]
    assert [dict(b.values) for b in buckets] == [
        {
            **ZERO,  # tHeldComplete and tAbandon are {"count": 0}
            Field.HANDLE_TIME: 4519876 / 1000,
            Field.CONTACTS_HANDLED: 14,
            Field.TALK_TIME: 3900123 / 1000,
            Field.ACW_TIME: 409303 / 1000,
            Field.CONTACTS_ANSWERED: 14,
            Field.CONTACTS_OFFERED: 14,
        },
        {**ZERO, Field.CONTACTS_ABANDONED: 2, Field.CONTACTS_OFFERED: 2},  # nobody answered: five {"count": 0}
        {
            Field.HANDLE_TIME: 300.0,
            Field.CONTACTS_HANDLED: 1,
            Field.TALK_TIME: 290.0,
            Field.HOLD_TIME: 0.0,
            Field.ACW_TIME: 10.0,
        },
    ]


@pytest.mark.parametrize(
    ("metric", "field"),
    [
        ("tHandle", Field.HANDLE_TIME),
        ("tTalkComplete", Field.TALK_TIME),
        ("tHeldComplete", Field.HOLD_TIME),
        ("tAcw", Field.ACW_TIME),
    ],
)
def test_a_count_of_0_without_sum_is_a_sum_of_0(metric: str, field: Field) -> None:
    [bucket] = parse_aggregates(reply({"count": 0}, metric), ["queue"])
    assert bucket.values[field] == 0.0
    assert bucket.labels == make_labels(queue=Q1)


def test_a_count_of_0_with_its_sum_of_0_is_zero_too() -> None:
    [bucket] = parse_aggregates(reply({"count": 0, "sum": 0}), ["queue"])
    assert bucket.values == {Field.HANDLE_TIME: 0.0, Field.CONTACTS_HANDLED: 0.0}


# --- a group without a dimension it was grouped by -------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ..., ""], ids=["null", "absent", "empty"])
@pytest.mark.parametrize(
    ("label", "dimension"), [("queue", "queueId"), ("agent", "userId"), ("media_type", "mediaType")]
)
def test_a_dimension_the_group_lacks_is_the_label_none(label: str, dimension: str, value: object) -> None:
    group: dict[str, Any] = {"mediaType": "voice", "queueId": Q1, "userId": "u-1"}
    if value is ...:
        del group[dimension]
    else:
        group[dimension] = value
    [bucket] = parse_aggregates(reply({"count": 2, "sum": 1000}, group=group), ["media_type", "queue", "agent"])
    want = {"media_type": "voice", "queue": Q1, "agent": "u-1", label: MISSING_LABEL}
    assert bucket.labels == make_labels(**want)
    assert bucket.values == {Field.HANDLE_TIME: 1.0, Field.CONTACTS_HANDLED: 2}


def test_the_missing_label_is_never_the_empty_string() -> None:
    for group_by in (["queue"], ["agent"], ["media_type", "queue", "agent"]):
        for bucket in parse_aggregates(fixture("genesys_aggregates_sparse.json"), group_by):
            assert all(value for _, value in bucket.labels), bucket.labels


# --- what still fails ------------------------------------------------------------------------------------------------

WHERE = "aggregates response: results[0].data[0].metrics[0].stats"


@pytest.mark.parametrize(
    ("metric", "stats", "message"),
    [
        # A sum is left out only when nothing was counted: beside a count above 0 it is missing data.
        ("tHandle", {"count": 3}, f"{WHERE}.sum is missing, though count is 3"),
        ("tAcw", {"count": 1, "max": 5, "min": 5}, f"{WHERE}.sum is missing, though count is 1"),
        # The count says how much was measured: never taken for 0, not even beside a sum of 0.
        ("tHandle", {"sum": 5000}, f"{WHERE}.count is missing"),
        ("tHandle", {"sum": 0}, f"{WHERE}.count is missing"),
        ("tAnswered", {"sum": 5000}, f"{WHERE}.count is missing"),
        ("nOffered", {}, f"{WHERE}.count is missing"),
        ("tAcw", {}, f"{WHERE}.count is missing (and so is sum)"),
    ],
)
def test_a_stat_that_is_not_a_zero_still_fails_naming_its_path(
    metric: str, stats: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_aggregates(reply(stats, metric), ["queue"])
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("stats", "path"),
    [('{"count": 0, "sum": null}', "sum"), ('{"count": null}', "count"), ('{"count": "0"}', "count")],
)
def test_a_wrong_type_still_fails_the_poll_naming_its_path(stats: str, path: str) -> None:
    raw = json.dumps(reply({})).replace("{}", stats).encode()
    with pytest.raises(ProviderError, match=rf"at `\$\.results\[0\]\.data\[0\]\.metrics\[0\]\.stats\.{path}`"):
        parse_aggregates_json(raw, ["queue"])


def test_a_dimension_of_the_wrong_type_still_fails() -> None:
    with pytest.raises(ProviderError, match=r"^aggregates response: results\[0\]\.group\.queueId is not a string$"):
        parse_aggregates(reply({"count": 0}, group={"queueId": 7}), ["queue"])


# --- over HTTP -----------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_poll_answered_with_count_0_stats_and_a_group_without_a_queue_succeeds() -> None:
    provider = GenesysProvider(genesys_config(), SourceHealth("genesys-eu", "genesys", 3), sleep=RecordingSleep())
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(f"{LOGIN}/oauth/token").respond(200, json={"access_token": "tok", "expires_in": 86400})
        query = mock.post(QUERY).respond(200, json=fixture("genesys_aggregates_sparse.json"))
        buckets = await provider.fetch(NINE, NINE + 3600)
    await provider.aclose()
    (request,) = [call.request for call in query.calls]
    assert request.headers["Authorization"] == "Bearer tok"
    assert json.loads(request.content) == {
        "interval": "2026-03-02T09:00:00.000Z/2026-03-02T10:00:00.000Z",
        "granularity": "PT30M",
        "groupBy": ["mediaType", "queueId"],
        "metrics": ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon", "nOffered"],
    }
    assert buckets == parse_aggregates(fixture("genesys_aggregates_sparse.json"), ["media_type", "queue"])
    assert {dict(b.labels)["queue"] for b in buckets} == {Q1, MISSING_LABEL}
