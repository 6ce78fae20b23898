"""Metric families from store snapshots and health, rendered once per poll into cached bytes.

Scrapes never call a provider and never render the data: they pick one of the four cached bodies (text or
OpenMetrics, identity or gzip) and finish it with a small tail read at that scrape (the process_* and
python_gc_* families, `ScrapeTail`), so a scrape costs the same at 100 series or 100,000.

The data series are formatted straight from each source's snapshot, once per poll of that source, into
the very bytes prometheus_client would write for the same gauges (the unit tests compare the two); the
few health series go through prometheus_client itself. docs/performance.md has the figures.
"""

from __future__ import annotations

import logging
import math
import platform
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
from isal import isal_zlib
from prometheus_client import ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.gc_collector import GCCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from aht_exporter import __version__
from aht_exporter.health import SourceHealth
from aht_exporter.model import SUMS_INDEX, Field, Labels, Sums, clean_text, utf8
from aht_exporter.store import Snapshot

log = logging.getLogger(__name__)

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_SERVED = "Served from the last poll; scrapes never call the provider."

FIELD_HELP: dict[Field, str] = {
    Field.HANDLE_TIME: "Total handle time of the contacts handled in the window, in seconds.",
    Field.CONTACTS_HANDLED: "Contacts handled in the window.",
    Field.TALK_TIME: "Total talk time of the contacts handled in the window, in seconds.",
    Field.HOLD_TIME: "Total hold time of the contacts handled in the window, in seconds.",
    Field.ACW_TIME: "Total after-contact work time of the contacts handled in the window, in seconds.",
    Field.CONTACTS_OFFERED: "Contacts offered in the window.",
    Field.CONTACTS_ANSWERED: "Contacts answered in the window.",
    Field.CONTACTS_ABANDONED: "Contacts abandoned in the window.",
}


@dataclass(frozen=True, slots=True)
class SourceView:
    """One source as the exposition sees it.

    `labels` and `queue_labels` are the source's routing labels from its config (config.SourceConfig's
    `routing_labels` and `queue_routing_labels`: each queue's already merged over the source's).
    """

    health: SourceHealth
    snapshot: Snapshot | None
    labels: Labels = ()
    queue_labels: Mapping[str, Labels] = field(default_factory=dict)
    # Seconds after a bucket boundary at which the `_total` counters hold exactly the buckets before it
    # (timebuckets.counter_lag); None for a source without counters (Ozonetel).
    counter_lag: int | None = None


OPENMETRICS_EOF = b"# EOF\n"

_FINAL = (
    "summed over every final bucket since counting began: a bucket is added once, when it is older than the "
    "source's refresh (docs/exact-ranges.md)"
)
TOTAL_HELP: dict[Field, str] = {
    Field.HANDLE_TIME: f"Handle time of the contacts handled, in seconds, {_FINAL}.",
    Field.CONTACTS_HANDLED: f"Contacts handled, {_FINAL}.",
    Field.TALK_TIME: f"Talk time of the contacts handled, in seconds, {_FINAL}.",
    Field.HOLD_TIME: f"Hold time of the contacts handled, in seconds, {_FINAL}.",
    Field.ACW_TIME: f"After-contact work time of the contacts handled, in seconds, {_FINAL}.",
    Field.CONTACTS_OFFERED: f"Contacts offered, {_FINAL}.",
    Field.CONTACTS_ANSWERED: f"Contacts answered, {_FINAL}.",
    Field.CONTACTS_ABANDONED: f"Contacts abandoned, {_FINAL}.",
}
"""The `_total` counters' HELP texts (also in the backfill's OpenMetrics)."""


class _Families:
    """Metric families already collected, as the collector `generate_latest` wants."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def default_scrape_collectors() -> list[Collector]:
    """The process's own families, and CPython's garbage collector's.

    - process_*: CPU seconds, resident and virtual memory, open and maximum file descriptors, start time
      (prometheus_client's ProcessCollector; it reads /proc and yields nothing where there is none).
    - python_gc_*: objects collected, uncollectable objects and collections, per generation. Cheap, and
      what tells a growing resident memory from garbage the cyclic collector has yet to reach (replies
      that refer to themselves wait for it: docs/performance.md).
    - Not python_info: aht_exporter_build_info already carries python_version, and a second series
      saying the same thing would only cost bytes at every scrape.
    """
    collectors: list[Collector] = [ProcessCollector(registry=None)]
    if platform.python_implementation() == "CPython":  # as prometheus_client's own default registry decides
        # GCCollector registers itself somewhere: a registry of its own, never the process-wide one.
        collectors.append(GCCollector(registry=CollectorRegistry()))
    return collectors


class ScrapeTail:
    """The families read anew at every scrape, written after the cached part of each body.

    Values such as CPU seconds and open file descriptors must be current at the scrape, not as of the
    last poll. They are a few families, rendered by prometheus_client itself in the format asked for:
    a fraction of a millisecond, whatever the number of data series (docs/performance.md).

    A collector that fails is left out of that scrape (logged when it starts failing); the body is
    served without it.
    """

    def __init__(self, collectors: Sequence[Collector] | None = None) -> None:
        self._collectors = list(default_scrape_collectors() if collectors is None else collectors)
        self._failing: set[int] = set()  # indexes of the collectors whose last collect failed

    def collect(self) -> list[Metric]:
        families: list[Metric] = []
        for i, collector in enumerate(self._collectors):
            try:
                families += collector.collect()
            except Exception as exc:  # an unexpected /proc, or a bug: never the whole scrape
                if i not in self._failing:
                    error = clean_text(f"{type(exc).__name__}: {exc}")
                    log.error(
                        "scrape-time metrics left out", extra={"collector": type(collector).__name__, "error": error}
                    )
                    self._failing.add(i)
            else:
                self._failing.discard(i)
        return families

    def render(self, *, openmetrics: bool) -> bytes:
        """The tail of one body; in OpenMetrics it ends with the body's only `# EOF` line."""
        families = _Families(self.collect())
        if openmetrics:
            return generate_openmetrics(families)  # type: ignore[no-any-return,no-untyped-call]
        return generate_text(families)


GZIP_LEVEL = 1
"""ISA-L's fastest level (python-isal's `isal_zlib`, zlib's interface over Intel's ISA-L). On a 19 MiB body
of this exposition it deflates in 37 ms to 4.4 MiB, where zlib takes 340 ms at its default level 6 for 4.5
MiB and 153 ms at level 1 for 4.9 MiB: compression was more than half of a render (docs/performance.md,
"Issue 18, continued"). Its output is plain deflate, which every gzip decoder reads; it releases the GIL while
it compresses."""


def deflater() -> isal_zlib.Compress:
    """A fresh raw-deflate compressor (no zlib or gzip wrapper): the start of a segment or a scrape's tail."""
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)


# --- CRC-32 of concatenated segments, without reading their bytes again ----------------------------------
# zlib's crc32_combine (crc32.c, zlib 1.2.12 and later), which Python's zlib does not expose: the CRC of A+B
# is CRC(A) times x^(8 len B) modulo the CRC polynomial, plus CRC(B), in GF(2). The power is computed once
# per segment (`Segment.shift`), so that a render combines each segment's CRC in one multiplication.
_CRC_POLY = 0xEDB88320  # reflected, as zlib's


def _multmodp(a: int, b: int) -> int:
    """a times b modulo the CRC polynomial (reflected bit order)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return tuple(table)


_X2N = _x2n_table()  # x^(2^k) modulo the polynomial


def crc_shift(size: int) -> int:
    """x^(8 size) modulo the CRC polynomial: what a CRC is multiplied by when `size` bytes follow."""
    p, k = 1 << 31, 3
    while size:
        if size & 1:
            p = _multmodp(_X2N[k & 31], p)
        size >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, shift: int) -> int:
    """The CRC-32 of A+B from CRC(A), CRC(B) and `crc_shift(len(B))`."""
    return _multmodp(shift, crc1) ^ crc2


KEEP_TEXT = 64 * 1024
"""A segment smaller than this keeps its text beside its deflate data (headers, a small source's families,
the health part): making it again would cost more than it holds."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes of a body as a deflate segment of their own: compressed by a fresh compressor and flushed to a
    byte boundary, so that segments concatenated in any order are one valid deflate stream (no segment refers
    back into another). A source's lines are compressed once, when its poll changes them; a render of the body
    only strings segments together, and makes its CRC-32 from theirs.

    A big segment does not keep its text: a gzip scrape (Prometheus always asks for gzip) never needs it, and
    at 100k series the text is 23 MiB where the deflate data is 5. A scrape that asks for no compression gets
    it inflated a slice at a time as it is written (`text_slices`), and nothing of it is kept."""

    deflated: bytes
    size: int  # bytes of text
    crc: int  # CRC-32 of the text
    shift: int  # crc_shift(size)
    kept: bytes | None = None  # the text itself, when smaller than KEEP_TEXT

    @classmethod
    def of(cls, raw: bytes) -> Segment:
        return cls.of_pieces((raw,))

    @classmethod
    def of_pieces(cls, pieces: Iterable[bytes]) -> Segment:
        """The segment of the pieces' text, concatenated, compressed and checksummed one piece at a time: a
        family's text is never held whole. At 100,000 agents a family is some 10 MB; joined into one str,
        then encoded into bytes, each was two fresh allocations of that size, whose pages the kernel had to
        map and zero as they were first written: 20 to 30 ms of CPU per family, some 0.15 s in the poll that
        formats the counters again (docs/performance.md, "Fewer copies and conversions")."""
        maker = SegmentMaker()
        for piece in pieces:
            maker.add(piece)
        return maker.segment()

    @property
    def raw(self) -> bytes:
        """The text: kept, or inflated from the deflate data whole."""
        return self.kept if self.kept is not None else b"".join(self.text_slices(self.size))

    def text_slices(self, limit: int) -> Iterator[bytes]:
        """The text, inflated at most `limit` bytes at a time: each step is one call into ISA-L, which
        releases the GIL (the server runs each in a worker thread). Raises if the text is not `size` bytes,
        which the body's Content-Length promised."""
        if self.kept is not None:
            yield self.kept
            return
        inflate = isal_zlib.decompressobj(-isal_zlib.MAX_WBITS)
        data, made = self.deflated, 0
        while True:
            piece = inflate.decompress(data, limit)
            data = inflate.unconsumed_tail
            if not piece and not data:
                break
            made += len(piece)
            yield piece
        if made != self.size:
            raise ValueError(f"a segment inflated to {made} bytes, not {self.size}")


class SegmentMaker:
    """A `Segment` made a piece at a time: each piece compressed and checksummed as it comes, then let go
    (`Segment.of_pieces`; the Renderer makes the families of the same label sets together, `source_lines`)."""

    __slots__ = ("_crc", "_deflate", "_deflated", "_size", "_small")

    def __init__(self) -> None:
        self._deflate = deflater()
        self._deflated: list[bytes] = []
        self._crc = self._size = 0
        self._small: list[bytes] = []  # the text while it is smaller than KEEP_TEXT

    def add(self, piece: bytes) -> None:
        self._deflated.append(self._deflate.compress(piece))
        self._crc = isal_zlib.crc32(piece, self._crc)  # ISA-L's: the same CRC-32, ten times faster than zlib's
        self._size += len(piece)
        if self._size < KEEP_TEXT:
            self._small.append(piece)
        elif self._small:
            self._small = []

    def segment(self) -> Segment:
        self._deflated.append(self._deflate.flush(isal_zlib.Z_SYNC_FLUSH))
        size = self._size
        kept = b"".join(self._small) if size < KEEP_TEXT else None
        deflated, self._deflated, self._small = b"".join(self._deflated), [], []
        return Segment(deflated, size, self._crc, crc_shift(size), kept)


Part = bytes | Segment
"""A part of a body to write: bytes, or a big segment of an uncompressed body, to inflate as it is written."""


def joined(parts: Iterable[Part]) -> bytes:
    """Parts as one body, big segments inflated (for --once, the tests and the benchmarks; never a scrape)."""
    return b"".join(part if isinstance(part, bytes) else part.raw for part in parts)


# A gzip member's header (RFC 1952): deflate, no flags, no time, no extra flags, unknown OS.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass(frozen=True, slots=True)
class CachedBody:
    """One format's body as the last render left it: everything but its per-scrape tail.

    `gzip_parts` is the start of ONE gzip member (some clients, httpx among them, decode only the first
    member of several): its header and the segments' deflate data, with `crc` and `size` the CRC-32 and
    length of `parts`. Each gzipped scrape ends it with its tail, compressed as the final deflate block, and
    the member's trailer; nothing cached is compressed again. `parts`, the uncompressed body, is the data's
    small segments' text (coalesced) and its big segments, to inflate as they are written (`Segment.text_slices`),
    then this format's end.
    """

    data: tuple[Part, ...]
    end: bytes
    gzip_parts: tuple[bytes, ...]
    crc: int
    size: int

    @property
    def parts(self) -> tuple[Part, ...]:
        return (*self.data, self.end) if self.end else self.data

    def finish(self, tail: bytes, *, gzipped: bool) -> tuple[Part, ...]:
        if not gzipped:
            return (*self.parts, tail)
        deflate = deflater()
        end = deflate.compress(tail) + deflate.flush()  # the final block
        trailer = struct.pack("<II", zlib.crc32(tail, self.crc), (self.size + len(tail)) & 0xFFFFFFFF)
        return (*self.gzip_parts, end + trailer)


@dataclass(frozen=True, slots=True)
class Rendered:
    """The two formats' cached bodies, and the tail each scrape adds to them.

    Parts are never joined: the text and OpenMetrics bodies share their data parts (the same bytes in
    both formats, and the same objects the renderer caches per source), the two gzip bodies share their
    compressed data part, and no scrape copies a body.
    """

    text_format: CachedBody
    openmetrics_format: CachedBody
    tail: ScrapeTail

    def body(self, *, openmetrics: bool, gzipped: bool) -> tuple[tuple[Part, ...], str]:
        """One scrape's body, as the parts to write one after another, and its content type. A gzipped body
        is bytes only; an uncompressed one has its big data segments to inflate as they are written."""
        cached = self.openmetrics_format if openmetrics else self.text_format
        parts = cached.finish(self.tail.render(openmetrics=openmetrics), gzipped=gzipped)
        return parts, (OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE)

    # Whole bodies as a scrape would get them now, for --once and the tests.
    def whole(self, *, openmetrics: bool, gzipped: bool) -> bytes:
        return joined(self.body(openmetrics=openmetrics, gzipped=gzipped)[0])

    @property
    def text(self) -> bytes:
        return self.whole(openmetrics=False, gzipped=False)

    @property
    def text_gzip(self) -> bytes:
        return self.whole(openmetrics=False, gzipped=True)

    @property
    def openmetrics(self) -> bytes:
        return self.whole(openmetrics=True, gzipped=False)

    @property
    def openmetrics_gzip(self) -> bytes:
        return self.whole(openmetrics=True, gzipped=True)


# The data families, in the order they appear; each is left out when no source fills it.
AHT_FAMILY = "aht_seconds"
QUEUE_INFO = "aht_queue_info"
AGENT_INFO = "aht_agent_info"
DATA_FAMILIES: tuple[tuple[str, str], ...] = (
    (
        AHT_FAMILY,
        "Average handle time over the window: handle time / contacts handled, in seconds; absent when "
        f"no contact was handled. {_SERVED}",
    ),
    *((f"aht_{f.value}", f"{FIELD_HELP[f]} {_SERVED}") for f in Field),
    # The _info series are gauges of value 1 (README, Metrics).
    (QUEUE_INFO, f"Display name of a queue (skill, campaign); value 1. {_SERVED}"),
    (AGENT_INFO, f"Display name of an agent; value 1. {_SERVED}"),
    *((f"aht_{f.value}_total", TOTAL_HELP[f]) for f in Field),
)
COUNTER_FAMILIES = frozenset(f"aht_{f.value}_total" for f in Field)


# The routing labels (README, "Labels for routing"): static, from the config, so they are shown for every
# source whatever its polls do (the alerts about a failing or never-polled source need them most), and kept
# off the data series (a label on every series would cost bytes on each of 100,000 series, and a reload that
# changed one would start every series anew). The shipped alerts join them by `source` (and `queue`).
SOURCE_LABELS_INFO = "aht_source_labels_info"
QUEUE_LABELS_INFO = "aht_queue_labels_info"
ROUTING_FAMILIES: tuple[tuple[str, str], ...] = (
    (
        SOURCE_LABELS_INFO,
        "Routing labels of a source, from the config (labels); one series per source, also one without "
        "labels; value 1.",
    ),
    (
        QUEUE_LABELS_INFO,
        "Routing labels of a queue, from the config (queue_labels over the source's labels); value 1.",
    ),
)


def _escape_label_value(value: str) -> str:
    """Backslash, double quote and newline, escaped as both formats want them in label values."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


# UTF-8, never an error. The store cleans every label value as it enters (model.clean_text); this is the last
# line of defence, so that no value that slipped past it can fail a render.
encode = utf8


def _family_header(name: str, help_text: str) -> bytes:
    """HELP and TYPE lines of a data family, the same in both formats.

    prometheus_client escapes a HELP text's backslashes and newlines in both formats, and its double
    quotes in OpenMetrics only: none of these texts has any, so the whole data part of a body reads
    the same in the text format and in OpenMetrics, and is formatted and compressed once for both.
    """
    if any(c in help_text for c in '"\\\n'):
        raise ValueError(f"the HELP text of {name} would read differently in the two formats")
    if name.endswith("_total"):
        # The `_total` counters have no TYPE line, in either format. In OpenMetrics a counter named
        # aht_handle_time_seconds_total is the family aht_handle_time_seconds, the name of the window gauge
        # beside it, and two families may not share a name; without a TYPE it is a family of its own name
        # (type unknown), and the body still reads the same in both formats. Queries are not affected.
        return f"# HELP {name} {help_text}\n".encode()
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode()


_HEADERS = {name: Segment.of(_family_header(name, text)) for name, text in (*DATA_FAMILIES, *ROUTING_FAMILIES)}


def go_float(value: float) -> str:
    """`floatToGoString`, with a fast path for the common case (finite, below a million), where it is repr."""
    v = float(value)
    if -math.inf < v < 1e6:
        return repr(v)
    return str(floatToGoString(v))  # type: ignore[no-untyped-call]


_FLOATS = msgspec.json.Encoder()


def value_texts(values: list[float]) -> list[str]:
    """Each value as `go_float` writes it, written by one C call for the lot.

    Python's `repr` was 200 to 300 ns a value, the largest part of a line; msgspec's JSON writer does a list
    of floats at about 40 ns each. It writes a port of Ryu (`ryu.h` in msgspec's source): the shortest digits
    that read back as the same double, the closest of them, which are the digits `repr` writes too. Where both
    write them without an exponent (from 1e-4 up; msgspec begins at 1e-5) the text is the same, and so is
    `floatToGoString`'s below 1e6. Anything else (NaN or an infinity, which msgspec writes `null`; an
    exponent, written `e`; 1e-5 to 1e-4, written `0.0000…`; 1e6 and more, which Go writes with an exponent)
    sends the whole list to `go_float`, whose text it is. The tests hold both to prometheus_client's
    (docs/performance.md, "Values written in one call").

    `values` must be floats (a true division makes them): msgspec writes an int with no `.0`."""
    if not values:
        return []
    text = _FLOATS.encode(values)
    if max(values) < 1e6 and b"e" not in text and b"n" not in text and b"0.0000" not in text:
        return text[1:-1].decode().split(",")
    return [go_float(v) for v in values]


LINES_AT_ONCE = 256
"""Label sets whose lines are formatted together, each family's into one string, before the next label sets'.

Few enough that their sums, numbers and texts stay in the CPU's caches from a family's lines to the next
family's (`_sample_chunks`): 256 made the render that counts a bucket at 100,000 agents about 10% faster
than 4,096, and 64 or 128 no faster than 256 (docs/performance.md, "Values written in one call"). Few
enough, too, for the lists of them: a list is walked item by item by every garbage collection of its
generation while it lives, and collections happen all through a render (the poll's thread allocates beside
it): a list of a family's 200,000 lines at 100,000 agents made each of them 10 to 15 ms longer, with the
GIL held. Short lists, and rows held in tuples (which the collector untracks once their items are), keep
that to well under a millisecond (docs/performance.md, "Values the collector never walks")."""


@dataclass(slots=True)
class LabelTexts:
    """Each label set's pairs, with source and provider, as the text before the window label and after it
    (`source_lines`), kept by the Renderer from one render of a source to the next: sorting and escaping
    a label set's pairs was 3 to 4 µs, for text that is the same each time (docs/performance.md, "Fewer
    copies and conversions"). Only the label sets of the last snapshot are kept: about 280 bytes each."""

    before: dict[Labels, str] = field(default_factory=dict)
    after: dict[Labels, str] = field(default_factory=dict)


def source_lines(
    view: SourceView, *, counters: bool = True, last: LabelTexts | None = None, made: LabelTexts | None = None
) -> Iterator[tuple[str, str | None]]:
    """One source's data samples: lines that read the same in the text format and in OpenMetrics, as
    (family, some of its lines), a family's lines in order, then (family, None) once it has no more.

    Exactly what prometheus_client writes for the same gauges (labels sorted by name, values as
    `floatToGoString` writes them), but formatted straight from the snapshot: at 100,000 series a few
    hundred milliseconds instead of seconds, once per poll of this source only. Lines come LINES_AT_ONCE
    label sets at a time, formatted as they are read (`Renderer` compresses each before the next is made),
    so that no family's text is ever held whole, and every family's lines of those label sets come before
    the next label sets' (`_sample_chunks`). A family with no line yields only its end. `counters=False`
    leaves out the `_total` families (the caller has them already: `Renderer`).

    `last`: the label texts of this source's last render, taken where they are; `made`: where the texts of
    this snapshot's label sets go, for the next (both of the same source and provider).
    """
    snap = view.snapshot
    assert snap is not None
    source = _escape_label_value(view.health.source)
    base = {"source": source, "provider": _escape_label_value(view.health.provider)}
    made = LabelTexts() if made is None else made
    # str values, not tuples: a dict of them is never tracked (LINES_AT_ONCE)
    befores, afters = made.before, made.after
    known_before, known_after = (last.before, last.after) if last is not None else ({}, {})

    def around_window(labels: Labels) -> tuple[str, str]:
        """A label set's pairs with source and provider, sorted by name, as the text before the window label
        and after it: made once per label set, for every window and for its counters. (No data label is
        named window: data labels are the providers' group_by dimensions, queue, agent and media_type.)"""
        before = befores.get(labels)
        if before is None:
            before = known_before.get(labels)
            if before is not None:
                befores[labels], afters[labels] = before, known_after[labels]
                return before, known_after[labels]
            series = dict(base)
            series.update((k, _escape_label_value(v)) for k, v in labels)
            pairs = sorted(series.items())
            before = befores[labels] = "".join(f'{k}="{v}",' for k, v in pairs if k < "window")
            afters[labels] = "".join(f',{k}="{v}"' for k, v in pairs if k > "window")
        return before, afters[labels]

    # Tuples, not lists: a list is walked, item by item, by every garbage collection of its generation while
    # it lives, where a tuple of untracked items is untracked by the first (LINES_AT_ONCE).
    sums = tuple(
        [
            (f'{before}window="{window}"{after}', totals)
            for w, groups in snap.windows.items()
            for window in (_escape_label_value(w),)
            for labels, totals in groups.items()
            for before, after in (around_window(labels),)
        ]
    )
    fields = [f for f in Field if f in snap.fields]
    yield from _sample_chunks(sums, [(f"aht_{f.value}", SUMS_INDEX[f.value]) for f in fields], snap.scale, aht=True)

    def info(family: str, label: str, names: Mapping[str, str]) -> Iterator[tuple[str, str | None]]:
        rows = tuple(names.items())
        for i in range(0, len(rows), LINES_AT_ONCE):
            yield (
                family,
                "".join(
                    [
                        f'{family}{{{label}="{_escape_label_value(key)}",{label}_name="{_escape_label_value(name)}",'
                        f'source="{source}"}} 1.0\n'
                        for key, name in rows[i : i + LINES_AT_ONCE]
                    ]
                ),
            )
        yield family, None

    yield from info(QUEUE_INFO, "queue", snap.names.queues)
    yield from info(AGENT_INFO, "agent", snap.names.agents)
    if counters and snap.totals:
        counter_rows = tuple(
            [
                ((before + after[1:]) if not before else (before[:-1] + after), t)
                for labels, t in snap.totals.items()
                for before, after in (around_window(labels),)
            ]
        )
        names = [(f"aht_{f.value}_total", SUMS_INDEX[f.value]) for f in fields]
        yield from _sample_chunks(counter_rows, names, snap.scale, aht=False)


_HANDLE, _HANDLED = SUMS_INDEX[Field.HANDLE_TIME.value], SUMS_INDEX[Field.CONTACTS_HANDLED.value]


def _sample_chunks(
    rows: tuple[tuple[str, Sums], ...], families: list[tuple[str, int]], scale: int, *, aht: bool
) -> Iterator[tuple[str, str | None]]:
    """The rows' lines in each family (its name, and the index in `Sums` of its value; with `aht`, the AHT
    gauge's first), LINES_AT_ONCE rows at a time: each row's numbers are read once, for all its families.

    Row by row rather than family by family: a 100,000-agent snapshot's sums and texts are tens of MB,
    scattered through memory, and reading them once per family missed the CPU's caches each time (a value
    read and divided took 180 ns where it takes 60 in a row of sums made together); a few hundred rows
    stay in cache from the first family to the last (docs/performance.md, "Values written in one call")."""
    astuple = msgspec.structs.astuple
    for i in range(0, len(rows), LINES_AT_ONCE):
        part = rows[i : i + LINES_AT_ONCE]
        texts = [text for text, _ in part]
        columns = tuple(zip(*[astuple(totals) for _, totals in part], strict=True))
        if aht:
            handled = [
                (text, h / n) for text, h, n in zip(texts, columns[_HANDLE], columns[_HANDLED], strict=True) if n > 0
            ]
            averages = value_texts([average for _, average in handled])
            yield (
                AHT_FAMILY,
                "".join([f"{AHT_FAMILY}{{{text}}} {v}\n" for (text, _), v in zip(handled, averages, strict=True)]),
            )
        for name, index in families:
            values = value_texts([v / scale for v in columns[index]])
            yield name, "".join([f"{name}{{{text}}} {v}\n" for text, v in zip(texts, values, strict=True)])
    if aht:
        yield AHT_FAMILY, None
    for name, _ in families:
        yield name, None


def routing_samples(view: SourceView) -> dict[str, bytes]:
    """One source's routing-label info series, per family: lines that read the same in both formats."""
    source = _escape_label_value(view.health.source)

    def label_text(labels: Labels, **own: str) -> str:
        # Validated names never collide with `source` or `queue` (config.RESERVED_LABELS).
        series = {**{k: _escape_label_value(v) for k, v in labels}, "source": source, **own}
        return ",".join(f'{k}="{v}"' for k, v in sorted(series.items()))

    out = {SOURCE_LABELS_INFO: encode(f"{SOURCE_LABELS_INFO}{{{label_text(view.labels)}}} 1.0\n")}
    queues = [
        f"{QUEUE_LABELS_INFO}{{{label_text(labels, queue=_escape_label_value(queue))}}} 1.0\n"
        for queue, labels in view.queue_labels.items()
    ]
    if queues:
        out[QUEUE_LABELS_INFO] = encode("".join(queues))
    return out


def routing_part(views: Sequence[SourceView]) -> list[Segment]:
    """The routing-label info series of every source, stale or never polled alike: a line per source and
    labelled queue, formatted anew each render (they change only with the config; a few lines a source)."""
    routing = [routing_samples(view) for view in views]
    out: list[Segment] = []
    for name, _ in ROUTING_FAMILIES:
        lines = [chunks[name] for chunks in routing if name in chunks]
        if lines:
            out += (_HEADERS[name], Segment.of(b"".join(lines)))
    return out


_AS_OF = "As of the last poll: scrapes never call the provider."


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The outcome of the last config load (the one at start, then each SIGHUP or POST /-/reload)."""

    successful: bool
    success_timestamp: float  # Unix time of the last successful one


def quota_families(healths: Sequence[SourceHealth]) -> tuple[Metric, ...]:
    """The request budget each provider endpoint's last reply reported (SourceHealth.quotas): a series only
    where the vendor said (only Genesys reports a limit; any "slow down" says none is left)."""
    names = ["source", "provider", "endpoint"]
    limit = GaugeMetricFamily(
        "aht_exporter_api_quota_limit",
        "Requests the provider allows in its current rate-limit window, as its last reply on the endpoint said. "
        + _AS_OF,
        labels=names,
    )
    remaining = GaugeMetricFamily(
        "aht_exporter_api_quota_remaining",
        "Requests left in the provider's current rate-limit window, as its last reply on the endpoint said "
        f'(0 after a "slow down"). {_AS_OF}',
        labels=names,
    )
    reset = GaugeMetricFamily(
        "aht_exporter_api_quota_reset_timestamp_seconds",
        "Unix time the provider's rate-limit window resets, or its Retry-After ends, as its last reply on the "
        f"endpoint said. {_AS_OF}",
        labels=names,
    )
    for h in healths:
        for endpoint, quota in sorted(h.quotas.items()):
            key = [h.source, h.provider, endpoint]
            for family, value in ((limit, quota.limit), (remaining, quota.remaining), (reset, quota.reset_at)):
                if value is not None:
                    family.add_metric(key, value)
    return limit, remaining, reset


def health_families(healths: Sequence[SourceHealth], reload: ReloadStatus | None = None) -> Iterator[Metric]:
    names = ["source", "provider"]
    up = GaugeMetricFamily(
        "aht_exporter_source_up", f"1 if the source's last poll succeeded, else 0. {_AS_OF}", labels=names
    )
    last = GaugeMetricFamily(
        "aht_exporter_last_success_timestamp_seconds",
        f"Unix time of the source's last successful poll. {_AS_OF}",
        labels=names,
    )
    data_end = GaugeMetricFamily(
        "aht_exporter_data_end_timestamp_seconds",
        f"Unix time of the end of the newest closed bucket the source's data includes. {_AS_OF}",
        labels=names,
    )
    duration = HistogramMetricFamily(
        "aht_exporter_poll_duration_seconds", "Wall time of each poll, in seconds.", labels=names
    )
    polls = CounterMetricFamily("aht_exporter_polls", "Polls, by result.", labels=[*names, "result"])
    requests = CounterMetricFamily(
        "aht_exporter_api_requests",
        "HTTP requests to the provider, by endpoint (a fixed name per provider) and status code (error: no response).",
        labels=[*names, "endpoint", "status"],
    )
    limited = CounterMetricFamily(
        "aht_exporter_rate_limited",
        'Provider responses that said "slow down" (429 or the provider\'s own form).',
        labels=names,
    )
    tokens = CounterMetricFamily(
        "aht_exporter_tokens_issued",
        "Access tokens the provider's token endpoint issued to this source (Ozonetel allows 10 an hour per account).",
        labels=names,
    )
    dropped = CounterMetricFamily(
        "aht_exporter_series_dropped", "Data series dropped by the source's max_series limit.", labels=names
    )
    for h in healths:
        key = [h.source, h.provider]
        up.add_metric(key, 1.0 if h.up else 0.0)
        if h.last_success is not None:
            last.add_metric(key, h.last_success)
        if h.data_end is not None:
            data_end.add_metric(key, float(h.data_end))
        duration.add_metric(key, buckets=h.histogram_buckets(), sum_value=h.duration_sum)
        for result in ("success", "error"):
            polls.add_metric([*key, result], float(h.polls[result]))
        for endpoint, status in sorted(h.api_requests):
            requests.add_metric([*key, endpoint, status], float(h.api_requests[(endpoint, status)]))
        limited.add_metric(key, float(h.rate_limited))
        tokens.add_metric(key, float(h.tokens_issued))
        dropped.add_metric(key, float(h.series_dropped))
    yield from (up, last, data_end, duration, polls, requests, *quota_families(healths), limited, tokens, dropped)
    if reload is not None:  # Prometheus' own two, under our prefix
        yield GaugeMetricFamily(
            "aht_exporter_config_last_reload_successful",
            "1 if the last config reload succeeded (or there was none since start), 0 if it was refused.",
            value=1.0 if reload.successful else 0.0,
        )
        yield GaugeMetricFamily(
            "aht_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load: at start, or by a reload.",
            value=reload.success_timestamp,
        )
    info = GaugeMetricFamily(
        "aht_exporter_build_info", "Build information; value 1.", labels=["version", "python_version"]
    )
    info.add_metric([__version__, platform.python_version()], 1.0)
    yield info


def counting_families(views: Sequence[SourceView], storage_errors: int | None) -> Iterator[Metric]:
    """How the `_total` counters stand: each source's lag, what could not be recovered, and the store."""
    names = ["source", "provider"]
    lag = GaugeMetricFamily(
        "aht_exporter_totals_lag_seconds",
        "Seconds after a bucket boundary at which the source's _total counters hold exactly the buckets before "
        "it: refresh, every and delay, less 30 s (docs/exact-ranges.md).",
        labels=names,
    )
    lost = CounterMetricFamily(
        "aht_exporter_buckets_unrecovered",
        "Buckets that became final without ever being fetched (the exporter was down or failing for longer "
        "than the longest window): the _total counters lack their values.",
        labels=names,
    )
    for view in views:
        if view.counter_lag is None:
            continue
        key = [view.health.source, view.health.provider]
        lag.add_metric(key, float(view.counter_lag))
        lost.add_metric(key, float(view.snapshot.unrecovered if view.snapshot is not None else 0))
    yield from (lag, lost)
    if storage_errors is not None:
        yield CounterMetricFamily(
            "aht_exporter_storage_errors",
            "Failed opens, reads and writes of the state store (--storage.path); polling goes on from memory.",
            value=float(storage_errors),
        )


class _Health:
    """The health families as a client_python collector: few series, rendered anew each time."""

    def __init__(
        self,
        views: Sequence[SourceView],
        reload: ReloadStatus | None = None,
        storage_errors: int | None = None,
    ) -> None:
        self._views = views
        self._reload = reload
        self._storage_errors = storage_errors

    def collect(self) -> Iterator[Metric]:
        yield from counting_families(self._views, self._storage_errors)
        yield from health_families([v.health for v in self._views], self._reload)


class Renderer:
    """Renders the four bodies, keeping each source's data samples until that source's snapshot changes.

    A poll of one source re-formats that source's series only; the others' cached lines are reused.
    Not thread-safe: one render at a time (the Exporter's render task guarantees it).
    """

    def __init__(self, tail: ScrapeTail | None = None) -> None:
        self.tail = ScrapeTail() if tail is None else tail
        # (id(snapshot), source, provider) -> (snapshot, its samples per family, each compressed on its own).
        # Holding the snapshot keeps its id from being reused while the entry lives.
        self._samples: dict[tuple[int, str, str], tuple[Snapshot, dict[str, Segment]]] = {}
        # (source, provider) -> the totals mapping its counters were formatted from, and their segments.
        # Holding the mapping keeps its id from being reused while the entry lives.
        self._counters: dict[tuple[str, str], tuple[Mapping[Labels, Sums], dict[str, Segment]]] = {}
        # (source, provider) -> its label sets' texts as its last render made them (LabelTexts).
        self._texts: dict[tuple[str, str], LabelTexts] = {}
        # The sources whose data failed to render in the last render, and why: new failures only (a
        # snapshot that failed once is not tried again, and not reported again).
        self.failures: dict[str, str] = {}
        # The last config load's outcome, shown with the health families (the Exporter sets it).
        self.reload: ReloadStatus | None = None
        # The state store's failures so far, or None without a store (the Exporter sets a callable).
        self.storage_errors: Callable[[], int | None] = lambda: None

    def render(self, views: Sequence[SourceView]) -> Rendered:
        """CPU-bound: call it off the event loop."""
        samples: dict[tuple[int, str, str], tuple[Snapshot, dict[str, Segment]]] = {}
        counters: dict[tuple[str, str], tuple[Mapping[Labels, Sums], dict[str, Segment]]] = {}
        texts: dict[tuple[str, str], LabelTexts] = {}
        self.failures = {}
        for view in views:
            snap = view.snapshot
            if snap is None or view.health.stale:
                continue
            # A snapshot is immutable and each poll makes a new one: same object, same lines, same segments.
            source = (view.health.source, view.health.provider)
            key = (id(snap), *source)
            cached = self._samples.get(key)
            if cached is None:
                # The `_total` families change only when a bucket becomes final: a snapshot with no totals
                # changed shares the last one's mapping (store.SourceStore._running, copy on write), whose
                # segments are then reused (at 100k agents, 40% of the lines).
                last = self._counters.get(source)
                kept = last[1] if last is not None and last[0] is snap.totals else None
                made = LabelTexts()
                segments = self._source_segments(view, counters=kept is None, last=self._texts.get(source), made=made)
                texts[source] = self._texts.get(source, made) if view.health.source in self.failures else made
                if view.health.source not in self.failures:  # a source that failed shows nothing
                    segments.update(kept or {})
                    if snap.totals:
                        counted = {f: seg for f, seg in segments.items() if f in COUNTER_FAMILIES}
                        counters[source] = (snap.totals, counted)
                cached = (snap, segments)
            else:
                if source in self._counters:
                    counters[source] = self._counters[source]
                if source in self._texts:
                    texts[source] = self._texts[source]
            samples[key] = cached
        self._samples = samples  # snapshots no longer shown drop out
        self._counters = counters
        self._texts = texts
        data: list[Segment] = []
        for name, _ in DATA_FAMILIES:
            lines = [chunks[name] for _, chunks in samples.values() if name in chunks]
            if lines:
                data += (_HEADERS[name], *lines)
        data += routing_part(views)
        health = _Health(views, self.reload, self.storage_errors())
        health_openmetrics: bytes = generate_openmetrics(health)  # type: ignore[no-untyped-call]
        # OpenMetrics ends with one "# EOF" line: the scrape tail's, after the health part.
        if not health_openmetrics.endswith(OPENMETRICS_EOF):
            raise ValueError("prometheus_client's OpenMetrics no longer ends with # EOF")
        return bodies(data, generate_text(health), health_openmetrics.removesuffix(OPENMETRICS_EOF), self.tail)

    def _source_segments(
        self, view: SourceView, *, counters: bool, last: LabelTexts | None, made: LabelTexts
    ) -> dict[str, Segment]:
        """One source's samples, a segment per family that has lines; a source whose data cannot be rendered
        shows none, and the others still do."""
        try:
            # The families of a group of label sets (the windows', the counters') are made at once, a chunk of
            # lines at a time (source_lines), and each is finished as soon as it ends: a family's compressed
            # pieces, joined into its segment, are let go before the next group's are made, and so the
            # memory they take at once is one group's, not every family's twice.
            makers: dict[str, SegmentMaker] = {}
            segments: dict[str, Segment] = {}
            for family, text in source_lines(view, counters=counters, last=last, made=made):
                if text is None:
                    done = makers.pop(family, None)
                    if done is not None:
                        segments[family] = done.segment()
                elif text:
                    maker = makers.get(family)
                    if maker is None:
                        maker = makers[family] = SegmentMaker()
                    maker.add(encode(text))
            if makers:
                raise AssertionError(f"families never ended: {sorted(makers)}")
            return segments
        except Exception as exc:  # a bug, or a value nothing upstream caught: never the whole exposition
            source = view.health.source
            error = clean_text(f"its data could not be rendered ({type(exc).__name__}: {exc}): data omitted")
            log.error("render failed", extra={"source": source, "error": error})
            self.failures[source] = error
            return {}


# Parts smaller than this are joined with their small neighbours: fewer writes per scrape, and only
# small copies (family headers, the health part, the parts of a small exposition).
SMALL_PART = 64 * 1024


def bodies(data: Sequence[Segment], text_end: bytes, openmetrics_end: bytes, tail: ScrapeTail) -> Rendered:
    """The cached part of each format: the data segments both formats share, then each format's own end
    (the health families; OpenMetrics without its "# EOF", which ends the scrape tail instead).

    Only the ends are compressed here; the data segments were when their source last changed. The CRC-32
    that the gzip trailer needs is combined from the segments' own (a multiplication each, whatever their
    size), and shared by both formats up to their ends. The big segments' text is made only by a scrape that
    asks for no compression, as it writes them (`Segment.text_slices`).
    """
    crc = size = 0
    for segment in data:
        crc = crc32_combine(crc, segment.crc, segment.shift)
        size += segment.size
    text = _text_parts(data)
    deflated = [GZIP_HEADER, *(segment.deflated for segment in data)]

    def cached(end: bytes) -> CachedBody:
        last = Segment.of(end)
        return CachedBody(text, end, _coalesce([*deflated, last.deflated]), zlib.crc32(end, crc), size + len(end))

    return Rendered(cached(text_end), cached(openmetrics_end), tail)


def _text_parts(segments: Sequence[Segment]) -> tuple[Part, ...]:
    """An uncompressed body's data parts: the kept text of small segments, coalesced, and the big segments."""
    out: list[Part] = []
    run: list[bytes] = []
    for segment in segments:
        if segment.kept is not None:
            run.append(segment.kept)
            continue
        out += _coalesce(run)
        run = []
        out.append(segment)
    out += _coalesce(run)
    return tuple(out)


def _coalesce(parts: Sequence[bytes]) -> tuple[bytes, ...]:
    """Join each run of adjacent small parts into one; big parts stay the objects they are."""
    out: list[bytes] = []
    run: list[bytes] = []
    for part in parts:
        if len(part) < SMALL_PART:
            run.append(part)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(part)
    if run:
        out.append(b"".join(run))
    return tuple(p for p in out if p)


def render(views: Sequence[SourceView], tail: ScrapeTail | None = None) -> Rendered:
    """Render both formats' cached bodies from scratch. CPU-bound: call it off the event loop."""
    return Renderer(tail).render(views)
