"""`--probe`: one bounded poll per source against the real tenant, reported so an operator can judge it.

For each source: whether the vendor took our credentials, every request (method, path, status, duration,
bytes; never a query string, header or body that could hold a secret), the shape of each reply, what would be
exported, and warnings about figures that look wrong (docs/providers/ says what each vendor documents). With
`--record=DIR` it also writes each reply, redacted, ready to become a test fixture.

The probe sees the vendor's bytes through an httpx transport that wraps the real one, so the providers run
exactly as they do in production: same auth, retries, limits and parsing.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import Config, SourceConfig
from aht_exporter.model import Bucket, Field
from aht_exporter.redact import MASK, Redactor
from aht_exporter.scheduler import Exporter, SourceRunner

# Bytes of each reply the probe keeps for its report and for --record (the provider still reads all of it).
KEEP_BYTES = 4 << 20
# Thresholds for a figure that is probably a unit or mapping mistake.
AHT_TOO_LONG = 4 * 3600.0
AHT_TOO_SHORT = 1.0
CLOCK_SKEW = 30.0  # seconds between our clock and the vendor's `Date` header
PARTS_TOLERANCE = 0.01  # handle time may differ from its parts by 1% (rounding of per-contact figures)
EXAMPLES = 5  # example series shown per source

# Where the vendor says handle time is made of the components we export, and whether exactly or at least
# (docs/providers/).
HANDLE_PARTS: dict[str, tuple[tuple[Field, ...], bool]] = {
    # Genesys: tHandle = tTalkComplete + tHeldComplete + tAcw, plus dialing and contacting time on outbound
    # calls, so handle time is at least its parts [documented; docs/providers/genesys.md]
    "genesys": ((Field.TALK_TIME, Field.HOLD_TIME, Field.ACW_TIME), False),
    # Kore.ai: conversationHandleTime = conversationTalkTime + holdDuration + acwDuration [seen in a sample,
    # whose hold is 0; docs/providers/koreai.md]
    "koreai": ((Field.TALK_TIME, Field.HOLD_TIME, Field.ACW_TIME), True),
}
# JSON keys whose values are credentials in any vendor's token reply: never printed or recorded.
TOKEN_KEYS = frozenset({"access_token", "refresh_token", "id_token", "token", "accessToken", "bearer"})
_SLUG = re.compile(r"[^A-Za-z0-9]+")


@dataclass
class Exchange:
    """One request the provider made, as the probe saw it on the wire."""

    method: str
    path: str
    status: int | None = None  # None: no response (timeout, connection error)
    seconds: float = 0.0
    wire_bytes: int = 0
    encoding: str = ""
    vendor_date: float | None = None
    seen_at: float = 0.0
    kept: bytearray = field(default_factory=bytearray)
    error: str = ""

    @property
    def is_token(self) -> bool:
        return "token" in self.path.lower()

    def body(self) -> bytes:
        """The kept bytes, decompressed if the vendor compressed them (bounded like the kept bytes)."""
        raw = bytes(self.kept)
        if self.encoding in ("gzip", "deflate"):
            try:
                decoder = zlib.decompressobj(31 if self.encoding == "gzip" else 15)
                return decoder.decompress(raw, KEEP_BYTES)
            except zlib.error:
                return b""
        return raw


class _RecordingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: Exchange, started: float) -> None:
        self._inner = inner
        self._exchange = exchange
        self._started = started

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._exchange.wire_bytes += len(chunk)
            room = KEEP_BYTES - len(self._exchange.kept)
            if room > 0:
                self._exchange.kept += chunk[:room]
            yield chunk

    async def aclose(self) -> None:
        self._exchange.seconds = time.monotonic() - self._started
        await self._inner.aclose()


class _Bytes(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield await self._response.aread()


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real transport, with every exchange noted in `exchanges`."""

    def __init__(self, clock: Clock, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._clock = clock
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(request.method, request.url.path)
        self.exchanges.append(exchange)
        started = time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            exchange.seconds = time.monotonic() - started
            exchange.error = type(exc).__name__
            raise
        exchange.status = response.status_code
        exchange.encoding = response.headers.get("Content-Encoding", "").lower()
        exchange.seen_at = self._clock.now()
        exchange.vendor_date = _http_date(response.headers.get("Date"))
        # A new response around the old one's stream: a response built from bytes has read them already.
        inner = response.stream if isinstance(response.stream, httpx.AsyncByteStream) else _Bytes(response)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_RecordingStream(inner, exchange, started),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# --- the report of one source -----------------------------------------------------------------------------


@dataclass
class SourceReport:
    name: str
    provider: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.ok = False

    def render(self) -> str:
        out = [f"source {self.name} (provider {self.provider})", *(f"  {line}" for line in self.lines)]
        out += [f"  warning: {w}" for w in self.warnings]
        out.append(f"  verdict: {'looks sane' if self.ok else 'NEEDS A LOOK'}")
        return "\n".join(out)


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _masked(value: Any, redactor: Redactor) -> Any:
    """`value` with token fields masked and every string through the redactor."""
    if isinstance(value, dict):
        return {k: MASK if k in TOKEN_KEYS else _masked(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, redactor) for v in value]
    if isinstance(value, str):
        return redactor(value)
    return value


def _decoded(exchange: Exchange) -> Any:
    try:
        return json.loads(exchange.body())
    except (ValueError, RecursionError):
        return None


def _lists(value: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, list[Any]]]:
    """Every list of records in a reply (up to 4 levels down), with its JSON path."""
    if depth > 4:
        return
    if isinstance(value, list):
        yield path or "(top)", value
        for item in value[:1]:
            yield from _lists(item, f"{path}[0]", depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _lists(v, f"{path}.{k}" if path else str(k), depth + 1)


def _shape(exchange: Exchange, redactor: Redactor) -> list[str]:
    data = _decoded(exchange)
    if data is None:
        return [f"reply is not JSON ({_size(len(exchange.kept))} kept)"] if exchange.kept else ["empty reply"]
    if exchange.is_token:
        return ["token reply (not shown)"]
    out = []
    if isinstance(data, dict):
        out.append(f"top-level keys: {', '.join(sorted(map(str, data))) or '(none)'}")
    lists = [(p, v) for p, v in _lists(data) if v]
    if lists:
        out.append("records: " + ", ".join(f"{p}: {len(v)}" for p, v in lists[:6]))
        path, biggest = max(lists, key=lambda pv: len(pv[1]))
        sample = json.dumps(_masked(biggest[0], redactor), ensure_ascii=False)
        out.append(f"sample of {path}: {sample[:400]}{'…' if len(sample) > 400 else ''}")
    elif isinstance(data, dict):
        sample = json.dumps(_masked(data, redactor), ensure_ascii=False)
        out.append(f"reply: {sample[:400]}{'…' if len(sample) > 400 else ''}")
    return out


def _plausibility(runner: SourceRunner, buckets: list[Bucket], report: SourceReport, now: float) -> None:
    snapshot = runner.snapshot
    if snapshot is None:
        return
    if snapshot.series == 0:
        if runner.config.provider == "ozonetel":
            report.warn("no target had data in the last 2 hours (every agent and campaign: no calls)")
        else:
            report.warn(
                "the vendor answered, but no series would be exported: no contact in the longest window, "
                "or records dated outside the span asked for (check clocks and time zones)"
            )
    for window, totals_by_labels in snapshot.windows.items():
        for labels, totals in totals_by_labels.items():
            if totals.contacts_handled > 0:
                aht = totals.handle_time_seconds / totals.contacts_handled
                _check_aht(report, aht, labels, window, runner.config)
    _check_parts(runner.config.provider, buckets, report)
    future = [b for b in buckets if b.end > now]
    if future:
        report.warn(f"{len(future)} buckets end in the future (the newest ends {_iso(max(b.end for b in future))})")


def _check_parts(provider: str, buckets: list[Bucket], report: SourceReport) -> None:
    """Handle time against its parts, where the vendor says what it is made of (HANDLE_PARTS)."""
    if provider not in HANDLE_PARTS:
        return
    parts, exact = HANDLE_PARTS[provider]
    for b in buckets:
        handle = b.values.get(Field.HANDLE_TIME, 0.0)
        total = sum(b.values.get(p, 0.0) for p in parts)
        slack = PARTS_TOLERANCE * max(handle, total, 1.0)
        if total - handle > slack or (exact and handle - total > slack):
            names = " + ".join(p.value.removesuffix("_seconds") for p in parts)
            relation = "equal to" if exact else "at least"
            report.warn(
                f"handle time {handle:g}s is not {relation} {names} = {total:g}s for {_labels(b.labels)} in the "
                f"bucket starting {_iso(b.start)}, though the vendor says it is"
            )
            return


def _check_aht(report: SourceReport, aht: float, labels: Any, window: str, config: SourceConfig) -> None:
    hint = " (for Kore.ai, `time_unit` is likely wrong)" if config.provider == "koreai" else ""
    if aht > AHT_TOO_LONG and not any("above 4 hours" in w for w in report.warnings):
        report.warn(f"AHT {aht:.0f}s is above 4 hours for {_labels(labels)} over {window}{hint}")
    if 0 < aht < AHT_TOO_SHORT and not any("below 1 second" in w for w in report.warnings):
        report.warn(f"AHT {aht:.3f}s is below 1 second for {_labels(labels)} over {window}{hint}")


def _labels(labels: Any) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else "{}"


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _auth_line(exchanges: list[Exchange], report: SourceReport, error: str | None) -> None:
    tokens = [e for e in exchanges if e.is_token]
    refused = [e for e in exchanges if e.status in (401, 403)]
    data_ok = any(e.status is not None and 200 <= e.status < 300 and not e.is_token for e in exchanges)
    if refused and not data_ok:
        e = refused[-1]
        report.warn(f"the vendor refused our credentials: {e.method} {e.path} answered {e.status}: {error or ''}")
        report.lines.insert(0, f"auth: REFUSED ({e.method} {e.path} {e.status})")
    elif tokens and all(e.status is not None and 200 <= e.status < 300 for e in tokens):
        report.lines.insert(0, f"auth: ok ({len(tokens)} token request(s) answered)")
    elif data_ok:
        report.lines.insert(0, "auth: ok (the vendor answered our requests)")
    else:
        report.lines.insert(0, "auth: unknown (no request was answered)")


def _liveperson_hint(exchanges: list[Exchange], report: SourceReport, config: SourceConfig) -> None:
    """Whether engactivity refused a token sentinel gave us: LivePerson's OAuth 2.0 path is unverified."""
    token_ok = any(e.is_token and e.status == 200 for e in exchanges)
    refused = any(e.status in (401, 403) and "/engactivity" in e.path for e in exchanges)
    if config.provider == "liveperson" and token_ok and refused:
        report.warn(
            "sentinel issued an OAuth 2.0 token but engactivity refused it: try another token version "
            "(`token_version`: v2, v2-query or v1) or OAuth 1.0 keys (`auth: oauth1`); "
            "see docs/providers/liveperson.md"
        )


def _clock_skew(exchanges: list[Exchange], report: SourceReport) -> None:
    skews = [e.seen_at - e.vendor_date for e in exchanges if e.vendor_date is not None]
    if skews:
        worst = max(skews, key=abs)
        if abs(worst) > CLOCK_SKEW:
            side = "ahead of" if worst > 0 else "behind"
            report.warn(f"our clock is {abs(worst):.0f}s {side} the vendor's (its `Date` header)")


def _record(directory: Path, source: str, exchanges: list[Exchange], redactor: Redactor) -> None:
    """Each reply, redacted, as `<source>/<n>-<method>-<path>.json` (or `.txt` when not JSON)."""
    folder = directory / source
    folder.mkdir(parents=True, exist_ok=True)
    for i, e in enumerate(exchanges, 1):
        stem = f"{i:02d}-{e.method.lower()}-{_SLUG.sub('-', e.path).strip('-')[:80]}"
        data = _decoded(e)
        if data is not None:
            text = json.dumps(_masked(data, redactor), indent=1, ensure_ascii=False) + "\n"
            (folder / f"{stem}.json").write_text(redactor(text), encoding="utf-8", errors="replace")
        elif not e.is_token:
            text = e.body().decode("utf-8", "replace")
            (folder / f"{stem}.txt").write_text(redactor(text), encoding="utf-8")
        meta = {"method": e.method, "path": e.path, "status": e.status, "bytes": e.wire_bytes}
        (folder / f"{stem}.meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")


async def probe_source(
    config: Config,
    source: SourceConfig,
    *,
    clock: Clock,
    inner: httpx.AsyncBaseTransport | None = None,
    record: Path | None = None,
) -> SourceReport:
    transport = RecordingTransport(clock, inner)
    exporter = Exporter(Config(sources=[source], path=config.path), clock=clock, transport=transport)
    runner = exporter.runners[0]
    buckets: list[Bucket] = []
    fetch = runner.provider.fetch

    async def noting(start: int, end: int) -> object:
        got = await fetch(start, end)
        if isinstance(got, list):  # buckets, to check against their parts; a vendor's averages have none
            buckets.extend(got)
        return got

    runner.provider.fetch = noting  # type: ignore[method-assign]
    report = SourceReport(source.name, source.provider)
    try:
        ok = await runner.poll()
        views = [runner.view()]
        rendered = exporter._renderer.render(views)
    finally:
        await exporter.aclose()
        await transport.aclose()
    redactor = exporter.redactor
    error = redactor(runner.health.last_error or "") if not ok else None
    for e in transport.exchanges:
        status = str(e.status) if e.status is not None else f"no response ({e.error})"
        report.lines.append(f"request: {e.method} {e.path} -> {status} in {e.seconds:.2f}s, {_size(e.wire_bytes)}")
        report.lines.extend(f"  {line}" for line in _shape(e, redactor))
    if error is not None:
        report.warn(f"the poll failed: {error}")
    _auth_line(transport.exchanges, report, error)
    series = runner.health.series if ok else 0
    report.lines.append(f"would export: {series} data series")
    text = rendered.text.decode("utf-8", "replace").splitlines()
    examples = [line for line in text if line.startswith("aht_") and not line.startswith("aht_exporter_")]
    report.lines.extend(f"  {line}" for line in examples[:EXAMPLES])
    if ok:
        _plausibility(runner, buckets, report, clock.now())
    _liveperson_hint(transport.exchanges, report, source)
    _clock_skew(transport.exchanges, report)
    if record is not None:
        _record(record, source.name, transport.exchanges, redactor)
    return report


async def run_probe(
    config: Config,
    out: TextIO,
    *,
    clock: Clock | None = None,
    inner: Callable[[], httpx.AsyncBaseTransport] | None = None,
    record: Path | None = None,
) -> int:
    """Probe every source, one after another (their budgets are the vendors'); 0 if all look sane, else 1."""
    clock = clock or SystemClock()
    reports = []
    for source in config.sources:
        report = await probe_source(config, source, clock=clock, inner=inner() if inner else None, record=record)
        out.write(report.render() + "\n\n")
        out.flush()
        reports.append(report)
    bad = [r.name for r in reports if not r.ok]
    out.write(f"probe: {len(reports) - len(bad)} of {len(reports)} sources look sane")
    out.write(f"; look at {', '.join(bad)}\n" if bad else "\n")
    return 0 if not bad else 1
