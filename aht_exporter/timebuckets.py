"""UTC-aligned buckets, boundaries and windows: pure arithmetic on Unix seconds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

# Prometheus duration syntax (https://prometheus.io/docs/prometheus/latest/querying/basics/#time-durations).
# Milliseconds only make sense for timeouts; the config rejects them wherever buckets are concerned.
_DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS_MS = (7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)
# The most digits one number of a duration may have. Ten keep every duration the syntax can then write
# (up to 9999999999w) within 64 bits of milliseconds, and refuse `100000000000000000000d` as text, before
# it turns into big-int arithmetic that no timer, date or scheduler downstream can take.
MAX_DURATION_DIGITS = 10


@dataclass(frozen=True, slots=True, order=True)
class Duration:
    """A duration in milliseconds that remembers how the user wrote it (window labels use the text)."""

    millis: int
    text: str

    @property
    def seconds(self) -> int:
        """Whole seconds (bucket arithmetic); see `total_seconds` for timeouts."""
        return self.millis // 1000

    @property
    def total_seconds(self) -> float:
        return self.millis / 1000

    @classmethod
    def parse(cls, text: str) -> Duration:
        text = text.strip()
        m = _DURATION_RE.match(text)
        if not text or m is None:
            raise ValueError(f"{_quoted(text)} is not a duration (use e.g. 30s, 5m, 1h, 1d)")
        if any(g is not None and len(g) > MAX_DURATION_DIGITS for g in m.groups()):
            raise ValueError(f"{_quoted(text)} has a number of more than {MAX_DURATION_DIGITS} digits")
        millis = sum(int(g) * unit for g, unit in zip(m.groups(), _UNITS_MS, strict=True) if g)
        return cls(millis, text)

    @classmethod
    def of(cls, seconds: int) -> Duration:
        return cls(seconds * 1000, format_duration(seconds))

    def __str__(self) -> str:
        return self.text


def _quoted(text: str, limit: int = 40) -> str:
    """`text` as an error message shows it: quoted, and cut short (a config value may be a megabyte)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def format_duration(seconds: int) -> str:
    """The shortest Prometheus-style text for a whole number of seconds: 5400 -> '1h30m'."""
    if seconds == 0:
        return "0s"
    parts = []
    for unit, suffix in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        n, seconds = divmod(seconds, unit)
        if n:
            parts.append(f"{n}{suffix}")
    return "".join(parts)


def floor_to(t: float, step: int) -> int:
    """The newest multiple of `step` at or before `t`."""
    return int(t // step) * step


def poll_boundary(now: float, every: int, delay: int) -> int:
    """The boundary B a poll works up to: the newest multiple of `every` with B + delay <= now."""
    return floor_to(now - delay, every)


def closed_until(boundary: int, bucket: int) -> int:
    """End of the newest bucket that is closed at `boundary` (buckets ending at or before it)."""
    return floor_to(boundary, bucket)


def fetch_span(
    data_end: int,
    *,
    bucket: int,
    longest_window: int,
    refresh: int,
    every: int,
    fetched_until: int | None,
) -> tuple[int, int]:
    """The [start, end) span a poll must fetch so that every window ending at `data_end` is complete.

    The first poll (nothing fetched yet) backfills the longest window. Later polls re-fetch the
    trailing `refresh` span, and reach further back when earlier polls failed: to what those polls would
    have re-fetched (a vendor may have revised it meanwhile), and to the gap they left. Never beyond the
    longest window: older buckets are not exported. So every bucket is fetched one last time when it is
    about to leave the `refresh` span, whatever failed before, and is final after (`final_until`).
    """
    oldest_needed = data_end - longest_window
    if fetched_until is None:
        return oldest_needed, data_end
    refresh = _round_up(refresh, bucket)
    # The next poll after the last one that succeeded worked up to the next bucket end `every` brought,
    # and re-fetched `refresh` back from there. If that was an earlier poll that failed, do it now.
    missed_from = fetched_until + _round_up(every, bucket) - refresh
    return max(oldest_needed, min(data_end - refresh, missed_from, fetched_until)), data_end


def final_until(data_end: int, *, bucket: int, longest_window: int, refresh: int) -> int:
    """The end of the buckets that are final at `data_end`: no later poll fetches them again, so no revision
    can change them. Every poll re-fetches the trailing `refresh` span (`fetch_span`), and never reaches
    beyond the longest window; buckets before the later of the two starts are final."""
    return max(data_end - _round_up(refresh, bucket), data_end - longest_window)


COUNTER_READ_MARGIN = 30
"""Seconds before a poll fires at which the result of the poll before it is read (`counter_lag`)."""


def poll_budget(every: int) -> float:
    """Seconds a poll may take: it must end before the next one is due, so all of `every` but ten seconds
    (the runner cancels it then: scheduler.poll_deadline)."""
    return max(10.0, every - 10.0)


def counter_lag(*, bucket: int, every: int, delay: int, refresh: int, longest_window: int) -> int:
    """Seconds after a bucket-aligned instant `b` at which a source's `_total` counters hold exactly the
    buckets before `b`: the poll that makes `b` the end of the final buckets (`final_until`) fires `refresh`
    (rounded up to whole buckets, cut to the longest window) plus `delay` after it, and its result stands
    until the next poll, `every` later. Read `COUNTER_READ_MARGIN` seconds before that (docs/exact-ranges.md)."""
    return min(_round_up(refresh, bucket), longest_window) + every + delay - COUNTER_READ_MARGIN


def chunks(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """Split [start, end) into consecutive spans of at most `size` seconds."""
    return [(s, min(s + size, end)) for s in range(start, end, size)]


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def isoformat_z(t: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as the vendors write it: 2026-01-01T10:00:00.000Z."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    """Parse an ISO-8601 timestamp; a missing zone means UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
