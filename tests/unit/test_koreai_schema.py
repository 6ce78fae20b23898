"""Kore.ai's replies validated by msgspec (issue 16): the same figures as the hand-written walkers gave, and every
bad reply a ProviderError that names its JSON path.

The golden file tests/fixtures/koreai_golden_parse.json holds what the walkers (commit f321ab2) made of the vendor's
sample, the sparse sample and a simulated reply under several configs; `python -m tests.unit.test_koreai_schema`
run against that commit wrote it (`write_golden`), and the msgspec parser must give exactly the same records and
buckets, from decoded JSON and from the bytes alike.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aht_exporter.model import Bucket, ProviderError
from aht_exporter.providers import koreai
from aht_exporter.providers.koreai import Record, Rules, latest_revisions, parse_page, parse_record, to_buckets
from aht_exporter.timebuckets import parse_iso
from tests.helpers import FIXTURES, fixture
from tests.helpers import koreai_seed_record as seed_record

GOLDEN = "koreai_golden_parse.json"
SIMULATED = fixture("koreai_simulated_pages.json")
SEED_DAY = (int(parse_iso("2023-06-01T09:00:00Z")), int(parse_iso("2023-06-01T10:00:00Z")))

# Input name -> (its pages, the span asked for): the span is whole hours, so every bucket size fits it.
INPUTS: dict[str, tuple[list[Any], tuple[int, int]]] = {
    "seed003": ([fixture("koreai_seed003_response.json")], SEED_DAY),
    "sparse": ([fixture("koreai_sparse_records.json")], SEED_DAY),
    "simulated": (
        SIMULATED["pages"],
        (int(parse_iso(SIMULATED["fromTimeStamp"])), int(parse_iso(SIMULATED["toTimeStamp"]))),
    ),
}
RULES: dict[str, Rules] = {
    "default": Rules(900),
    "queue-seconds-answered-30m": Rules(1800, ("queue",), "s", "answeredContacts"),
    "media-type-15m": Rules(900, ("media_type",)),
    "ungrouped-1h": Rules(3600, ()),
}


def record_json(r: Record) -> dict[str, Any]:
    return {
        "index": r.index,
        "id": r.id,
        "version": r.version,
        "start": r.start,
        "end": r.end,
        "labels": [list(pair) for pair in r.labels],
        "queue_id": r.queue_id,
        "queue_name": r.queue_name,
        "values": {str(f): v for f, v in sorted(r.values.items())},
    }


def bucket_json(b: Bucket) -> dict[str, Any]:
    return {
        "start": b.start,
        "end": b.end,
        "labels": [list(pair) for pair in b.labels],
        "values": {str(f): v for f, v in sorted(b.values.items())},
    }


def capture(records_of: Any) -> dict[str, Any]:
    """Every input under every rule set: `records_of(pages, rules)` -> its records, and the buckets they make."""
    out: dict[str, Any] = {}
    for input_name, (pages, (start, end)) in INPUTS.items():
        for rules_name, rules in RULES.items():
            records = records_of(pages, rules)
            buckets = to_buckets(latest_revisions(records), start, end, rules.bucket)
            out[f"{input_name}/{rules_name}"] = {
                "records": [record_json(r) for r in records],
                "buckets": [bucket_json(b) for b in buckets],
            }
    return out


def records_from_objects(pages: list[Any], rules: Rules) -> list[Record]:
    """What the walkers did with a reply: each page's decoded JSON, its records numbered across pages."""
    records: list[Record] = []
    for payload in pages:
        page = parse_page(copy.deepcopy(payload))
        offset = len(records)
        records.extend(parse_record(raw, offset + i, rules) for i, raw in enumerate(page.records))
    return records


def records_from_bytes(pages: list[Any], rules: Rules) -> list[Record]:
    """What the provider does now: each page's bytes as received, decoded by msgspec."""
    records: list[Record] = []
    for payload in pages:
        page = koreai.parse_page_json(json.dumps(payload).encode(), skip=len(records))
        offset = len(records)
        records.extend(parse_record(raw, offset + i, rules) for i, raw in enumerate(page.records))
    return records


def write_golden() -> None:
    (FIXTURES / GOLDEN).write_text(json.dumps(capture(records_from_objects), indent=1, sort_keys=True) + "\n")


# --- the same figures as before ---------------------------------------------------------------------------------


def test_the_golden_file_covers_sparse_null_queue_split_and_dropped_records() -> None:
    golden = fixture(GOLDEN)
    assert set(golden) == {f"{i}/{r}" for i in INPUTS for r in RULES}
    simulated = golden["simulated/default"]
    assert len(simulated["records"]) == sum(len(p["CallVolumeUpdate"]) for p in SIMULATED["pages"]) > 40
    assert any(["queue", "none"] in r["labels"] for r in simulated["records"])  # a null queue
    ends = {r["end"] for r in simulated["records"]}
    assert max(ends) > INPUTS["simulated"][1][1] >= max(b["end"] for b in simulated["buckets"])  # one dropped
    assert all(len(golden[k]["buckets"]) >= 1 for k in golden)


@pytest.mark.parametrize("records_of", [records_from_objects, records_from_bytes], ids=["objects", "bytes"])
def test_every_sample_parses_to_the_same_records_and_buckets_as_the_walkers_did(records_of: Any) -> None:
    golden = fixture(GOLDEN)
    got = json.loads(json.dumps(capture(records_of)))  # floats and tuples as the golden file holds them
    for key, expected in golden.items():
        assert got[key] == expected, key


# --- every kind of bad reply names its JSON path ------------------------------------------------------------------


def page_bytes(*records: Any, has_more: bool = False) -> bytes:
    return json.dumps({"hasMore": has_more, "CallVolumeUpdate": list(records), "totalCount": len(records)}).encode()


DEFAULT = Rules(900)


def records_error(raw: bytes, rules: Rules = DEFAULT, skip: int = 0) -> str:
    """The error the provider's path (bytes -> page -> records) gives for one page at `skip`."""
    with pytest.raises(ProviderError) as caught:
        page = koreai.parse_page_json(raw, skip=skip)
        for i, record in enumerate(page.records):
            parse_record(record, skip + i, rules)
    return str(caught.value)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        # missing keys
        (
            page_bytes(seed_record(), seed_record(intervalStartTimeStamp=...)),
            "Object missing required field `intervalStartTimeStamp` - at `$.CallVolumeUpdate[1]`",
        ),
        (b'{"hasMore": false}', "Object missing required field `CallVolumeUpdate`"),
        (b'{"CallVolumeUpdate": []}', "Object missing required field `hasMore`"),
        # wrong types
        (
            page_bytes(seed_record(holdDuration="12")),
            "Expected `int | float`, got `str` - at `$.CallVolumeUpdate[0].holdDuration`",
        ),
        (
            page_bytes(seed_record(abandonedContacts=None)),
            "Expected `int | float`, got `null` - at `$.CallVolumeUpdate[0].abandonedContacts`",
        ),
        (
            page_bytes(seed_record(completedContacts=True)),
            "Expected `int | float`, got `bool` - at `$.CallVolumeUpdate[0].completedContacts`",
        ),
        (page_bytes(seed_record(queueId=7)), "Expected `str | null`, got `int` - at `$.CallVolumeUpdate[0].queueId`"),
        (
            page_bytes(seed_record(source=["voice"])),
            "Expected `str | null`, got `array` - at `$.CallVolumeUpdate[0].source`",
        ),
        (page_bytes(seed_record(_id=5)), "Expected `str | null`, got `int` - at `$.CallVolumeUpdate[0]._id`"),
        (page_bytes(seed_record(__v=1.5)), "Expected `int`, got `float` - at `$.CallVolumeUpdate[0].__v`"),
        (
            page_bytes(seed_record(intervalEndTimeStamp=None)),
            "Expected `str`, got `null` - at `$.CallVolumeUpdate[0].intervalEndTimeStamp`",
        ),
        (b'{"hasMore": "false", "CallVolumeUpdate": []}', "Expected `bool`, got `str` - at `$.hasMore`"),
        (b'{"hasMore": false, "CallVolumeUpdate": null}', "Expected `array`, got `null` - at `$.CallVolumeUpdate`"),
        (
            page_bytes(seed_record(intervalStartTimeStamp="yesterday")),
            "'yesterday' is not an ISO-8601 timestamp - at `$.CallVolumeUpdate[0].intervalStartTimeStamp`",
        ),
        (
            page_bytes(seed_record(intervalEndTimeStamp="2023-06-01T10:00:00.500Z")),
            "'2023-06-01T10:00:00.500Z' is not on a whole second - at `$.CallVolumeUpdate[0].intervalEndTimeStamp`",
        ),
        # wrong nesting
        (b"[]", "Expected `object`, got `array`"),
        (
            b'{"hasMore": false, "CallVolumeUpdate": {"0": {}}}',
            "Expected `array | null`, got `object` - at `$.CallVolumeUpdate`",
        ),
        (
            b'{"hasMore": false, "CallVolumeUpdate": [[]]}',
            "Expected `object`, got `array` - at `$.CallVolumeUpdate[0]`",
        ),
        (
            page_bytes(seed_record(conversationHandleTime={"value": 5})),
            "Expected `int | float`, got `object` - at `$.CallVolumeUpdate[0].conversationHandleTime`",
        ),
        # huge and negative numbers
        (
            page_bytes(seed_record(acwDuration=10**400)),
            "about 10^400 is above the limit of 1e+15 ms - at `$.CallVolumeUpdate[0].acwDuration`",
        ),
        (
            page_bytes(seed_record(acwDuration=-(10**400))),
            "about -10^400 is negative - at `$.CallVolumeUpdate[0].acwDuration`",
        ),
        (
            page_bytes(seed_record(conversationTalkTime=1.7e308)),
            "1.7e+308 is above the limit of 1e+15 ms - at `$.CallVolumeUpdate[0].conversationTalkTime`",
        ),
        (page_bytes(seed_record(offeredContacts=-5)), "-5 is negative - at `$.CallVolumeUpdate[0].offeredContacts`"),
        (
            page_bytes(seed_record(completedContacts=10**13)),
            "10000000000000 is above the limit of 1e+12 contacts - at `$.CallVolumeUpdate[0].completedContacts`",
        ),
        (page_bytes(seed_record(holdDuration=1e400)), "1e400"),  # json.dumps writes Infinity: see below
    ],
)
def test_each_kind_of_bad_reply_fails_naming_its_json_path(raw: bytes, error: str) -> None:
    if error == "1e400":  # Python's json module writes `Infinity`, which JSON has not; the stdlib reads it back
        assert records_error(raw) == (
            "callvolume response: inf is not a finite number - at `$.CallVolumeUpdate[0].holdDuration`"
        )
        return
    assert records_error(raw) == f"callvolume response: {error}"


def test_an_error_body_with_status_200_names_the_vendors_error() -> None:
    raw = b'{"errors": [{"msg": "Analytics is temporarily unavailable", "code": 500}]}'
    assert records_error(raw) == "callvolume: answered 200 with an error: 500: Analytics is temporarily unavailable"
    flat = b'{"errors": [], "message": "Service down", "errorCode": "E1", "CallVolumeUpdate": null}'
    assert records_error(flat) == "callvolume: answered 200 with an error: E1: Service down"
    # Without anything readable as a message, it is a reply without its records.
    assert records_error(b'{"errors": "?"}') == "callvolume response: Object missing required field `CallVolumeUpdate`"


def test_record_paths_count_across_pages_as_kore_counts_skip() -> None:
    """The index in a path is the record's place in the whole reply: the `skip` that would fetch it first."""
    second_page = page_bytes(seed_record(), seed_record(queueId=7))
    assert records_error(second_page, skip=100).endswith("- at `$.CallVolumeUpdate[101].queueId`")
    bad_number = page_bytes(seed_record(holdDuration=-1))
    assert records_error(bad_number, skip=100) == (
        "callvolume response: -1 is negative - at `$.CallVolumeUpdate[100].holdDuration`"
    )


DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "raw",
    [
        DEEP_ARRAY,
        b'{"hasMore": false, "CallVolumeUpdate": [], "errors": ' + DEEP_ARRAY + b"}",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        page_bytes(seed_record(queueName=0)).replace(b'"queueName": 0', b'"queueName": ' + DEEP_ARRAY),
        # NaN first: msgspec refuses the body before its depth, and Python's json module then meets the depth.
        b'{"n": NaN, "hasMore": false, "CallVolumeUpdate": [], "x": ' + DEEP_ARRAY + b"}",
    ],
    ids=["array", "error-key", "unknown-key", "record-field", "nan-then-deep"],
)
def test_json_nested_100_000_deep_fails_the_poll_in_one_line(raw: bytes) -> None:
    # msgspec reads no further into an array than its first `[`, where the reply must be an object.
    what = "Expected `object`, got `array`" if raw is DEEP_ARRAY else "nested too deeply to be a callvolume reply"
    assert records_error(raw) == f"callvolume response: {what}"


def test_what_msgspec_cannot_read_but_json_can_is_read_as_before() -> None:
    """A lone surrogate's escape is JSON's grammar though not Unicode (json.loads takes it, msgspec refuses it),
    and so are Python's NaN and Infinity: the walkers read such replies, and so does the new parser."""
    raw = page_bytes(seed_record(queueId="q\ud800"))
    assert b"\\ud800" in raw
    page = koreai.parse_page_json(raw)
    record = parse_record(page.records[0], 0, Rules(900))
    assert record.queue_id == "q\ud800"
    with_bom = koreai.parse_page_json(b"\xef\xbb\xbf" + page_bytes(seed_record()))
    assert parse_record(with_bom.records[0], 0, Rules(900)) == parse_record(seed_record(), 0, Rules(900))
    assert records_error(page_bytes(seed_record(holdDuration=float("nan")))) == (
        "callvolume response: nan is not a finite number - at `$.CallVolumeUpdate[0].holdDuration`"
    )


@pytest.mark.parametrize(
    ("raw", "status", "error"),
    [
        (b"<html>Bad Gateway</html>", 200, "callvolume: response is not JSON (HTTP 200, '<html>Bad Gateway</html>')"),
        (
            b'{"hasMore": false, "CallVo',
            502,
            'callvolume: response is not JSON (HTTP 502, \'{"hasMore": false, "CallVo\')',
        ),
        (b"\xff\xfe{}", 200, "callvolume: response is not JSON (HTTP 200, '\ufffd\ufffd{}')"),
    ],
)
def test_a_reply_that_is_not_json_says_so_with_its_status_and_first_bytes(raw: bytes, status: int, error: str) -> None:
    with pytest.raises(ProviderError) as caught:
        koreai.parse_page_json(raw, status=status)
    assert str(caught.value) == error
    assert caught.value.status == status


def test_fields_a_config_does_not_read_never_fail_the_poll() -> None:
    """As before: a dimension not grouped by, and `completedContacts` when `answeredContacts` counts handled
    contacts, may hold anything; `queueName` is decoration and never fatal."""
    raw = page_bytes(seed_record(source=5, completedContacts="n/a", queueName={"x": 1}))
    page = koreai.parse_page_json(raw)
    record = parse_record(page.records[0], 0, Rules(900, ("queue",), handled_field="answeredContacts"))
    assert record.queue_name is None and record.labels == (("queue", "qu-6c47543-19ca-49ac-a085-2292bba5xxxx"),)
    ungrouped = parse_record(koreai.parse_page_json(page_bytes(seed_record(queueId=7))).records[0], 0, Rules(900, ()))
    assert ungrouped.queue_id is None and ungrouped.labels == ()


def test_the_parse_benchmark_reads_a_reply_and_prints_its_figures() -> None:
    """bench/parse_koreai.py, tiny: the script a person runs before and after a parser change still runs."""
    script = Path(__file__).resolve().parents[2] / "bench" / "parse_koreai.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--pages=2", "--page-size=3", "--repeat=1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("6 records in 2 pages") and lines[0].endswith("read by msgspec (parse_page_json)")
    assert [line.split()[0:3] for line in lines[1:]] == [["bytes", "->", "records"], ["records", "->", "buckets"]]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-golden"]:
        sys.exit(f"usage: python -m tests.unit.test_koreai_schema --write-golden  (writes {Path(FIXTURES) / GOLDEN})")
    write_golden()
