"""Kore.ai's sparse records (issue 13): a null queue, zero counters left out. The poll succeeds; a wrong type fails.

Every reply here is the vendor's own sample record (koreai_seed003_response.json, from the Contact Volume page,
https://koreai.mintlify.app/ai-for-service/apis/contact-center/contact-volume) or a sparse variant derived from
it: koreai_sparse_records.json says in its `_source` where each of its records comes from, and `seed_record`
derives the rest. The field table types every count and duration Integer and says nothing of null or absent
fields; docs/providers/koreai.md ("Real-tenant cases") records what the code does with each shape.
"""

import json

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import MISSING_LABEL, Field, Names, ProviderError, make_labels
from aht_exporter.providers.koreai import FIELDS, KoreAIProvider, Rules, parse_record
from aht_exporter.timebuckets import parse_iso
from tests.helpers import fixture, parse_callvolume
from tests.helpers import koreai_seed_record as seed_record
from tests.unit.test_koreai_config import CALLVOLUME, ORG, koreai_config
from tests.unit.test_koreai_parse import page

NINE45 = int(parse_iso("2023-06-01T09:45:00Z"))
TEN = NINE45 + 900
SEED_QUEUE = "qu-6c47543-19ca-49ac-a085-2292bba5xxxx"
RULES = Rules(bucket=900)
ZERO = dict.fromkeys(FIELDS, 0.0)

# The record's counters and durations we read, and the field each becomes: each may be left out when zero.
COUNTERS = {
    "conversationHandleTime": Field.HANDLE_TIME,
    "conversationTalkTime": Field.TALK_TIME,
    "holdDuration": Field.HOLD_TIME,
    "acwDuration": Field.ACW_TIME,
    "completedContacts": Field.CONTACTS_HANDLED,
    "offeredContacts": Field.CONTACTS_OFFERED,
    "answeredContacts": Field.CONTACTS_ANSWERED,
    "abandonedContacts": Field.CONTACTS_ABANDONED,
}


# --- a null queue ------------------------------------------------------------------------------------------------


def test_the_sparse_sample_gives_every_queue_its_figures_and_the_null_queue_record_the_queue_none() -> None:
    buckets = parse_callvolume([fixture("koreai_sparse_records.json")], NINE45, TEN, RULES)
    got = {b.labels: dict(b.values) for b in buckets}
    assert {b.start for b in buckets} == {NINE45} and {b.end for b in buckets} == {TEN}
    assert got == {
        make_labels(media_type="chat", queue=SEED_QUEUE): {  # the vendor's own record, untouched
            **ZERO,
            Field.HANDLE_TIME: 68.043,
            Field.CONTACTS_HANDLED: 1,
            Field.TALK_TIME: 64.094,
            Field.ACW_TIME: 3.949,
            Field.CONTACTS_OFFERED: 1,
            Field.CONTACTS_ANSWERED: 1,
            Field.CONTACTS_ABANDONED: 1,
        },
        make_labels(media_type="voice", queue=MISSING_LABEL): {  # abandoned before a queue
            **ZERO,
            Field.CONTACTS_OFFERED: 2,
            Field.CONTACTS_ABANDONED: 2,
        },
        make_labels(media_type="voice", queue=SEED_QUEUE): {  # zero counters left out
            **ZERO,
            Field.HANDLE_TIME: 245.0,
            Field.CONTACTS_HANDLED: 1,
            Field.TALK_TIME: 230.0,
            Field.ACW_TIME: 15.0,
            Field.CONTACTS_OFFERED: 1,
            Field.CONTACTS_ANSWERED: 1,
        },
    }


def test_the_missing_label_is_one_documented_word_never_the_empty_string() -> None:
    assert MISSING_LABEL == "none"


@pytest.mark.parametrize("value", [None, ..., ""], ids=["null", "absent", "empty"])
def test_a_queue_id_null_absent_or_empty_is_the_queue_none_and_names_no_queue(value: object) -> None:
    record = parse_record(seed_record(queueId=value), 8, RULES)
    assert record.labels == make_labels(media_type="chat", queue=MISSING_LABEL)
    assert record.queue_id is None
    assert record.queue_name is None  # its queueName ("custom day") names no queue we could show
    assert record.values[Field.HANDLE_TIME] == 68.043


@pytest.mark.parametrize("value", [None, ..., ""], ids=["null", "absent", "empty"])
def test_a_source_null_absent_or_empty_is_the_media_type_none(value: object) -> None:
    record = parse_record(seed_record(source=value), 0, RULES)
    assert record.labels == make_labels(media_type=MISSING_LABEL, queue=SEED_QUEUE)


def test_not_grouped_by_queue_a_null_queue_record_adds_up_with_the_others() -> None:
    buckets = parse_callvolume([fixture("koreai_sparse_records.json")], NINE45, TEN, Rules(900, group_by=()))
    [bucket] = buckets
    assert bucket.labels == ()
    assert bucket.values[Field.CONTACTS_OFFERED] == 1 + 2 + 1
    assert bucket.values[Field.CONTACTS_ABANDONED] == 1 + 2
    assert bucket.values[Field.HANDLE_TIME] == pytest.approx(68.043 + 245.0)


# --- zero counters left out ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("counter", "field"), COUNTERS.items())
def test_a_counter_left_out_is_zero_and_the_others_are_untouched(counter: str, field: Field) -> None:
    full = parse_record(seed_record(**{counter: 7}), 0, RULES)
    assert full.values[field] in (7, 0.007)  # a count, or a duration in ms
    record = parse_record(seed_record(**{counter: ...}), 0, RULES)
    assert record.values == {**full.values, field: 0.0}


def test_a_record_with_only_its_interval_is_a_bucket_of_zeros() -> None:
    bare = {k: v for k, v in seed_record().items() if k not in COUNTERS}
    [bucket] = parse_callvolume([page(bare)], NINE45, TEN, RULES)
    assert bucket.values == ZERO


# --- what still fails --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["intervalStartTimeStamp", "intervalEndTimeStamp"])
@pytest.mark.parametrize("value", [None, ...], ids=["null", "absent"])
def test_a_record_without_its_interval_still_fails_the_poll_naming_its_path(key: str, value: object) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_callvolume([page(seed_record(_id="a"), seed_record(**{key: value}))], NINE45, TEN, RULES)
    expected = (
        f"Expected `str`, got `null` - at `$.CallVolumeUpdate[1].{key}`"
        if value is None
        else f"Object missing required field `{key}` - at `$.CallVolumeUpdate[1]`"
    )
    assert str(caught.value) == f"callvolume response: {expected}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("queueId", 5, "Expected `str | null`, got `int`"),
        ("queueId", {"id": "q"}, "Expected `str | null`, got `object`"),
        ("source", ["voice"], "Expected `str | null`, got `array`"),
        ("completedContacts", None, "Expected `int | float`, got `null`"),  # null is not "left out"
        ("conversationHandleTime", "0", "Expected `int | float`, got `str`"),
        ("offeredContacts", False, "Expected `int | float`, got `bool`"),
    ],
)
def test_a_wrong_type_still_fails_the_poll_naming_its_json_path(key: str, value: object, message: str) -> None:
    sparse = fixture("koreai_sparse_records.json")["CallVolumeUpdate"]
    sparse[1][key] = value
    with pytest.raises(ProviderError) as caught:
        parse_callvolume([page(*sparse)], NINE45, TEN, RULES)
    assert str(caught.value) == f"callvolume response: {message} - at `$.CallVolumeUpdate[1].{key}`"


# --- over HTTP: the poll succeeds, and names only real queues ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_null_queue_record_on_the_second_page_no_longer_fails_every_queues_data() -> None:
    """Issue 13's case: `CallVolumeUpdate[8].queueId is missing` lost every queue's data for the poll."""
    records = [seed_record(_id=f"r{i}", queueId=f"qu-{i}", queueName=f"Queue {i}") for i in range(8)]
    null_queue = fixture("koreai_sparse_records.json")["CallVolumeUpdate"][1]
    pages = [page(*records[:5], has_more=True), page(*records[5:], null_queue)]
    provider = KoreAIProvider(
        koreai_config(page_size=5), SourceHealth("kore-us", "koreai", 3), clock=FakeClock(TEN + 420)
    )
    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(CALLVOLUME).mock(side_effect=[httpx.Response(200, json=p) for p in pages])
        buckets = await provider.fetch(NINE45, TEN)
        names = await provider.names()
    await provider.aclose()
    assert [json.loads(call.request.content) for call in route.calls] == [
        {"orgId": ORG, "fromTimeStamp": "2023-06-01T09:45:00Z", "toTimeStamp": "2023-06-01T10:00:00Z", **paging}
        for paging in ({"skip": 0, "limit": 5}, {"skip": 5, "limit": 5})
    ]
    assert all(call.request.headers["auth"] for call in route.calls)
    by_queue = {dict(b.labels)["queue"]: b.values for b in buckets}
    assert set(by_queue) == {f"qu-{i}" for i in range(8)} | {MISSING_LABEL}
    assert by_queue[MISSING_LABEL][Field.CONTACTS_ABANDONED] == 2
    assert all(by_queue[f"qu-{i}"][Field.HANDLE_TIME] == 68.043 for i in range(8))
    # Names come from the records: the null-queue record has none, so no name is made up for "none".
    assert names == Names(queues={f"qu-{i}": f"Queue {i}" for i in range(8)})
