"""The records that flow from providers to the store, and the few exception types.

A provider knows nothing of Prometheus: it turns a vendor API into `Bucket` records, plain data.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec

Labels = tuple[tuple[str, str], ...]
"""The grouping labels of a series, sorted by name: (("media_type", "voice"), ("queue", "q1"))."""

MISSING_LABEL = "none"
"""The label value of a grouping dimension the vendor left out, null or empty for a group: a Kore.ai record
with `queueId: null` (a contact abandoned before it reached a queue), a Genesys group without `queueId` (an
outbound call outside any queue). Its contacts are real and count; they form one series of their own.
Not the empty string: Prometheus reads `queue=""` as no `queue` label at all, so the series would merge with
an ungrouped one in every query. A word no vendor id looks like (queue and agent ids are `qu-...` or UUIDs,
media types are the vendors' own words), and one every provider uses (docs/providers/<vendor>.md)."""

# --- vendor text: what may become a label value ---------------------------------------------------------

MAX_LABEL_VALUE = 1024
"""Characters in a label value (an id, a name, a media type) or an error text; a longer one is cut (see
`clean_text`). A real queue or agent id or name is far shorter; a longer one would only swell /metrics."""

# What no label value may hold: control characters (C0, DEL, C1) and lone UTF-16 surrogates, which JSON's
# `\ud800` escapes can produce but UTF-8 cannot encode (one such name made every render fail).
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_WHITESPACE = frozenset("\t\n\r\x0b\x0c")
REPLACEMENT = "\ufffd"
_DIGEST = 8  # bytes of the hash that keeps two long values distinct once cut


def clean_text(text: str, limit: int = MAX_LABEL_VALUE) -> str:
    """`text` made fit for a label value: every control character a space (tab, newline...) or U+FFFD (the
    rest), every lone surrogate U+FFFD, and at most `limit` characters. A longer value is cut and ends in
    `…` and a hash of the whole value, so that two long ids that share their start stay two series."""
    if len(text) <= limit and text.isprintable():  # the common case: one pass in C, nothing to change
        return text
    cleaned = _NOT_TEXT.sub(lambda m: " " if m.group() in _WHITESPACE else REPLACEMENT, text)
    if len(cleaned) <= limit:
        return cleaned
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST).hexdigest()
    return f"{cleaned[: limit - 1 - 2 * _DIGEST]}…{digest}"


def well_formed(text: str) -> str:
    """`text` as UTF-8 can hold it: each lone UTF-16 surrogate (JSON's `\\ud800` escapes make them) becomes
    U+FFFD; a high and low surrogate side by side become the character they encode. For every text that
    leaves the process (label values, pages, log lines), so that none can fail to encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def utf8(text: str) -> bytes:
    """`text` in UTF-8, never an error (see `well_formed`)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return well_formed(text).encode("utf-8")


def clean_labels(labels: Labels) -> Labels:
    """Every value of a label set through `clean_text` (the same object back when nothing changes)."""
    for _, v in labels:  # a loop, not all() of a generator: a third of the time, once per label set a poll
        if len(v) > MAX_LABEL_VALUE or not v.isprintable():
            return tuple((k, clean_text(v)) for k, v in labels)
    return labels


def _clean_names(names: Mapping[str, str]) -> Mapping[str, str]:
    if all(
        len(k) <= MAX_LABEL_VALUE and k.isprintable() and len(v) <= MAX_LABEL_VALUE and v.isprintable()
        for k, v in names.items()
    ):
        return names
    return {clean_text(k): clean_text(v) for k, v in names.items()}


# --- vendor numbers: what may become a bucket's value -----------------------------------------------------

MAX_SECONDS = 1e12
"""The most seconds one vendor figure (a bucket's handle, talk, hold or ACW time) may hold: 31,700 years.
More is a vendor's bug; the bound also keeps the store's whole millionths (at most 10^18 a figure) finite."""
MAX_COUNT = 1e12
"""The most contacts one vendor figure (a bucket's handled, offered... count) may hold."""

MAX_NAMES = 100_000
"""Queue or agent names one source keeps from its name lookups (those in the data are shown)."""


def figure(value: object) -> str:
    """A vendor's value for an error line: short, whatever its size (`-5`, `1.7e+308`, `about 10^400`);
    repr() of a JSON integer thousands of digits long would be a line that long, or a ValueError."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(10**20) < value < 10**20:
        return f"about {'-' if value < 0 else ''}10^{int(abs(value).bit_length() * math.log10(2))}"
    text = repr(value)
    if isinstance(value, float) and text.endswith(".0"):
        text = text[:-2]
    return text if len(text) <= 40 else f"{text[:37]}..."


def out_of_range(value: object, limit: float, unit: str) -> str | None:
    """Why a vendor's figure cannot be one, as the end of an error line (`is negative`), or None if it can.

    `value` is the JSON number as decoded and `limit` is in its `unit` (`ms`, `s`, `contacts`). A JSON
    integer of any size is judged without converting it: float(10**400) raises OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "is not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if value < 0:
        return "is negative"
    if value > limit:
        return f"is above the limit of {limit:.0e} {unit}"
    return None


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


class Sums(msgspec.Struct, frozen=True, gc=False):
    """A label set's sums over one bucket, one window, or every counted bucket: one number per `Field`, in
    `Field`'s order, zero where the vendor reported nothing (vendors omit empty metrics). The store holds
    whole millionths (ints), and so do its snapshots (`store.Snapshot.scale`); a vendor's averages and
    `Snapshot.in_seconds()` hold seconds and contacts (floats). `sums[field]` reads one.

    Not a dict per label set: at 100k label sets, the store's and a snapshot's dicts of dicts were walked
    entry by entry by every full garbage collection (a dict holding dicts is never untracked), 50 to 70 ms
    with the GIL held. A Struct with `gc=False` is not a container the collector knows, so a dict of label
    sets (untracked tuples of str) and Sums is untracked, and never walked (docs/performance.md,
    "Values the collector never walks"). It is also about a third of a small dict's size.
    """

    handle_time_seconds: float = 0.0
    contacts_handled: float = 0.0
    talk_time_seconds: float = 0.0
    hold_time_seconds: float = 0.0
    acw_time_seconds: float = 0.0
    contacts_offered: float = 0.0
    contacts_answered: float = 0.0
    contacts_abandoned: float = 0.0

    def __getitem__(self, field: str) -> float:
        value: float = getattr(self, field)
        return value


SUMS_FIELDS: tuple[str, ...] = Sums.__struct_fields__
"""The Sums' fields, which are `Field`'s values in its order (tests/unit/test_store.py holds them so):
`SUMS_INDEX[key]` is a field's place in `msgspec.structs.astuple(sums)`."""
SUMS_INDEX: Mapping[str, int] = {name: i for i, name in enumerate(SUMS_FIELDS)}


MICRO = 1_000_000
"""The store's unit, a millionth of a second or of a contact: every vendor's figures are whole ms or s (or
contacts), exact in millionths, so that sums of any number of buckets are exact (store.SourceStore)."""


if TYPE_CHECKING:
    _AsMapping = Mapping[str, float]
else:

    class _AsMapping:  # a Struct's bases may hold no state (nor define __init__); Micros is registered below
        __slots__ = ()


class Micros(msgspec.Struct, _AsMapping, frozen=True, gc=False, eq=False):
    """A bucket's values made straight in the store's unit, by a provider of many buckets (Genesys): `sums` in
    whole millionths (`MICRO`), and which fields the vendor reported, one bit per field in `SUMS_FIELDS`'
    order. It reads as any bucket's values do, a Mapping of the reported fields in seconds and contacts; the
    store takes `sums` as they are. Made as a dict of seconds in the provider and converted to millionths in
    the store, the 56,000 buckets of a 100,000-agent poll were a dict and eight conversions each, 100 to 200 ms
    (docs/performance.md, "Straight to millionths").

    A Struct with `gc=False`, so the collector never walks it (nor the `Bucket` that holds it), which acts as a
    Mapping: registered as one below, as a Struct cannot subclass it; the type checker sees it as one."""

    sums: Sums
    reported: int

    def __getitem__(self, key: str) -> float:
        i = SUMS_INDEX.get(key)
        if i is None or not self.reported >> i & 1:
            raise KeyError(key)
        value: int = getattr(self.sums, SUMS_FIELDS[i])
        return value / MICRO

    def __iter__(self) -> Iterator[str]:
        return (name for i, name in enumerate(SUMS_FIELDS) if self.reported >> i & 1)

    def __len__(self) -> int:
        return self.reported.bit_count()

    __hash__ = None  # type: ignore[assignment]  # as a dict's: equal to mappings, so not hashable

    def __repr__(self) -> str:
        return f"Micros({dict(self.items())!r})"

    if not TYPE_CHECKING:  # Mapping's own, as a subclass would inherit them
        __contains__ = Mapping.__contains__
        __eq__ = Mapping.__eq__
        keys = Mapping.keys
        items = Mapping.items
        values = Mapping.values
        get = Mapping.get


Mapping.register(Micros)


def make_labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


class Bucket(msgspec.Struct, frozen=True, gc=False):
    """What one provider reports for one label set over one closed time bucket.

    A msgspec Struct that the garbage collector does not track (`gc=False`: it holds no container that could
    close a cycle): a 100k-agent poll makes some 100k of them, and as dataclass instances every full
    collection while the poll ran walked them all, 27 ms per 60,000 with the GIL held, the longest stalls of
    the event loop at that size (docs/performance.md, "Event-loop stalls").

    `values` holds only the fields the provider reported; a field the provider says it gives
    (`Provider.fields`) but left out of a bucket means zero: vendors omit empty metrics. Its keys are
    `Field`s or their plain str values (a `Field` finds either: a StrEnum member hashes and compares as its
    value). A provider of many buckets keys them by the plain str: a dict of str and floats is one the
    garbage collector does not track, where a `Field` key (an object with a `__dict__`) makes it walked
    by every full collection while the poll runs (docs/performance.md, "Event-loop stalls"). Or it makes
    them straight in the store's unit, a `Micros`, which reads the same.
    """

    start: int
    end: int
    labels: Labels
    values: Mapping[str, float]


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
    """Display names of queues and agents, for the `_info` metrics.

    Ids and names are vendor text: they are made fit for label values here, where they enter (`clean_text`),
    the ids as the store makes the same ids in the data's labels, so that the two still match.
    """

    queues: Mapping[str, str] = field(default_factory=dict)
    agents: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", _clean_names(self.queues))
        object.__setattr__(self, "agents", _clean_names(self.agents))


class ConfigError(Exception):
    """The configuration is unusable: one line, exit code 2."""


class ProviderError(Exception):
    """A poll failed. The message names what failed and never carries a secret."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ProviderError):
    """The provider said "slow down" and we could not wait long enough within the poll."""
