"""Genesys makes its buckets' values straight in the store's unit (`model.Micros`): whole millionths, exact,
that read as any bucket's values do (seconds and contacts, only the fields the vendor reported), and that
the store takes as they are (docs/performance.md, "Straight to millionths")."""

from __future__ import annotations

import gc
import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aht_exporter.model import MICRO, SUMS_INDEX, Bucket, Field, Micros, Sums, make_labels
from aht_exporter.providers import genesys
from aht_exporter.providers.genesys import parse_aggregates_json
from aht_exporter.store import SourceStore
from aht_exporter.timebuckets import Duration

START = 1772445600  # 2026-03-02T10:00:00Z
INTERVAL = "2026-03-02T10:00:00.000Z/2026-03-02T10:30:00.000Z"
HANDLE, HANDLED, TALK = Field.HANDLE_TIME, Field.CONTACTS_HANDLED, Field.TALK_TIME


def micros(**values: int) -> Micros:
    """Micros of whole millionths, each named field reported."""
    row = [0] * len(SUMS_INDEX)
    reported = 0
    for name, value in values.items():
        row[SUMS_INDEX[name]] = value
        reported |= 1 << SUMS_INDEX[name]
    return Micros(Sums(*row), reported)


def test_micros_read_as_a_mapping_of_the_reported_fields_in_seconds() -> None:
    m = micros(handle_time_seconds=733_269_000, contacts_handled=2 * MICRO, hold_time_seconds=0)
    assert m[HANDLE] == m["handle_time_seconds"] == 733.269  # the float nearest 733.269, as 733269 / 1000 is
    assert m[HANDLED] == 2.0
    assert m[Field.HOLD_TIME] == 0.0  # reported as 0: there, and 0
    assert Field.TALK_TIME not in m and m.get(Field.TALK_TIME, -1.0) == -1.0  # not reported: absent
    with pytest.raises(KeyError):
        m[Field.TALK_TIME]
    with pytest.raises(KeyError):
        m["no_such_field"]
    assert 42 not in m  # type: ignore[comparison-overlap]
    assert len(m) == 3
    assert list(m) == ["handle_time_seconds", "contacts_handled", "hold_time_seconds"]  # Field's order
    assert m == {"handle_time_seconds": 733.269, "contacts_handled": 2.0, "hold_time_seconds": 0.0}
    assert {HANDLE: 733.269, HANDLED: 2.0, Field.HOLD_TIME: 0.0} == m  # noqa: SIM300 (a dict's own __eq__ first)
    assert m != {HANDLE: 733.269, HANDLED: 2.0}  # a reported zero is not the same as no figure
    assert m != [("handle_time_seconds", 733.269)]  # type: ignore[comparison-overlap]
    assert list(m.keys()) == list(m) and dict(m) == dict(m.items()) == {k: m[k] for k in m}
    assert list(m.values()) == [733.269, 2.0, 0.0]
    assert repr(m) == "Micros({'handle_time_seconds': 733.269, 'contacts_handled': 2.0, 'hold_time_seconds': 0.0})"
    with pytest.raises(TypeError):
        hash(m)
    assert not gc.is_tracked(m)  # like the Bucket that holds it: never walked by the collector
    assert micros() == {} and len(micros()) == 0


def reply(*stats: tuple[str, dict[str, float]]) -> bytes:
    metrics = [{"metric": metric, "stats": s} for metric, s in stats]
    return json.dumps(
        {"results": [{"group": {"userId": "a1"}, "data": [{"interval": INTERVAL, "metrics": metrics}]}]}
    ).encode()


def test_genesys_values_are_exact_millionths_of_the_vendors_figures() -> None:
    raw = reply(
        ("tHandle", {"count": 3, "sum": 733269}),
        ("tTalkComplete", {"count": 3, "sum": 0.5}),  # half a millisecond: 500 millionths, not 499.99...
        ("tHeldComplete", {"count": 0}),  # a zero as Genesys writes it: reported, 0
        ("tAcw", {"count": 1, "sum": 1e15}),  # the largest figure we take: 10^12 s, exact
    )
    [bucket] = parse_aggregates_json(raw, ["agent"])
    assert isinstance(bucket.values, Micros)
    sums = bucket.values.sums
    assert (sums.handle_time_seconds, sums.contacts_handled, sums.talk_time_seconds) == (733_269_000, 3_000_000, 500)
    assert (sums.hold_time_seconds, sums.acw_time_seconds) == (0, 10**18)
    assert all(type(getattr(sums, name)) is int for name in sums.__struct_fields__)
    assert bucket.values == {
        HANDLE: 733.269,
        HANDLED: 3.0,
        TALK: 0.0005,
        Field.HOLD_TIME: 0.0,
        Field.ACW_TIME: 1e12,
    }


def test_the_store_takes_micros_as_they_are_and_sums_two_for_one_bucket() -> None:
    store = SourceStore(bucket=1800, windows=[Duration.parse("30m")], fields=genesys.fields_for(["agent"]))
    labels = make_labels(agent="a1")
    first = micros(handle_time_seconds=1_500_000, contacts_handled=MICRO)
    other = make_labels(agent="a2")
    store.replace(
        START,
        START + 1800,
        [
            Bucket(start=START, end=START + 1800, labels=labels, values=first),
            Bucket(start=START, end=START + 1800, labels=other, values=first),
            Bucket(start=START, end=START + 1800, labels=other, values={HANDLE: 0.25, HANDLED: 1.0}),
        ],
    )
    held = store._buckets[START]
    assert held[labels] is first.sums  # not converted, not copied
    assert held[other] == Sums(handle_time_seconds=1_750_000, contacts_handled=2 * MICRO)


# Whole milliseconds, small and up to 9 * 10^12 (285 years, where millionths reach 2^53 and a float's product
# is no longer exact: the largest figure we take, 10^15 ms, is exact all the same, as tested above), counts up
# to 10^6, the same metric at times twice in one entry (summed).
MS = st.one_of(st.integers(0, 10**7), st.integers(0, 9 * 10**12))
METRIC = st.sampled_from(["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered", "tAbandon"])
STATS = st.fixed_dictionaries({"count": st.integers(0, 10**6), "sum": MS})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(METRIC, STATS), max_size=8))
def test_the_millionths_are_the_vendors_figures_exactly(stats: list[tuple[str, dict[str, int]]]) -> None:
    """Against an oracle that reads the JSON itself, in whole integers: every stat we read is its whole ms
    times 1,000 or its count times 1,000,000, summed; and each value reads as the float nearest the exact
    figure in seconds (one rounding, as `Fraction` makes it)."""
    group_by = ["queue"]  # so that tAbandon is read too (genesys.metric_names)
    raw = json.dumps(
        {
            "results": [
                {
                    "group": {"queueId": "q1"},
                    "data": [{"interval": INTERVAL, "metrics": [{"metric": m, "stats": s} for m, s in stats]}],
                }
            ]
        }
    ).encode()
    [bucket] = parse_aggregates_json(raw, group_by)
    expected: dict[str, int] = {}
    for metric, s in stats:
        for stat, field, divisor in genesys._STATS[metric]:
            expected[field.value] = expected.get(field.value, 0) + s[stat] * (MICRO // int(divisor))
    assert isinstance(bucket.values, Micros)
    got = {name: getattr(bucket.values.sums, name) for name in expected}
    assert got == expected
    assert dict(bucket.values) == {name: float(Fraction(v, MICRO)) for name, v in expected.items()}
