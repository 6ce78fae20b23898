"""Per-source stores, one kind per provider result (`Store`): `SourceStore` keeps buckets (replaces revised
ones, drops old ones, sums windows, and counts final buckets into running totals: the `_total` counters);
`AverageStore` keeps a vendor's ready-made averages. No I/O, no vendor."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from msgspec.structs import astuple

from aht_exporter.model import (
    MICRO,
    SUMS_FIELDS,
    SUMS_INDEX,
    AverageUpdate,
    Bucket,
    Field,
    Labels,
    Micros,
    Names,
    ProviderError,
    Sums,
    clean_labels,
)
from aht_exporter.timebuckets import (
    Duration,
    closed_until,
    counter_lag,
    fetch_span,
    final_until,
    isoformat_z,
    poll_boundary,
)

TOTALS_RETENTION = 35 * 86400
"""Seconds a label set's running totals are kept after the newest bucket it appeared in: a queue idle for
a month still has its `_total` counters, so that "this month" stays exact for it; then they are forgotten."""

KEY: Mapping[str, str] = {f.value: f.value for f in Field}
"""Each field's plain str, found by a `Field` or by that str (a StrEnum member hashes and compares as its value)."""
NOTHING = Sums(*[0] * len(SUMS_FIELDS))  # in millionths: where every label set's running totals start


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one source exports after a poll: window sums per label set, ready for exposition.

    `aht_seconds` is handle time over contacts handled in every window; only the `fields` are exported as
    sums. A vendor's own average (`AverageStore`) is held as that average over one contact, with no
    fields: the same exposition shows it, and nothing else.

    Values are in 1/`scale` of a second or of a contact: a `SourceStore`'s are its own whole millionths
    (`MICRO`), shared with the buckets it holds and divided only as each line is written; converting every
    label set's sums to seconds was 130 to 200 ms of a 60,000-label-set poll (docs/performance.md, "Fewer
    copies and conversions"). `in_seconds()` has them as seconds.
    """

    data_end: int
    fields: frozenset[Field]
    windows: Mapping[str, Mapping[Labels, Sums]]
    names: Names = field(default_factory=Names)
    series_dropped: int = 0
    # Running totals of the final buckets per label set (the `_total` counters).
    totals: Mapping[Labels, Sums] = field(default_factory=dict)
    unrecovered: int = 0  # buckets final without ever being fetched (`SourceStore.unrecovered`)
    counted: int | None = None  # `series`, when the store counted them already (for max_series)
    scale: int = 1

    @property
    def series(self) -> int:
        return self.counted if self.counted is not None else count_series(self.windows, self.totals, self.fields)

    def in_seconds(self) -> Snapshot:
        """The same snapshot with its values in seconds and contacts (floats), as they are exported."""
        if self.scale == 1:
            return self
        scale = self.scale
        return replace(
            self,
            windows={w: {labels: _seconds(acc, scale) for labels, acc in g.items()} for w, g in self.windows.items()},
            totals={labels: _seconds(acc, scale) for labels, acc in self.totals.items()},
            scale=1,
        )


@dataclass
class SourceState:
    """What a source had when it last saved (`state.StateStore.load`): as `SourceStore` holds it."""

    fetched_until: int | None = None
    final_until: int | None = None
    unrecovered: int = 0
    buckets: dict[int, dict[Labels, dict[str, int]]] = field(default_factory=dict)
    totals: dict[Labels, dict[str, int]] = field(default_factory=dict)
    last_seen: dict[Labels, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Changes:
    """What a poll changed in a source's store (`SourceStore.take_changes`), copied on the event loop for
    `state.StateStore.save` to write in a thread."""

    fetched_until: int | None
    final_until: int | None
    unrecovered: int
    replaced: tuple[int, int] | None  # the span re-fetched: its rows are replaced by `buckets`
    buckets: Mapping[int, Mapping[Labels, Mapping[str, int]]]
    pruned_before: int | None  # buckets older than this are gone
    totals: Mapping[Labels, tuple[int, Mapping[str, int]]]  # changed label sets: (last_seen, totals)
    forgotten: frozenset[Labels] = frozenset()
    everything: bool = False  # the whole state: what was saved before is replaced, not updated


@dataclass(frozen=True, slots=True)
class Span:
    """What a poll asks its provider for, [start, end), and where the data it shows ends (`data_end`)."""

    start: int
    end: int
    data_end: int


R = TypeVar("R", contravariant=True)


class Store(Protocol[R]):
    """Where a source's results go, whatever their kind: the runner asks it what to fetch, hands it the
    provider's result, and takes snapshots of it. `apply` and `snapshot` run in a worker thread, one at a
    time (scheduler.SourceRunner._off_loop); `publish` (a part of a result, before its poll ends) on the loop."""

    # Seconds after a bucket boundary at which the `_total` counters hold every bucket before it (None: the
    # store has no counters); and whether it has state worth keeping across restarts (state.StateStore).
    counter_lag: int | None
    keeps_state: bool
    keeps_changes: bool  # whether changes are kept for `take_changes` (the runner: only with a state store)

    def span(self, now: float) -> Span: ...
    def apply(self, span: Span, result: R) -> Mapping[str, object]: ...  # returns what to log of it
    def publish(self, part: R) -> None: ...
    def snapshot(self, data_end: int, names: Names | None = None, max_series: int | None = None) -> Snapshot: ...
    def restore(self, state: SourceState) -> None: ...
    def take_changes(self, *, everything: bool = False) -> Changes: ...


def _unstorable(bucket: Bucket) -> ProviderError:
    """A bucket with a value the store cannot hold in whole millionths (NaN, infinity, beyond 10^302). The
    parsers bound every figure (model.MAX_SECONDS, MAX_COUNT) far below that; a provider that let one through
    fails its poll, not the exporter with an OverflowError."""
    bad = ((f, v) for f, v in bucket.values.items() if not abs(v * MICRO) < math.inf)
    field, value = next(bad, next(iter(bucket.values.items())))
    return ProviderError(
        f"the provider returned {value!r} as {KEY[field]} of the bucket {_span(bucket.start, bucket.end)}"
    )


def _span(start: int, end: int) -> str:
    """An interval as ISO text, or as numbers when a timestamp is beyond what a date can show."""
    try:
        return f"{isoformat_z(start)}/{isoformat_z(end)}"
    except (OverflowError, ValueError, OSError):
        return f"{start}/{end}"


def _plus(a: Sums, b: Sums) -> Sums:
    """The two sums added field by field. Written out, not `Sums(*map(add, astuple(a), astuple(b)))`: 0.4 µs
    against 1 µs, once per label set and bucket a window or the totals add (tests/unit/test_store.py checks
    that every field is added)."""
    return Sums(
        a.handle_time_seconds + b.handle_time_seconds,
        a.contacts_handled + b.contacts_handled,
        a.talk_time_seconds + b.talk_time_seconds,
        a.hold_time_seconds + b.hold_time_seconds,
        a.acw_time_seconds + b.acw_time_seconds,
        a.contacts_offered + b.contacts_offered,
        a.contacts_answered + b.contacts_answered,
        a.contacts_abandoned + b.contacts_abandoned,
    )


def _seconds(acc: Sums, scale: int) -> Sums:
    """Millionths (1/`scale`) as seconds and contacts (floats; a zero is the one shared 0.0)."""
    return Sums(*[v / scale if v else 0.0 for v in astuple(acc)])


def _saved(acc: Sums) -> dict[str, int]:
    """As the state store writes a label set's millionths: the fields that are not zero, by name."""
    return {name: v for name, v in zip(SUMS_FIELDS, astuple(acc), strict=True) if v}


def _restored(values: Mapping[str, int]) -> Sums:
    """The state store's fields by name, back as Sums; a name this version does not know is left out."""
    row = [0] * len(SUMS_FIELDS)
    for name, v in values.items():
        i = SUMS_INDEX.get(name)
        if i is not None:
            row[i] += v
    return Sums(*row)


def count_series(
    windows: Mapping[str, Mapping[Labels, Sums]], totals: Mapping[Labels, Sums], fields: frozenset[Field]
) -> int:
    """The data series of these window sums and counters: `series_per_labelset` of each, summed (inlined:
    a function call per label set was a tenth of a snapshot at 100k label sets)."""
    aht = sum(1 for w in windows.values() for t in w.values() if t.contacts_handled > 0)
    return aht + (sum(map(len, windows.values())) + len(totals)) * len(fields)


def series_per_labelset(totals: Sums, fields: frozenset[Field]) -> int:
    """Data series one label set yields in one window: every field, plus aht_seconds when handled > 0."""
    return len(fields) + (1 if totals.contacts_handled > 0 else 0)


class SourceStore:
    """Buckets of sums and counts (`providers.base.BucketProvider`). `every`, `delay` and `refresh` (seconds)
    are the source's schedule: what each poll fetches follows from them (`span`)."""

    keeps_state = True

    def __init__(
        self,
        *,
        bucket: int,
        windows: Iterable[Duration],
        fields: frozenset[Field],
        every: int = 300,
        delay: int = 0,
        refresh: int = 0,
    ) -> None:
        self.bucket = bucket
        self.windows = sorted(windows)
        self.fields = fields
        self.every, self.delay, self.refresh = every, delay, refresh
        self.counter_lag: int | None = counter_lag(
            bucket=bucket, every=every, delay=delay, refresh=refresh, longest_window=self.longest_window
        )
        # Values as whole millionths (of a second, of a contact): sums of integers are exact, so a window's
        # handle time is exactly the sum of the vendor's milliseconds, never 288.92900000000003. Every value
        # per label set is a `Sums`, never changed once made (a snapshot or a save may share it).
        self._buckets: dict[int, dict[Labels, Sums]] = {}
        self.fetched_until: int | None = None
        # The `_total` counters: per label set, the sum of every final bucket counted so far, in millionths.
        # A label set gets its totals, at zero, as soon as it appears in any bucket, final or not: by the
        # time its first bucket is counted, Prometheus has seen the counter at zero for `refresh`, and the
        # increase from absent to the first value is never lost.
        self.totals: dict[Labels, Sums] = {}
        self.last_seen: dict[Labels, int] = {}  # the start of the newest bucket each label set appeared in
        # Each label set the store holds, as the one tuple every bucket, total and snapshot shares: a poll's
        # reply makes new tuples for the same label sets, which would otherwise live on in each bucket held,
        # and be tracked by the garbage collector (with each dict they are keys of) until it has walked them.
        self._labels: dict[Labels, Labels] = {}
        self.final_until: int | None = None  # buckets before it are counted in `totals`
        self.unrecovered = 0  # buckets that became final without ever being fetched: the totals lack them
        # What changed since the last `take_changes`, for the state store to write.
        self._replaced: tuple[int, int] | None = None
        # Label sets as the keys of dicts, not sets: the collector never untracks a set, and walks all of its
        # entries in every full collection (100k label sets: milliseconds each time, GIL held), where a dict
        # of untracked keys and values is untracked (docs/performance.md, "Event-loop stalls").
        self._dirty: dict[Labels, None] = {}
        # Whether anything takes the changes (`take_changes`): the runner says no when there is no state store,
        # and then none are kept. Kept for nobody, the label sets forgotten would pile up for as long as the
        # process runs, one per agent gone for 35 days.
        self.keeps_changes = True
        self._forgotten: dict[Labels, None] = {}
        self._pruned_before: int | None = None
        # The totals as the last snapshot showed them, and whether they changed since.
        self._shown: dict[Labels, Sums] = {}
        self._totals_changed = True

    @property
    def longest_window(self) -> int:
        return self.windows[-1].seconds

    def span(self, now: float) -> Span:
        """The closed buckets a poll at `now` fetches: what may have changed since the last poll, and what a
        missed poll would have fetched (timebuckets.fetch_span)."""
        data_end = closed_until(poll_boundary(now, self.every, self.delay), self.bucket)
        start, end = fetch_span(
            data_end,
            bucket=self.bucket,
            longest_window=self.longest_window,
            refresh=self.refresh,
            every=self.every,
            fetched_until=self.fetched_until,
        )
        return Span(start, end, data_end)

    def apply(self, span: Span, buckets: list[Bucket]) -> Mapping[str, object]:
        """A poll's buckets in: they replace the span, the buckets now final are counted, old ones go."""
        self.replace(span.start, span.end, buckets)
        self.finalize(
            final_until(span.data_end, bucket=self.bucket, longest_window=self.longest_window, refresh=self.refresh)
        )
        self.prune(span.data_end)
        return {"span": f"{(span.end - span.start) // 60}m", "buckets": len(buckets)}

    def publish(self, part: list[Bucket]) -> None:
        raise NotImplementedError("bucket providers return their result whole")

    def replace(self, start: int, end: int, buckets: Iterable[Bucket]) -> None:
        """The provider's answer for [start, end) is authoritative: it replaces whatever we held there.

        A bucket that was there before and is absent now has become empty (vendors omit empty buckets).
        Two records for the same bucket and labels are summed. Label values are vendor text: here, where
        every provider's labels enter, they are made fit for /metrics (`clean_labels`).
        """
        fresh: dict[int, dict[Labels, Sums]] = {}  # only buckets asked for: checked once per start
        cleaned: dict[Labels, Labels] = {}  # a label set recurs in every bucket: clean each one once
        zeros, index, step = [0] * len(SUMS_FIELDS), SUMS_INDEX, self.bucket
        for b in buckets:
            group = fresh.get(b.start)
            if group is None or b.end - b.start != step:
                if b.start % step or b.end - b.start != step or not start <= b.start < end:
                    raise ProviderError(
                        f"the provider returned a bucket {_span(b.start, b.end)} that is not "
                        f"one of the {step // 60}-minute buckets asked for "
                        f"({isoformat_z(start)}/{isoformat_z(end)})"
                    )
                group = fresh[b.start] = {}
            labels = cleaned.get(b.labels)
            if labels is None:
                fit = clean_labels(b.labels)
                labels = cleaned[b.labels] = self._labels.setdefault(fit, fit)
            values = b.values
            if isinstance(values, Micros):
                sums = values.sums  # made in millionths by the provider: nothing to convert
            else:
                row = zeros.copy()
                try:
                    for f, v in values.items():
                        row[index[f]] += round(v * MICRO)
                except (OverflowError, ValueError):
                    raise _unstorable(b) from None
                sums = Sums(*row)
            same = group.get(labels)
            group[labels] = sums if same is None else _plus(same, sums)
        if self.fetched_until is not None and start > self.fetched_until:
            # Never fetched, and never will be (a poll fetches no further back than the longest window):
            # the exporter was down, or failing, for longer than that. Counted, not hidden.
            self.unrecovered += (start - self.fetched_until) // self.bucket
        for t in range(start, end, self.bucket):
            self._buckets.pop(t, None)
        self._buckets.update(fresh)
        self.fetched_until = max(end, self.fetched_until or end)
        if self._replaced is None:
            self._replaced = (start, end)
        else:
            self._replaced = (min(start, self._replaced[0]), max(end, self._replaced[1]))
        for t, groups in fresh.items():
            for labels in groups:
                if labels not in self.totals:
                    self.totals[labels] = NOTHING
                    if self.keeps_changes:
                        self._dirty[labels] = None
                    self._totals_changed = True
                if self.last_seen.get(labels, t) < t:
                    self.last_seen[labels] = t
                    if self.keeps_changes:
                        self._dirty[labels] = None
                elif labels not in self.last_seen:
                    self.last_seen[labels] = t

    def finalize(self, until: int) -> int:
        """Add every bucket that is final at last (`timebuckets.final_until`) to the running totals, once;
        return how many buckets were added. The first call counts nothing: the totals start at zero when
        the exporter first sees a source, and history before that is the backfill's (docs/exact-ranges.md).
        """
        if self.final_until is None or until <= self.final_until:
            self.final_until = max(until, self.final_until or until)
            return 0
        counted = 0
        for t in range(self.final_until, until, self.bucket):
            groups = self._buckets.get(t)
            if groups is None:
                continue  # empty, as vendors omit empty buckets (or never fetched: see `unrecovered`)
            counted += 1
            for labels, values in groups.items():
                self.totals[labels] = _plus(self.totals.get(labels, NOTHING), values)
                if self.keeps_changes:
                    self._dirty[labels] = None
                self._totals_changed = True
        self.final_until = until
        return counted

    def prune(self, data_end: int) -> None:
        """Forget buckets that no window ending at `data_end` reaches and that are counted in the totals,
        and the totals of label sets not seen for `TOTALS_RETENTION`."""
        oldest = data_end - self.longest_window
        if self.final_until is not None:
            oldest = min(oldest, self.final_until)
        for t in [t for t in self._buckets if t < oldest]:
            del self._buckets[t]
        self._pruned_before = oldest
        forget = data_end - TOTALS_RETENTION
        for labels in [labels for labels, t in self.last_seen.items() if t < forget]:
            del self.last_seen[labels]
            self.totals.pop(labels, None)
            self._labels.pop(labels, None)
            self._dirty.pop(labels, None)
            if self.keeps_changes:
                self._forgotten[labels] = None
            self._totals_changed = True

    def restore(self, state: SourceState) -> None:
        """Take back what the source had when it last saved (before its first poll after a restart): its
        next poll fetches only what is missing since, and its totals go on from where they were."""
        self.totals = {labels: _restored(v) for labels, v in state.totals.items()}
        self._labels = {labels: labels for labels in self.totals}
        self._buckets = {
            t: {self._labels.setdefault(labels, labels): _restored(v) for labels, v in g.items()}
            for t, g in state.buckets.items()
        }
        self.last_seen = state.last_seen
        self.fetched_until = state.fetched_until
        self.final_until = state.final_until
        self.unrecovered = state.unrecovered
        self._totals_changed = True

    def _running(self) -> dict[Labels, Sums]:
        """The totals, in millionths. Copy on write: a snapshot's mapping is never changed once made (a render
        may be reading it, while the next poll changes `totals`), and one made when nothing changed is the very
        same mapping (one 100k-entry dict for the collector to walk, not two; and the renderer keeps the
        counters it formatted from it). The Sums are shared, never changed once made.

        In the order label sets came, as the windows are, not sorted: sorting is one C call that holds the GIL
        throughout, 34 ms for 100k label sets (more when new ones came), during which the event loop waits
        (docs/performance.md, "Values the collector never walks"); Prometheus reads the lines in any order."""
        if self._totals_changed:
            self._shown = dict(self.totals)
            self._totals_changed = False
        return self._shown

    def take_changes(self, *, everything: bool = False) -> Changes:
        """What changed since the last call, copied (the store goes on changing on the event loop while the
        copy is written in a thread). `everything`: the whole state, for a save after one that failed."""
        if everything:
            self._dirty = dict.fromkeys(self.totals)
        replaced = self._replaced
        buckets = {
            t: {labels: _saved(values) for labels, values in groups.items()}
            for t, groups in self._buckets.items()
            if everything or (replaced is not None and replaced[0] <= t < replaced[1])
        }
        changes = Changes(
            fetched_until=self.fetched_until,
            final_until=self.final_until,
            unrecovered=self.unrecovered,
            replaced=replaced,
            buckets=buckets,
            pruned_before=self._pruned_before,
            totals={labels: (self.last_seen.get(labels, 0), _saved(self.totals[labels])) for labels in self._dirty},
            forgotten=frozenset(self._forgotten),
            everything=everything,
        )
        self._replaced, self._pruned_before = None, None
        self._dirty, self._forgotten = {}, {}
        return changes

    def snapshot(self, data_end: int, names: Names | None = None, max_series: int | None = None) -> Snapshot:
        """Window sums over the closed buckets ending at or before `data_end`."""
        windows: dict[str, dict[Labels, Sums]] = {}
        for w in self.windows:
            sums: dict[Labels, Sums] = {}
            for t in range(data_end - w.seconds, data_end, self.bucket):
                for labels, values in self._buckets.get(t, {}).items():
                    acc = sums.get(labels)
                    sums[labels] = values if acc is None else _plus(acc, values)
            windows[w.text] = sums
        running, dropped, counted = self._running(), 0, None
        if max_series is not None:
            running, dropped, counted = _limit_series(windows, running, self.fields, max_series)
        return Snapshot(
            data_end=data_end,
            fields=self.fields,
            windows=windows,
            names=_names_in_use(names or Names(), {**windows, "": running}),
            series_dropped=dropped,
            totals=running,
            unrecovered=self.unrecovered,
            counted=counted,
            scale=MICRO,
        )


def _limit_series(
    windows: dict[str, dict[Labels, Sums]],
    totals: dict[Labels, Sums],
    fields: frozenset[Field],
    max_series: int,
) -> tuple[dict[Labels, Sums], int, int]:
    """Keep at most `max_series` series, whole label sets at a time, in every window and in the totals at
    once, in a stable (sorted) order: every window shows the same queues and agents, none is left empty.

    The windows are cut in place; the totals kept are returned, with how many series were dropped and how
    many are kept (the snapshot's `series`, counted once). `totals` itself is never changed (the store keeps
    it for the next snapshot): it is returned as it is when nothing is cut, the common case, counted without
    the cost of each label set."""
    total = count_series(windows, totals, fields)
    if total <= max_series:
        return totals, 0, total
    cost: dict[Labels, int] = dict.fromkeys(totals, len(fields))
    for window in windows.values():
        for labels, sums in window.items():
            cost[labels] = cost.get(labels, 0) + series_per_labelset(sums, fields)
    kept, keep = 0, set()
    for labels in sorted(cost):
        if kept + cost[labels] <= max_series:
            keep.add(labels)
            kept += cost[labels]
    for text, window in windows.items():
        windows[text] = {labels: sums for labels, sums in window.items() if labels in keep}
    return {labels: t for labels, t in totals.items() if labels in keep}, total - kept, kept


def _names_in_use(names: Names, windows: Mapping[str, Mapping[Labels, object]]) -> Names:
    """Only the names of queues and agents that appear in the data: the _info metrics stay as small as it."""
    if not names.queues and not names.agents:
        return names
    queues: set[str] = set()
    agents: set[str] = set()
    for labels in set().union(*windows.values()):  # each label set once, though it is in every window
        for k, v in labels:
            if k == "queue":
                queues.add(v)
            elif k == "agent":
                agents.add(v)
    return Names(
        queues={q: names.queues[q] for q in sorted(queues) if q in names.queues},
        agents={a: names.agents[a] for a in sorted(agents) if a in names.agents},
    )


class AverageStore:
    """Ready-made averages over one fixed window (Ozonetel: the last 2 hours), per label set
    (`providers.base.AverageProvider`).

    A poll may refresh only some label sets (targets served round-robin under a rate limit): the
    others keep their last value until refreshed or removed. Nothing here outlives the process: the
    vendor recomputes its average at every poll.
    """

    keeps_state = False
    keeps_changes = False
    counter_lag: int | None = None

    def __init__(self, window: Duration) -> None:
        self.window = window
        self._averages: dict[Labels, float | None] = {}

    def span(self, now: float) -> Span:
        """The vendor's own span, ending now: it is what the poll shows, whatever it asks."""
        return Span(int(now) - self.window.seconds, int(now), int(now))

    def apply(self, span: Span, update: AverageUpdate) -> Mapping[str, object]:
        self.publish(update)
        return {"refreshed": len(update.averages), "removed": len(update.removed)}

    def publish(self, update: AverageUpdate) -> None:
        """Label values are vendor text, made fit for /metrics here as in `SourceStore.replace`."""
        self._averages.update((clean_labels(labels), v) for labels, v in update.averages.items())
        for labels in update.removed:
            self._averages.pop(clean_labels(labels), None)

    def snapshot(self, data_end: int, names: Names | None = None, max_series: int | None = None) -> Snapshot:
        # Each average as handle time over one contact (Snapshot): aht_seconds is exactly the vendor's figure.
        present = {
            labels: Sums(handle_time_seconds=v, contacts_handled=1.0)
            for labels, v in sorted(self._averages.items())
            if v is not None
        }
        windows = {self.window.text: present}
        dropped, counted = 0, None
        if max_series is not None:
            _, dropped, counted = _limit_series(windows, {}, frozenset(), max_series)
        return Snapshot(
            data_end=data_end,
            fields=frozenset(),
            windows=windows,
            names=_names_in_use(names or Names(), windows),
            series_dropped=dropped,
            counted=counted,
        )

    def restore(self, state: SourceState) -> None:
        raise NotImplementedError("averages are not kept across restarts")

    def take_changes(self, *, everything: bool = False) -> Changes:
        raise NotImplementedError("averages are not kept across restarts")
