import pytest

from aht_exporter.model import Field, ProviderError, make_labels
from aht_exporter.providers.genesys import fields_for, metric_names, parse_aggregates, query_body
from aht_exporter.timebuckets import parse_iso
from tests.helpers import fixture
from tests.unit.genesys_config import genesys_config

Q1 = "1a2b3c4d-0000-4000-8000-000000000001"
Q2 = "1a2b3c4d-0000-4000-8000-000000000002"
NINE = int(parse_iso("2026-03-02T09:00:00Z"))


def test_seed_000_sample_gives_handle_time_and_contacts_per_media_type() -> None:
    buckets = parse_aggregates(fixture("genesys_seed000_response.json"), ["media_type"])
    by_media = {dict(b.labels)["media_type"]: b for b in buckets}
    assert set(by_media) == {"message", "voice"}
    message = by_media["message"].values
    assert message[Field.HANDLE_TIME] == pytest.approx(963943.429)
    assert message[Field.CONTACTS_HANDLED] == 1113
    # AHT exactly tHandle.sum / tHandle.count / 1000
    assert message[Field.HANDLE_TIME] / message[Field.CONTACTS_HANDLED] == pytest.approx(963943429 / 1113 / 1000)
    voice = by_media["voice"].values
    assert voice[Field.HANDLE_TIME] / voice[Field.CONTACTS_HANDLED] == pytest.approx(430537628 / 1618 / 1000)
    assert by_media["voice"].start == int(parse_iso("2025-11-10T00:00:00Z"))
    assert by_media["voice"].end == int(parse_iso("2025-11-18T00:00:00Z"))  # .999 rounds to the whole second


def test_realistic_sample_maps_every_metric_to_its_field() -> None:
    buckets = parse_aggregates(fixture("genesys_aggregates_queue_media.json"), ["media_type", "queue"])
    assert len(buckets) == 4
    first = buckets[0]
    assert first.labels == make_labels(media_type="voice", queue=Q1)
    assert (first.start, first.end) == (NINE, NINE + 1800)
    assert first.values == {
        Field.HANDLE_TIME: pytest.approx(4519.876),
        Field.CONTACTS_HANDLED: 14,
        Field.TALK_TIME: pytest.approx(3900.123),
        Field.HOLD_TIME: pytest.approx(210.45),
        Field.ACW_TIME: pytest.approx(409.303),
        Field.CONTACTS_ANSWERED: 14,
        Field.CONTACTS_ABANDONED: 2,
        Field.CONTACTS_OFFERED: 16,
    }
    # A metric we did not ask for (oServiceLevel) is ignored; one the bucket lacks is simply absent.
    second = buckets[1]
    assert Field.HOLD_TIME not in second.values
    assert second.values[Field.CONTACTS_OFFERED] == 9


def test_group_keys_not_asked_for_are_ignored_and_missing_ones_are_empty() -> None:
    buckets = parse_aggregates(fixture("genesys_aggregates_queue_media.json"), ["media_type", "queue"])
    assert buckets[2].labels == make_labels(media_type="chat", queue=Q2)  # divisionId dropped
    assert buckets[3].labels == make_labels(media_type="voice", queue="")  # outbound call: no queue


def test_media_type_is_lower_case() -> None:
    payload = {"results": [{"group": {"mediaType": "Voice"}, "data": []}]}
    assert parse_aggregates(payload, ["media_type"]) == []
    payload["results"][0]["data"] = [{"interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z", "metrics": []}]  # type: ignore[index]
    assert parse_aggregates(payload, ["media_type"])[0].labels == (("media_type", "voice"),)


@pytest.mark.parametrize("payload", [{}, {"results": []}, {"results": [{"group": {"mediaType": "voice"}}]}])
def test_no_data_is_no_buckets_not_an_error(payload: object) -> None:
    assert parse_aggregates(payload, ["media_type"]) == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "Expected `object`, got `array`"),
        ({"results": {}}, r"Expected `array`, got `object` - at `\$.results`"),
        ({"results": ["x"]}, r"Expected `object`, got `str` - at `\$.results\[0\]`"),
        ({"results": [{"group": [], "data": []}]}, r"Expected `object`, got `array` - at `\$.results\[0\].group`"),
        ({"results": [{"group": {"mediaType": 7}, "data": []}]}, r"results\[0\].group.mediaType is not a string"),
        ({"results": [{"group": {}, "data": {}}]}, r"Expected `array`, got `object` - at `\$.results\[0\].data`"),
        (
            {"results": [{"group": {}, "data": [{"metrics": []}]}]},
            r"missing required field `interval` - at `\$.results\[0\].data\[0\]`",
        ),
        ({"results": [{"group": {}, "data": [{"interval": "yesterday", "metrics": []}]}]}, "not an ISO-8601"),
        (
            {"results": [{"group": {}, "data": [{"interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z"}]}]},
            None,
        ),
        (
            {
                "results": [
                    {
                        "group": {},
                        "data": [
                            {
                                "interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z",
                                "metrics": [{"metric": "tHandle"}],
                            }
                        ],
                    }
                ]
            },
            r"missing required field `stats` - at `\$.results\[0\].data\[0\].metrics\[0\]`",
        ),
        (
            {
                "results": [
                    {
                        "group": {},
                        "data": [{"interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z", "metrics": [{"stats": {}}]}],
                    }
                ]
            },
            r"missing required field `metric` - at `\$.results\[0\].data\[0\].metrics\[0\]`",
        ),
        (
            {
                "results": [
                    {
                        "group": {},
                        "data": [
                            {
                                "interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z",
                                "metrics": [{"metric": "tHandle", "stats": {"sum": "12"}}],
                            }
                        ],
                    }
                ]
            },
            r"Expected `float`, got `str` - at `\$.results\[0\].data\[0\].metrics\[0\].stats.sum`",
        ),
        (
            {
                "results": [
                    {
                        "group": {},
                        "data": [
                            {
                                "interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z",
                                "metrics": [{"metric": "tHandle", "stats": {"sum": True}}],
                            }
                        ],
                    }
                ]
            },
            r"Expected `float`, got `bool` - at `\$.results\[0\].data\[0\].metrics\[0\].stats.sum`",
        ),
    ],
)
def test_malformed_answers_fail_naming_the_field(payload: object, message: str | None) -> None:
    if message is None:  # a data entry without metrics is an empty bucket
        assert parse_aggregates(payload, [])[0].values == {}
        return
    with pytest.raises(ProviderError, match=message):
        parse_aggregates(payload, ["media_type"])


def test_query_body_asks_for_buckets_groups_and_metrics() -> None:
    body = query_body(NINE, NINE + 3600, genesys_config())
    assert body == {
        "interval": "2026-03-02T09:00:00.000Z/2026-03-02T10:00:00.000Z",
        "granularity": "PT30M",
        "groupBy": ["mediaType", "queueId"],
        "metrics": ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon", "nOffered"],
    }


def test_query_body_with_both_filters_ands_two_or_clauses() -> None:
    config = genesys_config(media_types=["voice", "chat"], queues=[Q1], bucket="15m", group_by=["agent"])
    body = query_body(NINE, NINE + 900, config)
    assert body["granularity"] == "PT15M"
    assert body["groupBy"] == ["userId"]
    assert body["filter"] == {
        "type": "and",
        "clauses": [
            {
                "type": "or",
                "predicates": [
                    {"type": "dimension", "dimension": "mediaType", "operator": "matches", "value": "voice"},
                    {"type": "dimension", "dimension": "mediaType", "operator": "matches", "value": "chat"},
                ],
            },
            {
                "type": "or",
                "predicates": [{"type": "dimension", "dimension": "queueId", "operator": "matches", "value": Q1}],
            },
        ],
    }


def test_query_body_with_one_filter_is_a_single_or_clause() -> None:
    body = query_body(NINE, NINE + 1800, genesys_config(queues=[Q1, Q2]))
    assert body["filter"]["type"] == "or"
    assert [p["value"] for p in body["filter"]["predicates"]] == [Q1, Q2]


def test_queue_scoped_metrics_are_not_asked_for_when_grouped_by_agent() -> None:
    assert "nOffered" not in metric_names(["agent"])
    assert "tAbandon" not in metric_names(["queue", "agent"])
    assert "nOffered" not in metric_names(["media_type"])  # offered is queue-scoped
    assert "tAbandon" in metric_names(["media_type"])
    assert Field.CONTACTS_OFFERED in fields_for(["queue"])
    assert Field.CONTACTS_OFFERED not in fields_for(["agent"])


def test_an_error_body_with_http_200_is_an_error_with_code_message_and_context() -> None:
    # [doc] Genesys errors are {message, code, status, contextId}: never mistaken for "no data".
    body = {"message": "Analytics is unavailable", "code": "service.unavailable", "status": 503, "contextId": "c-42"}
    with pytest.raises(ProviderError) as info:
        parse_aggregates(body, ["media_type"])
    assert str(info.value) == (
        "aggregates response: the vendor answered 200 with an error: "
        "service.unavailable: Analytics is unavailable (c-42)"
    )
