"""The records that flow from providers to the store, and the few exception types.

A provider knows nothing of Prometheus: it turns a vendor API into `Bucket` records, plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

Labels = tuple[tuple[str, str], ...]
"""The grouping labels of a series, sorted by name: (("media_type", "voice"), ("queue", "q1"))."""


class Field(StrEnum):
    """What a bucket can measure. Each one becomes an `aht_<value>` gauge summed over a window."""

    HANDLE_TIME = "handle_time_seconds"
    CONTACTS_HANDLED = "contacts_handled"
    TALK_TIME = "talk_time_seconds"
    HOLD_TIME = "hold_time_seconds"
    ACW_TIME = "acw_time_seconds"
    CONTACTS_OFFERED = "contacts_offered"
    CONTACTS_ANSWERED = "contacts_answered"
    CONTACTS_ABANDONED = "contacts_abandoned"


def make_labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


@dataclass(frozen=True, slots=True)
class Bucket:
    """What one provider reports for one label set over one closed time bucket.

    `values` holds only the fields the provider reported; a field the provider says it gives
    (`Provider.fields`) but left out of a bucket means zero: vendors omit empty metrics.
    """

    start: int
    end: int
    labels: Labels
    values: Mapping[Field, float]


@dataclass(frozen=True, slots=True)
class AverageUpdate:
    """What a provider of ready-made averages (Ozonetel) learned in one poll.

    `averages` maps a label set to the provider's own AHT over its fixed span, or None when the
    provider reports no handled contact (the series is then absent, never 0). Label sets not
    mentioned keep their last value; `removed` ones (e.g. a target the provider says is invalid)
    are dropped.
    """

    averages: Mapping[Labels, float | None]
    removed: frozenset[Labels] = frozenset()


@dataclass(frozen=True, slots=True)
class Names:
    """Display names of queues and agents, for the `_info` metrics."""

    queues: Mapping[str, str] = field(default_factory=dict)
    agents: Mapping[str, str] = field(default_factory=dict)


class ConfigError(Exception):
    """The configuration is unusable: one line, exit code 2."""


class ProviderError(Exception):
    """A poll failed. The message names what failed and never carries a secret."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ProviderError):
    """The provider said "slow down" and we could not wait long enough within the poll."""
