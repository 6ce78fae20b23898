"""Kore.ai's Contact Volume JSON -> buckets, pure: seed 003's record, every mapping and every bad field."""

import copy
import json
import logging
import time
from typing import Any

import httpx
import jwt
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import vendor_error_text
from aht_exporter.model import Field, Names, ProviderError, make_labels
from aht_exporter.providers.koreai import (
    FIELDS,
    KoreAIProvider,
    Rules,
    error_message,
    implausible_aht,
    latest_revisions,
    mint_jwt,
    parse_page,
    parse_record,
    query_body,
    rate_limit_sign,
    to_buckets,
)
from aht_exporter.timebuckets import parse_iso
from tests.helpers import fixture, parse_callvolume
from tests.unit.test_koreai_config import CALLVOLUME, CLIENT, SECRET, koreai_config

NINE45 = int(parse_iso("2023-06-01T09:45:00Z"))
TEN = NINE45 + 900
SEED_QUEUE = "qu-6c47543-19ca-49ac-a085-2292bba5xxxx"
RULES = Rules(bucket=900)


def seed_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(fixture("koreai_seed003_response.json")["CallVolumeUpdate"][0])
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def page(*records: Any, has_more: bool = False) -> dict[str, Any]:
    return {"hasMore": has_more, "CallVolumeUpdate": list(records), "totalCount": len(records)}


# --- seed 003 ----------------------------------------------------------------------------------------------


def test_seed_003_record_is_aht_68_043_s_talk_64_094_acw_3_949_one_contact_handled() -> None:
    [bucket] = parse_callvolume([fixture("koreai_seed003_response.json")], NINE45, TEN, RULES)
    assert (bucket.start, bucket.end) == (NINE45, TEN)
    assert bucket.labels == make_labels(media_type="chat", queue=SEED_QUEUE)  # source rtm is chat
    values = bucket.values
    assert values[Field.HANDLE_TIME] / values[Field.CONTACTS_HANDLED] == 68.043
    assert values == {
        Field.HANDLE_TIME: 68.043,
        Field.CONTACTS_HANDLED: 1,
        Field.TALK_TIME: 64.094,
        Field.HOLD_TIME: 0,
        Field.ACW_TIME: 3.949,
        Field.CONTACTS_OFFERED: 1,
        Field.CONTACTS_ANSWERED: 1,
        Field.CONTACTS_ABANDONED: 1,
    }
    assert set(values) == FIELDS


def test_seed_003_record_in_seconds_with_time_unit_s() -> None:
    [bucket] = parse_callvolume([fixture("koreai_seed003_response.json")], NINE45, TEN, Rules(900, time_unit="s"))
    assert bucket.values[Field.HANDLE_TIME] == 68043
    assert bucket.values[Field.ACW_TIME] == 3949
    assert bucket.values[Field.CONTACTS_HANDLED] == 1  # counts are never converted


def test_seed_003_record_gives_the_same_figures_however_it_is_paged() -> None:
    other = seed_record(_id="other-1", queueId="qu-other", queueName="Other")
    later = seed_record(
        _id="later-1",
        intervalStartTimeStamp="2023-06-01T10:00:00.000Z",
        intervalEndTimeStamp="2023-06-01T10:15:00.000Z",
    )
    records = [other, seed_record(), later]
    one_page = parse_callvolume([page(*records)], NINE45, TEN + 900, RULES)
    for size in (1, 2):
        pages = [page(*records[i : i + size], has_more=i + size < 3) for i in range(0, 3, size)]
        assert parse_callvolume(pages, NINE45, TEN + 900, RULES) == one_page
    seed = next(b for b in one_page if b.start == NINE45 and dict(b.labels)["queue"] == SEED_QUEUE)
    assert seed.values[Field.HANDLE_TIME] == 68.043


def test_the_vendor_sample_request_is_the_shape_we_send() -> None:
    sample = fixture("koreai_seed003_request.json")
    start, end = int(parse_iso(sample["fromTimeStamp"])), int(parse_iso(sample["toTimeStamp"]))
    config = koreai_config(org_id=sample["orgId"], page_size=sample["limit"])
    assert query_body(config, start, end, 0) == sample


# --- mapping -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "media_type"), [("rtm", "chat"), ("voice", "voice"), ("RTM", "chat"), ("Email", "email")]
)
def test_media_type_is_chat_for_rtm_voice_for_voice_else_the_source_lower_cased(source: str, media_type: str) -> None:
    record = parse_record(seed_record(source=source), 0, RULES)
    assert dict(record.labels)["media_type"] == media_type


@pytest.mark.parametrize(
    ("group_by", "labels"),
    [
        (("media_type", "queue"), make_labels(media_type="chat", queue=SEED_QUEUE)),
        (("queue",), make_labels(queue=SEED_QUEUE)),
        (("media_type",), make_labels(media_type="chat")),
        ((), ()),
    ],
)
def test_labels_follow_group_by(group_by: tuple[str, ...], labels: Any) -> None:
    assert parse_record(seed_record(), 0, Rules(900, group_by=group_by)).labels == labels


def test_fields_not_grouped_by_need_not_be_there() -> None:
    record = parse_record(seed_record(source=None), 0, Rules(900, group_by=("queue",)))
    assert record.labels == make_labels(queue=SEED_QUEUE)


def test_handled_field_answered_contacts() -> None:
    record = parse_record(
        seed_record(completedContacts=0, answeredContacts=2), 0, Rules(900, handled_field="answeredContacts")
    )
    assert record.values[Field.CONTACTS_HANDLED] == 2
    assert record.values[Field.CONTACTS_ANSWERED] == 2


def test_queue_name_comes_from_the_record_and_is_never_fatal() -> None:
    assert parse_record(seed_record(), 0, RULES).queue_name == "custom day"
    assert parse_record(seed_record(queueName=None), 0, RULES).queue_name is None
    assert parse_record(seed_record(queueName=7), 0, RULES).queue_name is None
    assert parse_record(seed_record(), 0, Rules(900, group_by=("media_type",))).queue_id == SEED_QUEUE


def test_records_with_the_same_interval_media_type_and_queue_are_summed() -> None:
    voice = seed_record(_id="b", source="voice")
    chat_again = seed_record(_id="c", conversationHandleTime=1000, completedContacts=2)
    buckets = parse_callvolume([page(seed_record(), voice, chat_again)], NINE45, TEN, RULES)
    by_media = {dict(b.labels)["media_type"]: b.values for b in buckets}
    assert by_media["chat"][Field.HANDLE_TIME] == pytest.approx(69.043)
    assert by_media["chat"][Field.CONTACTS_HANDLED] == 3
    assert by_media["voice"][Field.HANDLE_TIME] == 68.043


def test_grouped_by_queue_only_the_sources_of_a_queue_add_up() -> None:
    buckets = parse_callvolume(
        [page(seed_record(), seed_record(_id="b", source="voice"))], NINE45, TEN, Rules(900, group_by=("queue",))
    )
    [bucket] = buckets
    assert bucket.values[Field.CONTACTS_HANDLED] == 2


def test_a_record_seen_twice_across_pages_counts_once_at_its_latest_revision() -> None:
    old = seed_record(__v=0, conversationHandleTime=1000)
    new = seed_record(__v=3, conversationHandleTime=2000)
    for pages in ([page(old, has_more=True), page(new)], [page(new, has_more=True), page(old)]):
        [bucket] = parse_callvolume(pages, NINE45, TEN, RULES)
        assert bucket.values[Field.HANDLE_TIME] == 2.0
    records = [parse_record(seed_record(_id=None), i, RULES) for i in range(2)]
    assert len(latest_revisions(records)) == 2  # no _id: nothing to match them by


def test_15_minute_records_roll_up_into_a_30_minute_bucket() -> None:
    nine30 = NINE45 - 900
    first = seed_record(
        _id="a", intervalStartTimeStamp="2023-06-01T09:30:00.000Z", intervalEndTimeStamp="2023-06-01T09:45:00.000Z"
    )
    [bucket] = parse_callvolume([page(first, seed_record())], nine30, TEN, Rules(1800))
    assert (bucket.start, bucket.end) == (nine30, TEN)
    assert bucket.values[Field.CONTACTS_HANDLED] == 2


@pytest.mark.parametrize(
    ("start", "end", "bucket"),
    [
        ("2023-06-01T09:50:00.000Z", "2023-06-01T10:05:00.000Z", 900),  # misaligned
        ("2023-06-01T09:45:00.000Z", "2023-06-01T10:15:00.000Z", 900),  # longer than the bucket
        ("2023-06-01T09:45:00.000Z", "2023-06-01T10:00:00.000Z", 300),  # longer than a 5m bucket
        ("2023-06-01T09:45:00.000Z", "2023-06-01T09:45:00.000Z", 900),  # empty
        ("2023-06-01T10:00:00.000Z", "2023-06-01T09:45:00.000Z", 900),  # backwards
    ],
)
def test_a_record_that_does_not_fit_one_bucket_fails_the_poll(start: str, end: str, bucket: int) -> None:
    record = seed_record(intervalStartTimeStamp=start, intervalEndTimeStamp=end)
    ok_end = "2023-06-01T09:35:00.000Z" if bucket == 300 else "2023-06-01T09:45:00.000Z"
    fits = seed_record(_id="ok", intervalStartTimeStamp="2023-06-01T09:30:00.000Z", intervalEndTimeStamp=ok_end)
    with pytest.raises(ProviderError, match=r"CallVolumeUpdate\[1\] covers .* which is not inside one \d+m bucket"):
        parse_callvolume([page(fits, record)], NINE45 - 3600, TEN + 3600, Rules(bucket))


def test_records_outside_the_span_asked_for_are_dropped() -> None:
    before = seed_record(
        _id="x", intervalStartTimeStamp="2023-06-01T09:30:00.000Z", intervalEndTimeStamp="2023-06-01T09:45:00.000Z"
    )
    at_end = seed_record(  # the interval starting at toTimeStamp, if Kore includes it: still in progress
        _id="y", intervalStartTimeStamp="2023-06-01T10:00:00.000Z", intervalEndTimeStamp="2023-06-01T10:15:00.000Z"
    )
    buckets = parse_callvolume([page(before, seed_record(), at_end)], NINE45, TEN, RULES)
    assert [b.start for b in buckets] == [NINE45]


def test_no_records_is_no_buckets() -> None:
    assert parse_callvolume([page()], NINE45, TEN, RULES) == []


# --- bad replies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "callvolume response: Expected `object`, got `array`"),
        ({"hasMore": False}, "callvolume response: Object missing required field `CallVolumeUpdate`"),
        (
            {"hasMore": False, "CallVolumeUpdate": {}},
            "callvolume response: Expected `array | null`, got `object` - at `$.CallVolumeUpdate`",
        ),
        ({"CallVolumeUpdate": []}, "callvolume response: Object missing required field `hasMore`"),
        (
            {"CallVolumeUpdate": [], "hasMore": "false"},
            "callvolume response: Expected `bool`, got `str` - at `$.hasMore`",
        ),
        (
            {"errors": [{"msg": "Service down", "code": 500}]},
            "callvolume: answered 200 with an error: 500: Service down",
        ),
        ({"errors": "?"}, "callvolume response: Object missing required field `CallVolumeUpdate`"),
    ],
)
def test_a_malformed_page_fails_naming_the_json_path(payload: object, message: str) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_page(payload)
    assert str(caught.value) == message


def test_total_count_is_optional() -> None:
    assert parse_page({"hasMore": False, "CallVolumeUpdate": []}).total is None
    assert parse_page({"hasMore": False, "CallVolumeUpdate": [], "totalCount": "7"}).total is None
    assert parse_page(page(seed_record())).total == 1


# The fields whose absence fails the poll: a record's interval. A counter left out is zero and a queue or source
# left out is the label value "none" (issue 13; tests/unit/test_koreai_sparse.py).
ESSENTIAL_FIELDS = ["intervalStartTimeStamp", "intervalEndTimeStamp"]


@pytest.mark.parametrize("field", ESSENTIAL_FIELDS)
def test_a_missing_field_fails_naming_the_record_index_and_field(field: str) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_callvolume([page(seed_record(_id="a"), seed_record(**{field: None}))], NINE45, TEN, RULES)
    assert str(caught.value) == (
        f"callvolume response: Object missing required field `{field}` - at `$.CallVolumeUpdate[1]`"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("conversationHandleTime", "68043", "Expected `int | float`, got `str`"),
        ("completedContacts", True, "Expected `int | float`, got `bool`"),
        ("acwDuration", -1, "-1 is negative"),
        ("holdDuration", float("nan"), "nan is not a finite number"),
        ("holdDuration", float("inf"), "inf is not a finite number"),
        ("source", 1, "Expected `str | null`, got `int`"),
        ("queueId", 7, "Expected `str | null`, got `int`"),
        ("acwDuration", None, "Expected `int | float`, got `null`"),
        ("intervalStartTimeStamp", "yesterday", "'yesterday' is not an ISO-8601 timestamp"),
        ("intervalEndTimeStamp", "2023-06-01T10:00:00.500Z", "'2023-06-01T10:00:00.500Z' is not on a whole second"),
        ("_id", 5, "Expected `str | null`, got `int`"),
        ("__v", "1", "Expected `int`, got `str`"),
        ("__v", None, "Expected `int`, got `null`"),
    ],
)
def test_a_mistyped_field_fails_naming_its_json_path(field: str, value: object, message: str) -> None:
    record = seed_record()
    record[field] = value
    with pytest.raises(ProviderError) as caught:
        parse_callvolume([page(record)], NINE45, TEN, RULES)
    assert str(caught.value) == f"callvolume response: {message} - at `$.CallVolumeUpdate[0].{field}`"


def test_a_record_that_is_not_an_object_fails() -> None:
    with pytest.raises(ProviderError) as caught:
        parse_callvolume([page("x")], NINE45, TEN, RULES)
    assert str(caught.value) == "callvolume response: Expected `object`, got `str` - at `$.CallVolumeUpdate[0]`"
    with pytest.raises(ProviderError) as caught:
        parse_record("x", 7, RULES)
    assert str(caught.value) == "callvolume response: Expected `object`, got `str` - at `$.CallVolumeUpdate[7]`"


def test_record_indexes_count_across_pages() -> None:
    with pytest.raises(ProviderError) as caught:
        parse_callvolume(
            [
                page(seed_record(_id="a"), seed_record(_id="b"), has_more=True),
                page(seed_record(intervalEndTimeStamp=None)),
            ],
            NINE45,
            TEN,
            RULES,
        )
    assert str(caught.value).endswith("`intervalEndTimeStamp` - at `$.CallVolumeUpdate[2]`")


# --- units, errors, JWT ----------------------------------------------------------------------------------------


def test_an_aht_above_4h_or_below_1s_is_reported_as_implausible() -> None:
    ms_as_s = parse_callvolume([fixture("koreai_seed003_response.json")], NINE45, TEN, Rules(900, time_unit="s"))
    found = implausible_aht(ms_as_s)
    assert found is not None and found[1] == 68043
    s_as_ms = to_buckets([parse_record(seed_record(conversationHandleTime=68), 0, RULES)], NINE45, TEN, 900)
    found = implausible_aht(s_as_ms)
    assert found is not None and found[1] == pytest.approx(0.068)
    fine = parse_callvolume([fixture("koreai_seed003_response.json")], NINE45, TEN, RULES)
    assert implausible_aht(fine) is None
    nothing_handled = to_buckets([parse_record(seed_record(completedContacts=0), 0, RULES)], NINE45, TEN, 900)
    assert implausible_aht(nothing_handled) is None


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"errors": [{"msg": "Invalid token", "code": 401}]}, "401: Invalid token"),
        ({"errors": [{"message": "Bad request"}]}, "Bad request"),
        ({"message": "Unauthorized"}, "Unauthorized"),
        ({"error": "invalid_jwt", "code": "InvalidJwt"}, "InvalidJwt: invalid_jwt"),
    ],
)
def test_error_text_understands_kore_error_bodies(body: object, text: str) -> None:
    assert vendor_error_text(message=error_message, response=httpx.Response(401, json=body)) == text


def test_error_text_falls_back_to_the_body_text() -> None:
    assert (
        vendor_error_text(message=error_message, response=httpx.Response(502, text="<html>Bad Gateway</html>"))
        == "<html>Bad Gateway</html>"
    )


RATE_TEXT = "You've exceeded the per-minute rate limit. Please wait for sometime before retrying."


@pytest.mark.parametrize(
    ("response", "limited"),
    [
        (httpx.Response(200, json={"errors": [{"msg": RATE_TEXT, "code": 429}]}), True),
        (httpx.Response(400, text=RATE_TEXT), True),
        (httpx.Response(403, json={"message": "You've exceeded the hourly rate limit. Please wait"}), True),
        (httpx.Response(200, json={"msg": "Rate limit for this API has been reached. Please try again later"}), True),
        (httpx.Response(429, text=RATE_TEXT), False),  # a 429 is rate limiting already, counted once
        (httpx.Response(200, json=page(seed_record(queueName=RATE_TEXT))), False),  # data that mentions it
        (httpx.Response(200, json=page(seed_record())), False),
        (httpx.Response(500, text="boom"), False),
    ],
)
def test_kore_rate_limit_text_is_recognised_whatever_the_status(response: httpx.Response, limited: bool) -> None:
    assert rate_limit_sign(response) is limited


def test_each_jwt_is_hs256_with_app_id_sub_a_short_exp_and_a_unique_jti() -> None:
    from pydantic import SecretStr

    now = time.time()
    tokens = [mint_jwt(CLIENT, SecretStr(SECRET), now) for _ in range(3)]
    assert jwt.get_unverified_header(tokens[0]) == {"alg": "HS256", "typ": "JWT"}
    claims = [jwt.decode(t, SECRET, algorithms=["HS256"]) for t in tokens]
    assert claims[0]["appId"] == CLIENT and claims[0]["sub"] == CLIENT
    assert claims[0]["iat"] == int(now) and claims[0]["exp"] == int(now) + 300
    assert len({c["jti"] for c in claims}) == 3
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tokens[0], SECRET + "x", algorithms=["HS256"])
    assert SECRET not in json.dumps(claims)


# --- hostile numbers (issue 12, section 6) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "rules", "message"),
    [
        # A JSON integer past any float: float() of it raised OverflowError, an "internal error".
        ("conversationHandleTime", 10**400, RULES, "about 10^400 is above the limit of 1e+15 ms"),
        ("conversationHandleTime", -(10**400), RULES, "about -10^400 is negative"),
        ("acwDuration", 1.7e308, RULES, "1.7e+308 is above the limit of 1e+15 ms"),
        ("holdDuration", 2e12, Rules(bucket=900, time_unit="s"), "2000000000000 is above the limit of 1e+12 s"),
        ("completedContacts", 10**13, RULES, "10000000000000 is above the limit of 1e+12 contacts"),
    ],
)
def test_a_figure_out_of_range_fails_the_poll_with_one_line_naming_its_path(
    field: str, value: object, rules: Rules, message: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_callvolume([page(seed_record(_id="a"), seed_record(**{field: value}))], NINE45, TEN, rules)
    assert str(caught.value) == f"callvolume response: {message} - at `$.CallVolumeUpdate[1].{field}`"


def test_the_largest_figures_allowed_pass() -> None:
    record = seed_record(conversationHandleTime=10**15, completedContacts=10**12)
    (bucket,) = parse_callvolume([page(record)], NINE45, TEN, RULES)
    assert bucket.values[Field.HANDLE_TIME] == 1e12 and bucket.values[Field.CONTACTS_HANDLED] == 1e12


# --- names learned from the data are bounded (issue 12, section 7) --------------------------------------------


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_queue_names_learned_from_records_keep_the_latest_max_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aht_exporter.providers.koreai.MAX_NAMES", 3)
    replies = [
        [seed_record(_id=f"a{i}", queueId=f"q{i}", queueName=f"Queue {i}") for i in range(1, 5)],
        [
            seed_record(_id="b2", queueId="q2", queueName="Queue 2b"),
            seed_record(_id="b5", queueId="q5", queueName="Q5"),
        ],
    ]
    provider = KoreAIProvider(koreai_config(), SourceHealth("kore-us", "koreai", 3), clock=FakeClock(TEN + 420))
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(CALLVOLUME).mock(side_effect=[httpx.Response(200, json=page(*r)) for r in replies])
        for _ in replies:
            await provider.fetch(NINE45, TEN)
    await provider.aclose()
    # Four names, one too many: the oldest goes. Then q2 is renamed (and so newest) and q5 arrives: q3 goes.
    assert await provider.names() == Names(queues={"q4": "Queue 4", "q2": "Queue 2b", "q5": "Q5"})
    assert [json.loads(call.request.content) for call in route.calls] == [
        query_body(koreai_config(), NINE45, TEN, 0)
    ] * 2
    assert all(call.request.headers["auth"] for call in route.calls)


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_the_implausible_aht_warning_shows_vendor_ids_made_printable(caplog: pytest.LogCaptureFixture) -> None:
    record = seed_record(queueId="q\ud800\n1", conversationHandleTime=5 * 3600 * 1000)  # 5 h: above 4 h
    provider = KoreAIProvider(koreai_config(), SourceHealth("kore-us", "koreai", 3), clock=FakeClock(TEN + 420))
    with respx.mock(assert_all_mocked=True) as mock, caplog.at_level(logging.WARNING):
        # json.dumps writes the surrogate as JSON's own \ud800 escape, as a vendor would send it.
        route = mock.post(CALLVOLUME).respond(200, content=json.dumps(page(record)).encode())
        await provider.fetch(NINE45, TEN)
    await provider.aclose()
    assert json.loads(route.calls[0].request.content) == query_body(koreai_config(), NINE45, TEN, 0)
    (warning,) = caplog.records
    assert warning.getMessage() == "implausible AHT: check time_unit"
    assert warning.__dict__["labels"] == "media_type=chat,queue=q\ufffd 1"
