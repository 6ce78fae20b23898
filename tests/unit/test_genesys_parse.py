import logging
from typing import Any

import pytest
import respx

from aht_exporter.health import SourceHealth
from aht_exporter.model import MISSING_LABEL, Field, Names, ProviderError, make_labels
from aht_exporter.providers.genesys import (
    GenesysProvider,
    fields_for,
    metric_names,
    parse_aggregates_json,
    query_body,
)
from aht_exporter.store import SourceStore
from aht_exporter.timebuckets import Duration, parse_iso
from tests.helpers import fixture, parse_aggregates
from tests.unit.genesys_config import API, LOGIN, genesys_config

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


def test_group_keys_not_asked_for_are_ignored_and_missing_ones_are_none() -> None:
    buckets = parse_aggregates(fixture("genesys_aggregates_queue_media.json"), ["media_type", "queue"])
    assert buckets[2].labels == make_labels(media_type="chat", queue=Q2)  # divisionId dropped
    # An outbound call outside any queue: one documented label value, not "" (no label at all to Prometheus).
    assert buckets[3].labels == make_labels(media_type="voice", queue=MISSING_LABEL)


def test_media_type_is_lower_case() -> None:
    payload: dict[str, Any] = {"results": [{"group": {"mediaType": "Voice"}, "data": []}]}
    assert parse_aggregates(payload, ["media_type"]) == []
    payload["results"][0]["data"] = [{"interval": "2026-03-02T09:00:00Z/2026-03-02T09:30:00Z", "metrics": []}]
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


# --- hostile numbers (issue 12, section 6) -------------------------------------------------------------------


def _reply(stats: str) -> bytes:
    """The vendor's bytes: three queues, the last one's fourth metric a tHandle with `stats`, raw JSON text, so
    that -5 and 1.7e308 reach the parser exactly as sent."""
    acw = '{"metric": "tAcw", "stats": {"sum": 1000}}'
    handle = f'{{"metric": "tHandle", "stats": {stats}}}'

    def result(queue: str, metrics: list[str]) -> str:
        data = f'[{{"interval": "{NINE_TO_HALF}", "metrics": [{", ".join(metrics)}]}}]'
        return f'{{"group": {{"queueId": "{queue}"}}, "data": {data}}}'

    results = [result("q1", [acw]), result("q2", [acw]), result("q9", [acw, acw, acw, handle])]
    return f'{{"results": [{", ".join(results)}]}}'.encode()


NINE_TO_HALF = "2026-03-02T09:00:00.000Z/2026-03-02T09:30:00.000Z"


@pytest.mark.parametrize(
    ("stats", "message"),
    [
        ('{"sum": -5, "count": 1}', "results[2].data[0].metrics[3].stats.sum: -5 is negative"),
        (
            '{"sum": 1.7e308, "count": 1}',
            "results[2].data[0].metrics[3].stats.sum: 1.7e+308 is above the limit of 1e+15 ms",
        ),
        ('{"sum": 1e15, "count": -0.5}', "results[2].data[0].metrics[3].stats.count: -0.5 is negative"),
        (
            '{"sum": 1, "count": 2e12}',
            "results[2].data[0].metrics[3].stats.count: 2000000000000 is above the limit of 1e+12 contacts",
        ),
    ],
)
def test_a_figure_out_of_range_fails_the_poll_with_one_line_naming_its_path(stats: str, message: str) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_aggregates_json(_reply(stats), ["queue"])
    assert str(caught.value) == f"aggregates response: {message}"


def test_the_largest_figures_allowed_pass_and_the_store_keeps_them_exactly() -> None:
    buckets = parse_aggregates_json(_reply('{"sum": 1e15, "count": 1e12}'), ["queue"])
    assert buckets[2].values[Field.HANDLE_TIME] == 1e12
    store = SourceStore(bucket=1800, windows=[Duration.parse("30m")], fields=fields_for(["queue"]))
    store.replace(NINE, NINE + 1800, buckets)
    totals = store.snapshot(NINE + 1800).in_seconds().windows["30m"][make_labels(queue="q9")]
    assert totals[Field.HANDLE_TIME] == 1e12 and totals[Field.CONTACTS_HANDLED] == 1e12


def test_a_reply_nested_too_deeply_is_a_provider_error_not_a_recursion_error() -> None:
    deep = '{"code": ' + "[" * 100_000 + "]" * 100_000 + ', "message": "x"}'
    with pytest.raises(ProviderError, match=r"^aggregates response: nested too deeply"):
        parse_aggregates_json(deep.encode(), ["queue"])


def test_an_error_in_a_200_is_cut_to_one_line() -> None:
    raw = ('{"code": "x", "message": "%s"}' % ("m" * 1_000_000)).encode()
    with pytest.raises(ProviderError) as caught:
        parse_aggregates_json(raw, ["queue"])
    assert len(str(caught.value)) < 500


# --- hostile name replies (issue 12, section 7) ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_names_page_bigger_than_asked_keeps_at_most_max_names_and_skips_names_that_are_not_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("aht_exporter.providers.genesys.MAX_NAMES", 3)
    entities = [{"id": "q0", "name": {"not": "text"}}, {"id": 7, "name": "no id"}]
    entities += [{"id": f"q{i}", "name": f"Queue {i}"} for i in range(1, 6)]  # 5, though 100 a page was asked
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(f"{LOGIN}/oauth/token").respond(200, json={"access_token": "tok", "expires_in": 86400})
        queues = mock.get(f"{API}/api/v2/routing/queues").respond(200, json={"entities": entities, "pageCount": 9})
        provider = GenesysProvider(genesys_config(group_by=["queue"]), SourceHealth("genesys-eu", "genesys", 3))
        with caplog.at_level(logging.WARNING):
            names = await provider.names()
        await provider.aclose()
    assert names == Names(queues={"q1": "Queue 1", "q2": "Queue 2", "q3": "Queue 3"})
    (request,) = [call.request for call in queues.calls]  # the bound ends the paging too
    assert request.headers["Authorization"] == "Bearer tok"
    assert dict(request.url.params) == {"pageSize": "100", "pageNumber": "1"}
    assert [r.getMessage() for r in caplog.records] == ["name lookup: too many names, the rest are not shown"]
