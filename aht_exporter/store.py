"""Per-source bucket store: replaces revised buckets, drops old ones, sums windows. No I/O, no vendor."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aht_exporter.model import AverageUpdate, Bucket, Field, Labels, Names, ProviderError, clean_labels
from aht_exporter.timebuckets import Duration, isoformat_z

Totals = Mapping[Field, float]
MICRO = 1_000_000  # the store's unit: every provider's values are whole ms or s, exact in millionths


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one source exports after a poll: window sums per label set, ready for exposition."""

    data_end: int
    fields: frozenset[Field]
    windows: Mapping[str, Mapping[Labels, Totals]]
    names: Names = field(default_factory=Names)
    series_dropped: int = 0
    # Ready-made averages (aht_seconds only) per window, from providers that give no sums or counts.
    averages: Mapping[str, Mapping[Labels, float]] = field(default_factory=dict)

    @property
    def series(self) -> int:
        sums = sum(series_per_labelset(t, self.fields) for w in self.windows.values() for t in w.values())
        return sums + sum(len(a) for a in self.averages.values())


def _unstorable(bucket: Bucket) -> ProviderError:
    """A bucket with a value the store cannot hold in whole millionths (NaN, infinity, beyond 10^302). The
    parsers bound every figure (model.MAX_SECONDS, MAX_COUNT) far below that; a provider that let one through
    fails its poll, not the exporter with an OverflowError."""
    bad = ((f, v) for f, v in bucket.values.items() if not abs(v * MICRO) < math.inf)
    field, value = next(bad, next(iter(bucket.values.items())))
    return ProviderError(
        f"the provider returned {value!r} as {field.value} of the bucket {_span(bucket.start, bucket.end)}"
    )


def _span(start: int, end: int) -> str:
    """An interval as ISO text, or as numbers when a timestamp is beyond what a date can show."""
    try:
        return f"{isoformat_z(start)}/{isoformat_z(end)}"
    except (OverflowError, ValueError, OSError):
        return f"{start}/{end}"


def series_per_labelset(totals: Totals, fields: frozenset[Field]) -> int:
    """Data series one label set yields in one window: every field, plus aht_seconds when handled > 0."""
    return len(fields) + (1 if totals.get(Field.CONTACTS_HANDLED, 0) > 0 else 0)


class SourceStore:
    def __init__(self, *, bucket: int, windows: Iterable[Duration], fields: frozenset[Field]) -> None:
        self.bucket = bucket
        self.windows = sorted(windows)
        self.fields = fields
        # Values as whole millionths (of a second, of a contact): sums of integers are exact, so a window's
        # handle time is exactly the sum of the vendor's milliseconds, never 288.92900000000003.
        self._buckets: dict[int, dict[Labels, dict[Field, int]]] = {}
        self.fetched_until: int | None = None

    @property
    def longest_window(self) -> int:
        return self.windows[-1].seconds

    def replace(self, start: int, end: int, buckets: Iterable[Bucket]) -> None:
        """The provider's answer for [start, end) is authoritative: it replaces whatever we held there.

        A bucket that was there before and is absent now has become empty (vendors omit empty buckets).
        Two records for the same bucket and labels are summed. Label values are vendor text: here, where
        every provider's labels enter, they are made fit for /metrics (`clean_labels`).
        """
        fresh: dict[int, dict[Labels, dict[Field, int]]] = {}
        cleaned: dict[Labels, Labels] = {}  # a label set recurs in every bucket: clean each one once
        for b in buckets:
            if b.start % self.bucket or b.end - b.start != self.bucket or not start <= b.start < end:
                raise ProviderError(
                    f"the provider returned a bucket {_span(b.start, b.end)} that is not "
                    f"one of the {self.bucket // 60}-minute buckets asked for "
                    f"({isoformat_z(start)}/{isoformat_z(end)})"
                )
            labels = cleaned.get(b.labels)
            if labels is None:
                labels = cleaned[b.labels] = clean_labels(b.labels)
            totals = fresh.setdefault(b.start, {}).setdefault(labels, {})
            try:
                for f, v in b.values.items():
                    totals[f] = totals.get(f, 0) + round(v * MICRO)
            except (OverflowError, ValueError):
                raise _unstorable(b) from None
        for t in range(start, end, self.bucket):
            self._buckets.pop(t, None)
        self._buckets.update(fresh)
        self.fetched_until = max(end, self.fetched_until or end)

    def prune(self, data_end: int) -> None:
        """Forget buckets that no window ending at `data_end` reaches."""
        oldest = data_end - self.longest_window
        for t in [t for t in self._buckets if t < oldest]:
            del self._buckets[t]

    def bucket_count(self) -> int:
        return len(self._buckets)

    def snapshot(self, data_end: int, names: Names | None = None, max_series: int | None = None) -> Snapshot:
        """Window sums over the closed buckets ending at or before `data_end`."""
        windows: dict[str, dict[Labels, dict[Field, float]]] = {}
        for w in self.windows:
            sums: dict[Labels, dict[Field, int]] = {}
            for t in range(data_end - w.seconds, data_end, self.bucket):
                for labels, totals in self._buckets.get(t, {}).items():
                    acc = sums.setdefault(labels, {})
                    for f, v in totals.items():
                        acc[f] = acc.get(f, 0) + v
            windows[w.text] = {labels: {f: v / MICRO for f, v in acc.items()} for labels, acc in sums.items()}
        dropped = _limit_series(windows, self.fields, max_series) if max_series is not None else 0
        return Snapshot(
            data_end=data_end,
            fields=self.fields,
            windows=windows,
            names=_names_in_use(names or Names(), windows),
            series_dropped=dropped,
        )


def _limit_series(
    windows: dict[str, dict[Labels, dict[Field, float]]], fields: frozenset[Field], max_series: int
) -> int:
    """Keep at most `max_series` series, whole label sets at a time and in every window at once, in a
    stable (sorted) order: every window shows the same queues and agents, none is left empty."""
    cost: dict[Labels, int] = {}
    for window in windows.values():
        for labels, totals in window.items():
            cost[labels] = cost.get(labels, 0) + series_per_labelset(totals, fields)
    total = sum(cost.values())
    if total <= max_series:
        return 0
    kept, keep = 0, set()
    for labels in sorted(cost):
        if kept + cost[labels] <= max_series:
            keep.add(labels)
            kept += cost[labels]
    for text, window in windows.items():
        windows[text] = {labels: totals for labels, totals in window.items() if labels in keep}
    return total - kept


def _names_in_use(names: Names, windows: Mapping[str, Mapping[Labels, object]]) -> Names:
    """Only the names of queues and agents that appear in the data: the _info metrics stay as small as it."""
    queues: set[str] = set()
    agents: set[str] = set()
    for window in windows.values():
        for labels in window:
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
    """Ready-made averages over one fixed window (Ozonetel: the last 2 hours), per label set.

    A poll may refresh only some label sets (targets served round-robin under a rate limit): the
    others keep their last value until refreshed or removed.
    """

    def __init__(self, window: Duration) -> None:
        self.window = window
        self._averages: dict[Labels, float | None] = {}

    def apply(self, update: AverageUpdate) -> None:
        """Label values are vendor text, made fit for /metrics here as in `SourceStore.replace`."""
        self._averages.update((clean_labels(labels), v) for labels, v in update.averages.items())
        for labels in update.removed:
            self._averages.pop(clean_labels(labels), None)

    def snapshot(self, data_end: int, names: Names | None = None, max_series: int | None = None) -> Snapshot:
        present = {labels: v for labels, v in sorted(self._averages.items()) if v is not None}
        dropped = 0
        if max_series is not None and len(present) > max_series:
            dropped = len(present) - max_series
            present = dict(list(present.items())[:max_series])
        averages = {self.window.text: present}
        return Snapshot(
            data_end=data_end,
            fields=frozenset(),
            windows={},
            names=_names_in_use(names or Names(), averages),
            series_dropped=dropped,
            averages=averages,
        )
