import gc
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aht_exporter.model import (
    MAX_COUNT,
    MAX_LABEL_VALUE,
    MAX_SECONDS,
    MICRO,
    SUMS_FIELDS,
    SUMS_INDEX,
    AverageUpdate,
    Bucket,
    Field,
    Labels,
    Names,
    ProviderError,
    Sums,
    make_labels,
)
from aht_exporter.store import TOTALS_RETENTION, AverageStore, SourceStore, count_series
from aht_exporter.timebuckets import Duration

TEN = 1772445600  # 2026-03-02T10:00:00Z
B = 900  # 15-minute buckets
VOICE = make_labels(media_type="voice", queue="q1")
CHAT = make_labels(media_type="chat", queue="q2")
FIELDS = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})


def bucket(start: int, labels: Labels = VOICE, handle: float = 100.0, handled: float = 2) -> Bucket:
    return Bucket(start, start + B, labels, {Field.HANDLE_TIME: handle, Field.CONTACTS_HANDLED: handled})


def store(*windows: str) -> SourceStore:
    return SourceStore(bucket=B, windows=[Duration.parse(w) for w in windows], fields=FIELDS)


def test_window_30m_sums_the_two_closed_15m_buckets() -> None:
    s = store("30m", "1h")
    s.replace(TEN - 3600, TEN, [bucket(TEN - 3600 + i * B, handle=10.0 * (i + 1), handled=1) for i in range(4)])
    snap = s.snapshot(TEN).in_seconds()
    assert snap.windows["30m"][VOICE] == Sums(handle_time_seconds=70.0, contacts_handled=2)
    assert snap.windows["1h"][VOICE] == Sums(handle_time_seconds=100.0, contacts_handled=4)


def test_buckets_after_data_end_are_not_in_the_window() -> None:
    s = store("30m")
    s.replace(TEN - 1800, TEN + B, [bucket(TEN - B), bucket(TEN, handle=999.0)])
    assert s.snapshot(TEN).in_seconds().windows["30m"][VOICE][Field.HANDLE_TIME] == 100.0


def test_a_refetched_bucket_replaces_its_old_value() -> None:
    s = store("30m")
    s.replace(TEN - 1800, TEN, [bucket(TEN - 1800), bucket(TEN - B)])
    s.replace(TEN - B, TEN, [bucket(TEN - B, handle=250.0, handled=3)])
    totals = s.snapshot(TEN).in_seconds().windows["30m"][VOICE]
    assert totals == Sums(handle_time_seconds=350.0, contacts_handled=5)


def test_a_bucket_absent_from_a_refetch_has_become_empty() -> None:
    s = store("30m")
    s.replace(TEN - 1800, TEN, [bucket(TEN - 1800), bucket(TEN - B, labels=CHAT)])
    s.replace(TEN - B, TEN, [])
    snap = s.snapshot(TEN).in_seconds()
    assert CHAT not in snap.windows["30m"]
    assert snap.windows["30m"][VOICE][Field.HANDLE_TIME] == 100.0


def test_two_records_for_one_bucket_and_label_set_are_summed() -> None:
    s = store("30m")
    s.replace(TEN - 1800, TEN, [bucket(TEN - B), bucket(TEN - B, handle=50.0, handled=1)])
    assert s.snapshot(TEN).in_seconds().windows["30m"][VOICE] == Sums(handle_time_seconds=150.0, contacts_handled=3)


def test_buckets_older_than_the_longest_window_are_dropped() -> None:
    s = store("30m", "1h")
    s.replace(TEN - 7200, TEN, [bucket(TEN - 7200 + i * B) for i in range(8)])
    s.prune(TEN)
    assert sorted(s.take_changes(everything=True).buckets) == [TEN - 4 * B + i * B for i in range(4)]


@pytest.mark.parametrize(
    ("start", "end"),
    [(TEN - 60, TEN - 60 + B), (TEN - B, TEN - B + 1800), (TEN, TEN + B), (TEN - 7200, TEN - 7200 + B)],
)
def test_a_bucket_outside_the_asked_span_fails_the_poll(start: int, end: int) -> None:
    s = store("1h")
    with pytest.raises(ProviderError, match="not one of the 15-minute buckets asked for"):
        s.replace(TEN - 3600, TEN, [Bucket(start, end, VOICE, {})])


def test_a_rejected_answer_leaves_the_store_as_it_was() -> None:
    s = store("1h")
    s.replace(TEN - 3600, TEN, [bucket(TEN - B)])
    with pytest.raises(ProviderError):
        s.replace(TEN - 3600, TEN, [bucket(TEN - B, handle=1.0), Bucket(TEN, TEN + B, VOICE, {})])
    assert s.snapshot(TEN).in_seconds().windows["1h"][VOICE][Field.HANDLE_TIME] == 100.0


def test_fetched_until_tracks_the_newest_span() -> None:
    s = store("1h")
    assert s.fetched_until is None
    s.replace(TEN - 3600, TEN, [])
    assert s.fetched_until == TEN


def test_max_series_drops_whole_label_sets_and_counts_them() -> None:
    s = store("30m")
    labels = [make_labels(queue=f"q{i:02d}") for i in range(10)]
    s.replace(TEN - 1800, TEN, [bucket(TEN - B, labels=lab) for lab in labels])
    # 5 series per label set: handle, handled, aht, and the two _total counters
    snap = s.snapshot(TEN, max_series=11)
    assert sorted(snap.windows["30m"]) == labels[:2]
    assert sorted(snap.totals) == labels[:2]  # the counters of the same label sets
    assert snap.series_dropped == 50 - 10
    assert snap.series == 10
    # Counted once, by the cut, and the count is what a recount of the snapshot gives, cut or not.
    assert snap.counted == 10 == count_series(snap.windows, snap.totals, snap.fields)
    whole = s.snapshot(TEN, max_series=1000)
    assert whole.counted == 50 == count_series(whole.windows, whole.totals, whole.fields)
    assert s.snapshot(TEN).counted is None and s.snapshot(TEN).series == 50
    # The cut is the snapshot's only: the store's totals, and the next snapshot without a limit, keep all
    assert sorted(s.totals) == labels and sorted(s.snapshot(TEN).totals) == labels


def test_max_series_keeps_the_same_label_sets_in_every_window() -> None:
    s = store("30m", "1h", "1d")
    labels = [make_labels(queue=f"q{i:02d}") for i in range(10)]
    s.replace(TEN - 86400, TEN, [bucket(TEN - B, labels=lab) for lab in labels])
    # 3 series per label set and window, and 2 counters: 11 per label set
    snap = s.snapshot(TEN, max_series=25)
    assert [sorted(w) for w in snap.windows.values()] == [labels[:2]] * 3  # not 1d left empty for 30m's sake
    assert sorted(snap.totals) == labels[:2]
    assert snap.series == 22 and snap.series_dropped == 110 - 22


def test_names_are_kept_only_for_queues_and_agents_in_the_data() -> None:
    s = SourceStore(bucket=B, windows=[Duration.parse("30m")], fields=FIELDS)
    s.replace(TEN - 1800, TEN, [bucket(TEN - B, labels=make_labels(queue="q1", agent="a1"))])
    names = Names(queues={"q1": "Sales", "q9": "Unused"}, agents={"a1": "Ada", "a2": "Bob"})
    snap = s.snapshot(TEN, names)
    assert snap.names == Names(queues={"q1": "Sales"}, agents={"a1": "Ada"})


def test_window_sums_of_milliseconds_are_exact() -> None:
    s = store("30m")
    # Summed as floats, 0.1 s + 0.2 s would be 0.30000000000000004 s; the vendor's own sum is 300 ms.
    s.replace(TEN - 1800, TEN, [bucket(TEN - 1800, handle=0.1, handled=1), bucket(TEN - B, handle=0.2, handled=1)])
    assert s.snapshot(TEN).in_seconds().windows["30m"][VOICE][Field.HANDLE_TIME] == 0.3
    rng = random.Random(7)
    day = store("1d")
    ms = [rng.randrange(1, 3_600_000) for _ in range(96)]
    day.replace(TEN - 86400, TEN, [bucket(TEN - 86400 + i * B, handle=v / 1000, handled=1) for i, v in enumerate(ms)])
    assert day.snapshot(TEN).in_seconds().windows["1d"][VOICE][Field.HANDLE_TIME] == sum(ms) / 1000  # to the last bit


# --- hostile vendor values (issue 12, sections 1 and 6) ------------------------------------------------------


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1.7e308, -1.7e308])
def test_a_value_beyond_the_stores_unit_fails_the_poll_not_the_exporter(value: float) -> None:
    # Parsers refuse these (model.MAX_SECONDS); a provider that let one through fails its poll, with no
    # OverflowError ("cannot convert float infinity to integer") to crash it as an internal error.
    s = store("30m")
    with pytest.raises(ProviderError, match=r"as handle_time_seconds of the bucket 2026-03-02T09:45:00.000Z/"):
        s.replace(TEN - 1800, TEN, [bucket(TEN - B, handle=value)])


@given(st.floats(min_value=0, max_value=MAX_SECONDS) | st.integers(min_value=0, max_value=int(MAX_SECONDS)))
def test_every_value_a_parser_lets_through_is_stored_and_summed_without_overflow(value: float) -> None:
    s = store("1d")
    s.replace(TEN - 86400, TEN, [bucket(TEN - 86400 + i * B, handle=value, handled=MAX_COUNT) for i in range(96)])
    totals = s.snapshot(TEN).in_seconds().windows["1d"][VOICE]
    assert math.isfinite(totals[Field.HANDLE_TIME]) and totals[Field.CONTACTS_HANDLED] == 96 * MAX_COUNT


def test_label_values_are_made_fit_for_metrics_as_they_enter() -> None:
    s = store("30m")
    hostile = make_labels(media_type='vo"ice\\', queue="bad\ud800name\n\x00")
    s.replace(TEN - 1800, TEN, [bucket(TEN - B, labels=hostile), bucket(TEN - 1800, labels=hostile)])
    (labels,) = s.snapshot(TEN).windows["30m"]
    # Quotes and backslashes are text (the exposition escapes them); a surrogate or a NUL is not.
    assert labels == make_labels(media_type='vo"ice\\', queue="bad\ufffdname \ufffd")


def test_a_label_value_too_long_is_cut_and_two_such_stay_two() -> None:
    s = store("30m")
    long_a, long_b = "q" * 5000 + "a", "q" * 5000 + "b"
    s.replace(TEN - 1800, TEN, [bucket(TEN - B, labels=make_labels(queue=q)) for q in (long_a, long_b)])
    queues = [dict(labels)["queue"] for labels in s.snapshot(TEN).windows["30m"]]
    assert len(queues) == 2 and queues[0] != queues[1]
    assert all(len(q) == MAX_LABEL_VALUE and q.startswith("q" * 1000) for q in queues)


def test_names_match_the_data_whatever_the_ids_hold() -> None:
    s = store("30m")
    s.replace(TEN - 1800, TEN, [bucket(TEN - B, labels=make_labels(queue="q\ud8001"))])
    snap = s.snapshot(TEN, Names(queues={"q\ud8001": "Sales\ud800"}))
    assert snap.names.queues == {"q\ufffd1": "Sales\ufffd"}


def test_ready_made_averages_have_their_labels_cleaned_too() -> None:
    averages = AverageStore(Duration.parse("2h"))
    averages.publish(AverageUpdate({make_labels(queue="c\ud8001"): 60.0, make_labels(queue="c2"): 30.0}))
    averages.publish(AverageUpdate({}, removed=frozenset({make_labels(queue="c2")})))
    assert averages.snapshot(TEN).windows == {
        "2h": {make_labels(queue="c\ufffd1"): Sums(handle_time_seconds=60.0, contacts_handled=1.0)}
    }


def test_every_bucket_snapshot_and_total_of_a_label_set_shares_one_tuple_of_it() -> None:
    """Each reply makes its own tuples for the same label sets: the store keeps the first, so that the
    buckets it holds do not each keep a copy, and a new bucket's dict has only keys the collector has
    untracked already. A label set forgotten with its totals is let go too."""
    s = store("1h")
    first = make_labels(media_type="voice", queue="q1")
    again = make_labels(media_type="voice", queue="q1")
    assert first == again and first is not again
    s.replace(TEN - 2 * B, TEN - B, [bucket(TEN - 2 * B, first)])
    s.replace(TEN - B, TEN, [bucket(TEN - B, again)])
    keys = [next(iter(s._buckets[t])) for t in (TEN - 2 * B, TEN - B)]
    assert keys[0] is first and keys[1] is first
    snap = s.snapshot(TEN)
    assert next(iter(snap.windows["1h"])) is first and next(iter(s.totals)) is first
    s.prune(TEN + TOTALS_RETENTION + 2 * B)
    assert s._labels == {} and s.totals == {}
    s.replace(TEN - B, TEN, [bucket(TEN - B, again)])
    assert next(iter(s._buckets[TEN - B])) is again


def test_sums_hold_every_field_in_field_order_and_read_by_field() -> None:
    # The store indexes a Sums by SUMS_INDEX, built from its fields: they must be Field's values, in order.
    assert tuple(f.value for f in Field) == SUMS_FIELDS
    assert all(SUMS_INDEX[f] == i for i, f in enumerate(Field))
    sums = Sums(handle_time_seconds=70.0, contacts_handled=2)
    assert sums[Field.HANDLE_TIME] == sums["handle_time_seconds"] == 70.0
    assert [sums[f] for f in Field][2:] == [0.0] * (len(Field) - 2)  # a field not reported is zero
    assert not gc.is_tracked(sums)


def test_plus_adds_every_field() -> None:
    """`_plus` names each field (it is on the hot path): one left out, or one added to Sums and not to it,
    fails here."""
    from aht_exporter.store import _plus

    a = Sums(*[10**i for i in range(len(SUMS_FIELDS))])
    b = Sums(*[7 * 10**i for i in range(len(SUMS_FIELDS))])
    assert _plus(a, b) == Sums(*[8 * 10**i for i in range(len(SUMS_FIELDS))])
    assert _plus(a, Sums()) == a


def test_a_store_whose_changes_nobody_takes_keeps_none_and_forgets_for_good() -> None:
    """Without a state store nothing calls `take_changes`: the label sets changed or forgotten are not kept
    for it, where before every label set forgotten stayed listed for as long as the process ran."""
    s = store("30m")
    s.keeps_changes = False
    s.replace(TEN - 2 * B, TEN, [bucket(TEN - 2 * B), bucket(TEN - B, CHAT)])
    s.finalize(TEN - 2 * B)  # the first call counts nothing
    s.finalize(TEN)
    assert s.totals[VOICE].contacts_handled == s.totals[CHAT].contacts_handled == 2 * MICRO
    s.prune(TEN + TOTALS_RETENTION + 2 * B)
    assert s.totals == {} and s._dirty == {} and s._forgotten == {}
    kept = store("30m")  # the default: a state store takes them
    kept.replace(TEN - 2 * B, TEN, [bucket(TEN - 2 * B)])
    kept.prune(TEN + TOTALS_RETENTION + 2 * B)
    assert kept._forgotten == {VOICE: None}
