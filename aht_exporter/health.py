"""Per-source health: what the `aht_exporter_*` metrics and the status page report."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

# Poll wall time buckets (seconds): a poll is one request on a good day and minutes of backfill on a bad one.
POLL_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class Quota:
    """A provider's request budget for one endpoint, as the vendor's last reply on it reported it.

    Each part is None where the vendor did not say: only Genesys reports a limit and what is left
    (docs/providers/genesys.md, Rate-limit headers); any vendor's 429 says nothing is left, and its
    `Retry-After` when more will be.
    """

    limit: float | None = None  # requests allowed in the vendor's current window
    remaining: float | None = None  # of those, not yet used
    reset_at: float | None = None  # Unix time the window resets or the vendor lets us retry


@dataclass
class SourceHealth:
    source: str
    provider: str
    stale_after: int
    up: bool = False
    polled: bool = False  # finished at least one poll, successful or not (for /-/ready)
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    consecutive_failures: int = 0
    next_poll: float | None = None
    data_end: int | None = None
    polls: Counter[str] = field(default_factory=Counter)
    # Requests by (endpoint, status): the endpoint is a fixed name per provider (`token`, `aggregates`, ...).
    api_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    # By endpoint; replaced whole on every change, never changed in place, so that a copy made for
    # rendering in another thread (scheduler's `view`) can share it.
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    rate_limited: int = 0
    tokens_issued: int = 0  # tokens the vendor issued to this source (Ozonetel caps them at 10 an hour)
    series_dropped: int = 0
    series: int = 0
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(POLL_DURATION_BUCKETS))
    duration_sum: float = 0.0
    duration_count: int = 0

    # RequestCounter protocol, fed by the source's ApiClient
    def count_request(self, endpoint: str, status: str) -> None:
        self.api_requests[(endpoint, status)] += 1

    def record_quota(self, endpoint: str, quota: Quota | None) -> None:
        """The budget the vendor's latest reply on `endpoint` reported; None (a reply that reported none)
        forgets the endpoint's, so that no reading outlives what the vendor last said."""
        if quota is None:
            if endpoint in self.quotas:
                self.quotas = {k: v for k, v in self.quotas.items() if k != endpoint}
        elif self.quotas.get(endpoint) != quota:
            self.quotas = {**self.quotas, endpoint: quota}

    def count_rate_limited(self) -> None:
        self.rate_limited += 1

    def count_token_issued(self) -> None:
        """One access token the provider's token endpoint issued (ClientCredentialsAuth's `on_token`)."""
        self.tokens_issued += 1

    @property
    def stale(self) -> bool:
        """Data series are withdrawn after `stale_after` consecutive failed polls."""
        return self.consecutive_failures >= self.stale_after

    def record_success(self, now: float, duration: float, data_end: int) -> None:
        self.up = True
        self.polled = True
        self.last_success = now
        self.consecutive_failures = 0
        self.data_end = data_end
        self.polls["success"] += 1
        self._observe(duration)

    def record_failure(self, now: float, duration: float, error: str) -> None:
        self.up = False
        self.polled = True
        self.last_error = error
        self.last_error_at = now
        self.consecutive_failures += 1
        self.polls["error"] += 1
        self._observe(duration)

    def _observe(self, duration: float) -> None:
        i = bisect.bisect_left(POLL_DURATION_BUCKETS, duration)
        if i < len(self.duration_buckets):
            self.duration_buckets[i] += 1
        self.duration_sum += duration
        self.duration_count += 1

    def histogram_buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs including +Inf, as Prometheus histograms want them."""
        out: list[tuple[str, float]] = []
        running = 0
        for le, n in zip(POLL_DURATION_BUCKETS, self.duration_buckets, strict=True):
            running += n
            out.append((repr(le), float(running)))
        out.append(("+Inf", float(self.duration_count)))
        return out
