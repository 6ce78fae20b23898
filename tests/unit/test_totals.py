"""The running totals behind the `_total` counters: each bucket counted once, when it is final, at the value
the vendor last gave for it; nothing counted twice across revisions, gaps or retries; what could not be
fetched counted as unrecovered, never guessed (issue 14).

A simulated vendor holds the truth, and revises any bucket still inside the `refresh` span (late wrap-up,
upserted records), as real vendors do; the store sees only what each poll fetches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import asdict, astuple

from aht_exporter.model import MICRO, Bucket, Field, Labels, Sums, make_labels
from aht_exporter.store import TOTALS_RETENTION, SourceState, SourceStore
from aht_exporter.timebuckets import Duration, closed_until, fetch_span, final_until, poll_boundary

B = 300  # 5-minute buckets
EVERY = 300
DELAY = 60
START = 1_772_445_600  # 2026-03-02T10:00:00Z
FIELDS = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})
Q1 = make_labels(queue="q1")
Q2 = make_labels(queue="q2")


@dataclass
class Vendor:
    """Truth per bucket and label set, in whole milliseconds and contacts; revisable while recent."""

    truth: dict[int, dict[Labels, tuple[int, int]]] = field(default_factory=dict)

    def set(self, start: int, labels: Labels, ms: int, handled: int) -> None:
        self.truth.setdefault(start, {})[labels] = (ms if handled else 0, handled)

    def answer(self, start: int, end: int) -> list[Bucket]:
        return [
            Bucket(t, t + B, labels, {Field.HANDLE_TIME: ms / 1000, Field.CONTACTS_HANDLED: n})
            for t in range(start, end, B)
            for labels, (ms, n) in self.truth.get(t, {}).items()
            if n  # vendors omit empty buckets
        ]

    def sums(self, start: int, end: int, labels: Labels) -> tuple[int, int]:
        """Handle time (ms) and contacts of the buckets in [start, end)."""
        values = [self.truth.get(t, {}).get(labels, (0, 0)) for t in range(start, end, B)]
        return sum(v[0] for v in values), sum(v[1] for v in values)


def new_store(windows: tuple[str, ...] = ("30m", "1h")) -> SourceStore:
    return SourceStore(bucket=B, windows=[Duration.parse(w) for w in windows], fields=FIELDS)


def poll(store: SourceStore, vendor: Vendor, now: int, refresh: int) -> int:
    """One successful poll, as SourceRunner._update does it; returns the frontier of final buckets."""
    data_end = closed_until(poll_boundary(now, EVERY, DELAY), B)
    start, end = fetch_span(
        data_end,
        bucket=B,
        longest_window=store.longest_window,
        refresh=refresh,
        every=EVERY,
        fetched_until=store.fetched_until,
    )
    store.replace(start, end, vendor.answer(start, end))
    frontier = final_until(data_end, bucket=B, longest_window=store.longest_window, refresh=refresh)
    store.finalize(frontier)
    store.prune(data_end)
    return frontier


def totals(store: SourceStore, labels: Labels) -> tuple[int, int]:
    t = store.totals[labels]
    return int(t[Field.HANDLE_TIME]) // (MICRO // 1000), int(t[Field.CONTACTS_HANDLED]) // MICRO


def test_the_first_poll_counts_nothing_and_every_label_set_starts_at_zero() -> None:
    vendor = Vendor()
    for t in range(START - 3600, START, B):
        vendor.set(t, Q1, 1000, 1)
    store = new_store()
    frontier = poll(store, vendor, START + DELAY, refresh=1800)
    assert frontier == START - 1800
    assert store.final_until == START - 1800
    assert store.totals == {Q1: Sums()}
    assert store.snapshot(START).totals == {Q1: Sums()}


def test_a_bucket_is_counted_once_it_leaves_the_refresh_span_at_its_last_revised_value() -> None:
    vendor = Vendor()
    store = new_store()
    poll(store, vendor, START + DELAY, refresh=1800)  # nothing yet: the totals start here
    vendor.set(START, Q1, 120_000, 2)
    for k in range(1, 8):  # 10:05 ... 10:35: the bucket 10:00 is re-fetched six times, revised twice
        if k == 2:
            vendor.set(START, Q1, 180_500, 3)  # late wrap-up
        if k == 5:
            vendor.set(START, Q1, 181_250, 3)
        poll(store, vendor, START + k * EVERY + DELAY, refresh=1800)
        counted = totals(store, Q1)
        assert counted == ((181_250, 3) if k == 7 else (0, 0)), k  # final at 10:35: 30m after its end
    vendor.set(START, Q1, 999_999, 9)  # a revision after it was final is never fetched, never counted
    for k in range(8, 20):
        poll(store, vendor, START + k * EVERY + DELAY, refresh=1800)
    assert totals(store, Q1) == (181_250, 3)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    refresh_buckets=st.integers(1, 14),
    windows=st.sampled_from([("30m",), ("30m", "1h"), ("1h",)]),
    polls=st.integers(5, 80),
)
def test_totals_equal_the_vendors_sums_over_the_final_span_through_revisions_and_failed_polls(
    seed: int, refresh_buckets: int, windows: tuple[str, ...], polls: int
) -> None:
    """Any mix of successful and failed polls (gaps shorter than the longest window), and of revisions
    inside the refresh span: the totals equal the vendor's sums over [first frontier, last frontier)."""
    rng = random.Random(seed)
    refresh = refresh_buckets * B
    vendor = Vendor()
    store = new_store(windows)
    longest = store.longest_window
    first: int | None = None
    last = 0
    missed = 0
    for k in range(polls):
        now = START + k * EVERY + DELAY
        newest = closed_until(poll_boundary(now, EVERY, DELAY), B)
        # New data in the bucket just closed, and revisions of recent buckets (never of final ones:
        # a bucket older than `refresh` does not change at the vendor either).
        for labels in (Q1, Q2):
            if rng.random() < 0.7:
                vendor.set(newest - B, labels, rng.randrange(0, 3_600_000), rng.randrange(0, 50))
        for _ in range(rng.randrange(0, 3)):
            # Within the span polls re-fetch: `refresh`, cut to the longest window (fetch_span).
            t = newest - B * rng.randrange(1, min(refresh, longest) // B + 1)
            vendor.set(t, rng.choice((Q1, Q2)), rng.randrange(0, 3_600_000), rng.randrange(0, 50))
        # Fail a poll now and then, but never for longer than the longest window allows to recover.
        if first is not None and rng.random() < 0.3 and (missed + 1) * EVERY < longest - refresh:
            missed += 1
            continue
        missed = 0
        frontier = poll(store, vendor, now, refresh)
        first = frontier if first is None else first
        last = frontier
    assert first is not None
    assert store.unrecovered == 0
    for labels in (Q1, Q2):
        if labels in store.totals:
            assert totals(store, labels) == vendor.sums(first, last, labels)
        else:
            assert vendor.sums(first, last, labels) == (0, 0)


def test_an_outage_longer_than_the_longest_window_counts_the_buckets_it_lost() -> None:
    vendor = Vendor()
    store = new_store(("1h",))
    for t in range(START - 7200, START + 4 * 3600, B):
        vendor.set(t, Q1, 60_000, 1)
    poll(store, vendor, START + DELAY, refresh=1800)
    frontier = poll(store, vendor, START + EVERY + DELAY, refresh=1800)
    assert totals(store, Q1) == (60_000, 1)  # the bucket 09:30 became final
    # Down for three hours: the next poll reaches back one hour (the longest window), no further.
    later = START + 3 * 3600 + DELAY
    end_frontier = poll(store, vendor, later, refresh=1800)
    fetched_from = START + 3 * 3600 - 3600
    lost = (fetched_from - (START + EVERY)) // B
    assert store.unrecovered == lost == 23
    counted = (end_frontier - frontier) // B - lost
    assert totals(store, Q1) == (60_000 * (1 + counted), 1 + counted)


def test_buckets_wait_in_memory_until_final_when_refresh_is_longer_than_the_longest_window() -> None:
    """A refresh longer than the longest window is cut to it (fetch_span), and buckets are final once they
    leave the window: none is pruned before it is counted."""
    vendor = Vendor()
    store = new_store(("30m",))
    poll(store, vendor, START + DELAY, refresh=7200)
    for t in range(START, START + 3 * 3600, B):
        vendor.set(t, Q1, 1000, 1)
    for k in range(1, 36):
        frontier = poll(store, vendor, START + k * EVERY + DELAY, refresh=7200)
    assert frontier == START + 35 * EVERY - 1800  # the window's start, not data_end - refresh
    n = (frontier - START) // B
    assert totals(store, Q1) == vendor.sums(START - 1800, frontier, Q1) == (n * 1000, n)


def test_the_totals_of_a_label_set_unseen_for_the_retention_are_forgotten() -> None:
    vendor = Vendor()
    store = new_store(("30m",))
    poll(store, vendor, START + DELAY, refresh=600)
    vendor.set(START, Q2, 5000, 1)
    for k in range(1, 5):
        poll(store, vendor, START + k * EVERY + DELAY, refresh=600)
    assert totals(store, Q2) == (5000, 1)
    vendor.truth.clear()
    poll(store, vendor, START + TOTALS_RETENTION - 3600, refresh=600)
    assert Q2 in store.totals  # idle for a month: still counted
    poll(store, vendor, START + TOTALS_RETENTION + 3600, refresh=600)
    assert Q2 not in store.totals


def _from_scratch(store: SourceStore) -> dict[Labels, Sums]:
    return {labels: Sums(*[v / MICRO for v in astuple(acc)]) for labels, acc in store.totals.items()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), polls=st.integers(3, 40))
def test_each_snapshot_shows_the_totals_and_keeps_them(seed: int, polls: int) -> None:
    """The snapshot copies the totals only when they changed since the last one (`SourceStore._running`): with
    label sets appearing in any order, snapshots skipped, a restart's restore and label sets forgotten, each
    snapshot equals the totals, and in seconds a conversion of every total from scratch, and an earlier
    snapshot never changes after it is made (a render may be reading it)."""
    rng = random.Random(seed)
    vendor = Vendor()
    store = new_store()
    pool = [make_labels(queue=f"q{rng.randrange(100)}", agent=f"a{i}") for i in range(12)]
    taken: list[tuple[dict[Labels, Sums], object]] = []
    now = START
    for k in range(polls):
        now += EVERY if rng.random() < 0.9 else TOTALS_RETENTION // 2  # now and then, a long silence
        newest = closed_until(poll_boundary(now + DELAY, EVERY, DELAY), B)
        for labels in rng.sample(pool, rng.randrange(0, 4)):
            vendor.set(newest - B, labels, rng.randrange(0, 600_000), rng.randrange(0, 9))
        poll(store, vendor, now + DELAY, refresh=600)
        if rng.random() < 0.15:  # a restart: the state saved, then restored into a new store
            restored = new_store()
            restored.restore(_state_of(store))
            store = restored
        if rng.random() < 0.6:
            snap = store.snapshot(newest)
            assert snap.in_seconds().totals == _from_scratch(store), k
            assert snap.totals == store.totals, k  # in millionths, shared with the store (Snapshot.scale)
            taken.append((dict(snap.totals), snap.totals))  # Sums never change: the mapping is what could
    for was, totals_then in taken:
        assert totals_then == was


def _state_of(store: SourceStore) -> SourceState:
    return SourceState(
        fetched_until=store.fetched_until,
        final_until=store.final_until,
        unrecovered=store.unrecovered,
        buckets={t: {labels: asdict(v) for labels, v in groups.items()} for t, groups in store._buckets.items()},
        totals={labels: asdict(v) for labels, v in store.totals.items()},
        last_seen=dict(store.last_seen),
    )
