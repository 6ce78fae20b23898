"""Metric families from store snapshots and health, rendered once per poll into cached bytes.

Scrapes never call a provider and never render: they pick one of the four cached bodies (text or
OpenMetrics, identity or gzip), so a scrape costs the same at 100 series or 100,000.

The data series are formatted straight from each source's snapshot, once per poll of that source, into
the very bytes prometheus_client would write for the same gauges (the unit tests compare the two); the
few health series go through prometheus_client itself. docs/performance.md has the figures.
"""

from __future__ import annotations

import logging
import math
import platform
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest as generate_text
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from aht_exporter import __version__
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field, Labels, clean_text, utf8
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
    """One source as the exposition sees it."""

    health: SourceHealth
    snapshot: Snapshot | None


@dataclass(frozen=True, slots=True)
class Rendered:
    """The four bodies, each as the parts it is written in, one after another.

    Parts are never joined: the text and OpenMetrics bodies share their data parts (the same bytes in
    both formats, and the same objects the renderer caches per source), the two gzip bodies share their
    compressed data part, and no scrape copies a body.
    """

    text_parts: tuple[bytes, ...]
    text_gzip_parts: tuple[bytes, ...]
    openmetrics_parts: tuple[bytes, ...]
    openmetrics_gzip_parts: tuple[bytes, ...]

    def body(self, *, openmetrics: bool, gzipped: bool) -> tuple[tuple[bytes, ...], str]:
        if openmetrics:
            return (self.openmetrics_gzip_parts if gzipped else self.openmetrics_parts), OPENMETRICS_CONTENT_TYPE
        return (self.text_gzip_parts if gzipped else self.text_parts), TEXT_CONTENT_TYPE

    # Whole bodies, for --once and the tests.
    @property
    def text(self) -> bytes:
        return b"".join(self.text_parts)

    @property
    def text_gzip(self) -> bytes:
        return b"".join(self.text_gzip_parts)

    @property
    def openmetrics(self) -> bytes:
        return b"".join(self.openmetrics_parts)

    @property
    def openmetrics_gzip(self) -> bytes:
        return b"".join(self.openmetrics_gzip_parts)


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
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode()


_HEADERS = {name: _family_header(name, text) for name, text in DATA_FAMILIES}


def go_float(value: float) -> str:
    """`floatToGoString`, with a fast path for the common case (finite, below a million), where it is repr."""
    v = float(value)
    if -math.inf < v < 1e6:
        return repr(v)
    return str(floatToGoString(v))  # type: ignore[no-untyped-call]


def source_samples(view: SourceView) -> dict[str, bytes]:
    """One source's data samples, per family: lines that read the same in the text format and in OpenMetrics.

    Exactly what prometheus_client writes for the same gauges (labels sorted by name, values as
    `floatToGoString` writes them), but formatted straight from the snapshot: at 100,000 series a few
    hundred milliseconds instead of seconds, once per poll of this source only. One family at a time,
    so that only one family's lines are ever held as separate strings.
    """
    snap = view.snapshot
    assert snap is not None
    source = _escape_label_value(view.health.source)
    base = {"source": source, "provider": _escape_label_value(view.health.provider)}

    def label_text(window: str, labels: Labels) -> str:
        series = {**base, "window": _escape_label_value(window)}
        series.update((k, _escape_label_value(v)) for k, v in labels)
        return ",".join(f'{k}="{v}"' for k, v in sorted(series.items()))

    sums = [(label_text(w, labels), totals) for w, groups in snap.windows.items() for labels, totals in groups.items()]
    out: dict[str, bytes] = {}

    def emit(family: str, lines: list[str]) -> None:
        if lines:
            out[family] = encode("".join(lines))

    emit(
        AHT_FAMILY,
        [
            f"{AHT_FAMILY}{{{text}}} {go_float(totals.get(Field.HANDLE_TIME, 0.0) / handled)}\n"
            for text, totals in sums
            if (handled := totals.get(Field.CONTACTS_HANDLED, 0.0)) > 0
        ]
        + [
            f"{AHT_FAMILY}{{{label_text(window, labels)}}} {go_float(value)}\n"
            for window, averages in snap.averages.items()
            for labels, value in averages.items()
        ],
    )
    for f in Field:
        if f in snap.fields:
            name = f"aht_{f.value}"
            emit(name, [f"{name}{{{text}}} {go_float(totals.get(f, 0.0))}\n" for text, totals in sums])
    for family, label, names in ((QUEUE_INFO, "queue", snap.names.queues), (AGENT_INFO, "agent", snap.names.agents)):
        emit(
            family,
            [
                f'{family}{{{label}="{_escape_label_value(key)}",{label}_name="{_escape_label_value(name)}",'
                f'source="{source}"}} 1.0\n'
                for key, name in names.items()
            ],
        )
    return out


_AS_OF = "As of the last poll: scrapes never call the provider."


def health_families(healths: Sequence[SourceHealth]) -> Iterator[Metric]:
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
        "HTTP requests to the provider, by status code (error: no response).",
        labels=[*names, "status"],
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
        for status in sorted(h.api_requests):
            requests.add_metric([*key, status], float(h.api_requests[status]))
        limited.add_metric(key, float(h.rate_limited))
        tokens.add_metric(key, float(h.tokens_issued))
        dropped.add_metric(key, float(h.series_dropped))
    yield from (up, last, data_end, duration, polls, requests, limited, tokens, dropped)
    info = GaugeMetricFamily(
        "aht_exporter_build_info", "Build information; value 1.", labels=["version", "python_version"]
    )
    info.add_metric([__version__, platform.python_version()], 1.0)
    yield info


class _Health:
    """The health families as a client_python collector: few series, rendered anew each time."""

    def __init__(self, healths: Sequence[SourceHealth]) -> None:
        self._healths = healths

    def collect(self) -> Iterator[Metric]:
        return health_families(self._healths)


class Renderer:
    """Renders the four bodies, keeping each source's data samples until that source's snapshot changes.

    A poll of one source re-formats that source's series only; the others' cached lines are reused.
    Not thread-safe: one render at a time (the Exporter's render task guarantees it).
    """

    def __init__(self) -> None:
        # (id(snapshot), source, provider) -> (snapshot, its samples). Holding the snapshot keeps its id
        # from being reused while the entry lives.
        self._samples: dict[tuple[int, str, str], tuple[Snapshot, dict[str, bytes]]] = {}
        # The sources whose data failed to render in the last render, and why: new failures only (a
        # snapshot that failed once is not tried again, and not reported again).
        self.failures: dict[str, str] = {}

    def render(self, views: Sequence[SourceView]) -> Rendered:
        """CPU-bound: call it off the event loop."""
        samples: dict[tuple[int, str, str], tuple[Snapshot, dict[str, bytes]]] = {}
        self.failures = {}
        for view in views:
            snap = view.snapshot
            if snap is None or view.health.stale:
                continue
            # A snapshot is immutable and each poll makes a new one: same object, same lines.
            key = (id(snap), view.health.source, view.health.provider)
            samples[key] = self._samples.get(key) or (snap, self._source_samples(view))
        self._samples = samples  # snapshots no longer shown drop out
        data: list[bytes] = []
        for name, _ in DATA_FAMILIES:
            lines = [chunks[name] for _, chunks in samples.values() if name in chunks]
            if lines:
                data += (_HEADERS[name], *lines)
        health = _Health([v.health for v in views])
        # OpenMetrics ends with its own "# EOF" line, here in the health part.
        return bodies(data, generate_text(health), generate_openmetrics(health))  # type: ignore[no-untyped-call]

    def _source_samples(self, view: SourceView) -> dict[str, bytes]:
        """One source's samples; a source whose data cannot be rendered shows none, and the others still do."""
        try:
            return source_samples(view)
        except Exception as exc:  # a bug, or a value nothing upstream caught: never the whole exposition
            source = view.health.source
            error = clean_text(f"its data could not be rendered ({type(exc).__name__}: {exc}): data omitted")
            log.error("render failed", extra={"source": source, "error": error})
            self.failures[source] = error
            return {}


# Level 6 is zlib's default trade-off; zlib releases the GIL while it compresses.
GZIP_LEVEL = 6
# Parts smaller than this are joined with their small neighbours: fewer writes per scrape, and only
# small copies (family headers, the health part, the parts of a small exposition).
SMALL_PART = 64 * 1024


def bodies(data: Sequence[bytes], text_tail: bytes, openmetrics_tail: bytes) -> Rendered:
    """The four bodies: the parts of a data part both formats share, then each format's own tail.

    The data part, nearly all of the bytes, is compressed once: the compressor's state after it is
    copied, and each copy finishes its own format's gzip stream.
    """
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip wrapper
    head = b"".join([deflate.compress(part) for part in data])
    text_deflate = deflate.copy()
    text_gzip = (head, text_deflate.compress(text_tail) + text_deflate.flush())
    openmetrics_gzip = (head, deflate.compress(openmetrics_tail) + deflate.flush())
    return Rendered(
        _coalesce([*data, text_tail]),
        _coalesce(text_gzip),
        _coalesce([*data, openmetrics_tail]),
        _coalesce(openmetrics_gzip),
    )


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


def render(views: Sequence[SourceView]) -> Rendered:
    """Render all four bodies from scratch. CPU-bound: call it off the event loop."""
    return Renderer().render(views)
