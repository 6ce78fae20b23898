"""Genesys Cloud: the conversation aggregates query, in milliseconds, per bucket.

Vendor facts (docs/providers/genesys.md, with sources and tags; Genesys developer docs):
- `POST /api/v2/analytics/conversations/aggregates/query` with `interval`, `granularity`, `groupBy`,
  `filter`, `metrics`; the reply is `results[].group` + `results[].data[].metrics[].stats`.
- Every `t*` metric is in milliseconds; AHT = tHandle.sum / tHandle.count.
- Empty buckets, groups and metrics are omitted from the reply: absent means zero, not an error.
- Every stat is optional in the SDK's StatisticalSummary; a zero may come as `{"count": 0}` without `sum`
  (issue 13; docs/providers/genesys.md, "Real-tenant cases"): that `sum` is 0. A `count` we need that is
  missing, or a `sum` left out beside a count above 0, fails the poll. A dimension we grouped by that a group lacks
  (no `queueId` for an outbound call outside any queue) is the label value MISSING_LABEL.
- Handle time lands in the bucket where after-call work ends, so closed buckets change for a while.
- OAuth client credentials at `https://login.{region}/oauth/token`, API at `https://api.{region}`.
- Errors are JSON `{message, code, status, contextId}`; 429 carries `Retry-After`.
- [sample] Replies carry the token's rate-limit state: `inin-ratelimit-allowed` (requests allowed in the
  window), `inin-ratelimit-count` (used in it, this one included), `inin-ratelimit-reset` (seconds until
  it resets); `quota` reads them for the `aht_exporter_api_quota_*` gauges.
- The maximum interval per query is not documented: we chunk by `max_query_span` and halve on a
  400 that says the query is too large.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Literal

import httpx
import msgspec
from msgspec import UNSET, UnsetType
from pydantic import Field as PydanticField
from pydantic import SecretStr

from aht_exporter.config import DurationField, SourceConfig
from aht_exporter.health import Quota, SourceHealth
from aht_exporter.httpclient import json_body, not_json, vendor_error_text, where
from aht_exporter.model import (
    MAX_COUNT,
    MAX_NAMES,
    MAX_SECONDS,
    MICRO,
    MISSING_LABEL,
    SUMS_FIELDS,
    SUMS_INDEX,
    Bucket,
    Field,
    Labels,
    Micros,
    Names,
    ProviderError,
    Sums,
    figure,
    out_of_range,
)
from aht_exporter.oauth import ClientCredentialsAuth
from aht_exporter.providers.base import BucketProvider, ClientNeeds, DataAge
from aht_exporter.timebuckets import Duration, chunks, floor_to, isoformat_z, parse_iso

log = logging.getLogger(__name__)

AGGREGATES_PATH = "/api/v2/analytics/conversations/aggregates/query"
# The endpoints a source calls, by their `endpoint` label (besides `token`, the OAuth token request).
NAME_ENDPOINTS = {"queues": "/api/v2/routing/queues", "users": "/api/v2/users"}
# groupBy dimension for each of our labels.
DIMENSIONS = {"media_type": "mediaType", "queue": "queueId", "agent": "userId"}
MAX_NAME_PAGES = MAX_NAMES // 100  # pages of 100: a hard bound on the paging loop
_TOO_LARGE = re.compile(r"too (large|long|big|many)|exceed|maximum", re.IGNORECASE)


# [doc] The mediaType values of Genesys' analytics, as the SDK's enum carries them (PureCloudPlatformClientV2,
# AnalyticsSession.media_type; the API reference lists the same for the mediaType dimension). `call`, the
# Genesys UI's word for voice, is not one of them.
MEDIA_TYPES = (
    "callback",
    "chat",
    "cobrowse",
    "email",
    "internalmessage",
    "message",
    "screenmonitoring",
    "screenshare",
    "unknown",
    "video",
    "voice",
)

GroupLabel = Literal["media_type", "queue", "agent"]
DEFAULT_GROUP_BY: tuple[GroupLabel, ...] = ("media_type", "queue")


class GenesysConfig(SourceConfig):
    default_refresh: ClassVar[str] = "2h"
    url_keys: ClassVar[tuple[str, ...]] = ("base_url", "login_url")

    provider: Literal["genesys"]
    region: str | None = PydanticField(default=None, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    login_url: str | None = None
    client_id: str = PydanticField(min_length=1)
    client_secret: SecretStr
    bucket: DurationField = Duration.parse("30m")
    group_by: list[GroupLabel] = PydanticField(default_factory=lambda: list(DEFAULT_GROUP_BY))
    media_types: list[str] = PydanticField(default_factory=list)
    queues: list[str] = PydanticField(default_factory=list)
    max_query_span: DurationField = Duration.parse("1d")

    @property
    def bucket_seconds(self) -> int:
        return self.bucket.seconds

    @property
    def api_url(self) -> str:
        return (self.base_url or f"https://api.{self.region}").rstrip("/")

    @property
    def token_url(self) -> str:
        return (self.login_url or f"https://login.{self.region}").rstrip("/") + "/oauth/token"

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.bucket.seconds not in (900, 1800):
            # [doc] Genesys tracks contact-center metrics on 30-minute intervals; 15m is safe too.
            yield "bucket", f"{self.bucket} is not supported (use 30m or 15m)"
            return
        yield from super().problems()
        if self.region is None and self.base_url is None:
            yield "region", "set region (e.g. mypurecloud.ie) or base_url + login_url"
        if self.region is not None and (self.base_url is not None or self.login_url is not None):
            yield "region", "set either region or base_url + login_url, not both"
        if self.base_url is not None and self.login_url is None:
            yield "login_url", "is required with base_url (the OAuth host differs from the API host)"
        if len(set(self.group_by)) != len(self.group_by):
            yield "group_by", "lists a label twice"
        for i, media_type in enumerate(self.media_types):
            # Sent as a `mediaType` predicate unchanged: an unknown one would filter out everything, or be a 400.
            if media_type not in MEDIA_TYPES:
                yield f"media_types[{i}]", f"{media_type!r} is not a Genesys media type (use {', '.join(MEDIA_TYPES)})"
        span = self.max_query_span.seconds
        if span <= 0 or span % self.bucket.seconds:
            yield "max_query_span", f"{self.max_query_span} is not a multiple of the {self.bucket} bucket"
        elif span > self.max_window.seconds:  # no fetch spans more than the longest window
            yield "max_query_span", f"{self.max_query_span} is longer than {self.max_window}, the longest window"


def metric_names(group_by: Sequence[str]) -> list[str]:
    """The metrics to ask for. Queue-scoped ones only where no agent grouping would orphan them."""
    metrics = ["tHandle", "tTalkComplete", "tHeldComplete", "tAcw", "tAnswered"]
    if "agent" not in group_by:
        # An abandoned or merely offered contact has no agent: grouped by agent it would land in a
        # group without userId, a series of its own beside the agents'.
        metrics.append("tAbandon")
        if "queue" in group_by:
            metrics.append("nOffered")  # [doc] nOffered is queue-scoped
    return metrics


# (metric, stat) -> our field, and what to divide the vendor's unit by for ours (ms / 1000: dividing, not
# multiplying by 1e-3, gives the float nearest the exact value, 288.929 and not 288.92900000000003).
_STATS: Mapping[str, tuple[tuple[str, Field, float], ...]] = {
    "tHandle": (("sum", Field.HANDLE_TIME, 1000.0), ("count", Field.CONTACTS_HANDLED, 1.0)),
    "tTalkComplete": (("sum", Field.TALK_TIME, 1000.0),),
    "tHeldComplete": (("sum", Field.HOLD_TIME, 1000.0),),
    "tAcw": (("sum", Field.ACW_TIME, 1000.0),),
    "tAnswered": (("count", Field.CONTACTS_ANSWERED, 1.0),),
    "tAbandon": (("count", Field.CONTACTS_ABANDONED, 1.0),),
    "nOffered": (("count", Field.CONTACTS_OFFERED, 1.0),),
}
# The same, as the buckets are made (model.Micros): each field's place in Sums, its bit, and what turns the
# vendor's unit into whole millionths (a whole ms is exactly 1,000 of them; a count, 1,000,000).
_STAT_KEYS: Mapping[str, tuple[tuple[str, int, int, int], ...]] = {
    metric: tuple(
        (stat, SUMS_INDEX[field], 1 << SUMS_INDEX[field], MICRO // int(divisor)) for stat, field, divisor in stats
    )
    for metric, stats in _STATS.items()
}
# The largest stat the vendor may send, in its unit: a `t*` sum in ms, a count in contacts (model.py).
_LIMITS: Mapping[str, tuple[float, str]] = {"sum": (MAX_SECONDS * 1000, "ms"), "count": (MAX_COUNT, "contacts")}


def fields_for(group_by: Sequence[str]) -> frozenset[Field]:
    return frozenset(f for m in metric_names(group_by) for _, f, _ in _STATS[m])


def query_body(start: int, end: int, config: GenesysConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "interval": f"{isoformat_z(start)}/{isoformat_z(end)}",
        "granularity": f"PT{config.bucket_seconds // 60}M",
        "groupBy": [DIMENSIONS[g] for g in config.group_by],
        "metrics": metric_names(config.group_by),
    }
    clauses = [
        {
            "type": "or",
            "predicates": [{"type": "dimension", "dimension": dim, "operator": "matches", "value": v} for v in values],
        }
        for dim, values in (("mediaType", config.media_types), ("queueId", config.queues))
        if values
    ]
    if len(clauses) == 1:
        body["filter"] = clauses[0]
    elif clauses:
        body["filter"] = {"type": "and", "clauses": clauses}
    return body


# The reply's shape, decoded by msgspec straight into these compact records: a 20,000-agent reply
# (6 MB of JSON) takes a third of the memory and a fifth of the time that dicts from json.loads take,
# and a mistyped or missing field fails with its path (`$.results[0].data[2].interval`).
# Keys we do not read (max, min, other dimensions, `systemToOrganizationMappings`) are skipped. Tuples, not
# lists, and structs the collector does not track: the collector soon stops tracking a tuple of untracked
# objects, where 60,000 lists would be walked by every full collection while the reply is alive.
class _Stats(msgspec.Struct, gc=False):
    count: float | UnsetType = UNSET
    sum: float | UnsetType = UNSET


class _Metric(msgspec.Struct, gc=False):
    metric: str
    stats: _Stats


class _Data(msgspec.Struct, gc=False):
    interval: str
    metrics: tuple[_Metric, ...] = ()


class _Result(msgspec.Struct, gc=False):
    # [doc] a group may carry dimensions not asked for; only ours must be strings.
    group: dict[str, Any] = msgspec.field(default_factory=dict)
    data: tuple[_Data, ...] = ()


class _Reply(msgspec.Struct, gc=False):
    results: list[_Result] | UnsetType = UNSET
    # An error body: {message, code, status, contextId} [doc].
    code: Any = UNSET
    message: Any = UNSET
    contextId: Any = UNSET  # the vendor's spelling


_DECODER = msgspec.json.Decoder(_Reply)


class _Scanned(msgspec.Struct, gc=False):
    """The reply with each result left as its raw JSON: a quick scan, then the results in slices."""

    results: list[msgspec.Raw] | UnsetType = UNSET
    code: Any = UNSET
    message: Any = UNSET
    contextId: Any = UNSET


_SCANNER = msgspec.json.Decoder(_Scanned)
_RESULTS = msgspec.json.Decoder(list[_Result])
DECODE_SLICE = 512 << 10
"""Bytes of results decoded in one call. One msgspec call holds the GIL from start to end: the whole 6 MB
reply of 20,000 agents in one was 25 to 45 ms during which the event loop, and every scrape, waited, though
the parse runs in a worker thread. The reply is scanned (each result kept as raw JSON, about 1 ms a MB), then
decoded a slice at a time, 2 to 3 ms each; between two calls the loop gets the GIL (docs/performance.md,
"Event-loop stalls"). A reply of results alone is not scanned but cut at the results' boundaries
(`_cut_results`)."""


# Where one result ends and the next begins, in a reply of results objects whose first key is "group" (as
# Genesys and its SDK's sample write them), with or without whitespace. A JSON string cannot hold it: its
# `"` would end the string. It can match deeper in a result (a "group" key in an entry, from a hostile
# reply): then a slice is not whole, its decode fails, and the reply is scanned instead.
_BOUNDARY = re.compile(rb'\}([ \t\r\n]*,[ \t\r\n]*)\{[ \t\r\n]*"group"[ \t\r\n]*:')  # JSON's whitespace only
_HEAD = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"results"[ \t\r\n]*:[ \t\r\n]*\[')
_SPACE = b" \t\r\n"


def _cut_results(raw: bytes) -> Iterator[bytes] | None:
    """The results of a reply that is `{"results": [...]}` and nothing else, as JSON arrays of whole results
    of about `DECODE_SLICE` bytes each, cut at the boundaries between results, with no call over the whole
    reply: scanning it whole was one msgspec call of 31 ms with the GIL held for the 30 MB reply of 100,000
    agents (docs/performance.md, "Values the collector never walks"). None for any other reply; one that
    does not cut into whole results makes a slice that fails to decode. Either way the scan (`_read`) reads
    it, and names what is wrong with it. Valid slices make a valid whole: the concatenation of JSON arrays'
    elements is an array."""
    head = _HEAD.match(raw)
    end = len(raw)
    while end and raw[end - 1] in _SPACE:
        end -= 1
    if head is None or not raw.endswith(b"}", 0, end):
        return None
    close = end - 1
    while close > head.end() and raw[close - 1] in _SPACE:
        close -= 1
    if close <= head.end() or raw[close - 1 : close] != b"]":
        return None
    return _pieces(raw, head.end(), close - 1)  # up to the results' closing bracket


def _pieces(raw: bytes, pos: int, close: int) -> Iterator[bytes]:
    while True:
        cut, after = close, None
        if close - pos > DECODE_SLICE:
            boundary = _BOUNDARY.search(raw, pos + DECODE_SLICE, close)
            if boundary is not None:
                cut, after = boundary.start() + 1, boundary.end(1)
        yield b"[" + raw[pos:cut] + b"]"
        if after is None:
            return
        pos = after


def _scanned_pieces(results: list[msgspec.Raw]) -> Iterator[bytes]:
    """The scanned results, as JSON arrays of about `DECODE_SLICE` bytes each."""
    part: list[msgspec.Raw] = []
    size = 0
    for result in results:
        part.append(result)
        size += len(result)
        if size >= DECODE_SLICE:
            yield b"[" + b",".join(part) + b"]"
            part, size = [], 0
    if part:
        yield b"[" + b",".join(part) + b"]"


def _decoded(pieces: Iterator[bytes]) -> Iterator[list[_Result]]:
    for piece in pieces:
        yield _RESULTS.decode(piece)


def _read(raw: bytes, group_by: Sequence[str]) -> list[Bucket]:
    """The reply's buckets, its results decoded a slice at a time and each slice made into buckets before the
    next is decoded. So the decoded results are never all alive at once: freeing those of a 100,000-agent
    reply in one go (when the parse returned) was 35 to 40 ms with the GIL held, the longest stall of the
    event loop at that size (docs/performance.md, "Freed where they are made")."""
    pieces = _cut_results(raw)
    if pieces is not None:
        try:
            return _buckets(_decoded(pieces), group_by)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass  # not cut into whole results, or not valid: the scan reads it and names what is wrong
    scanned = _SCANNER.decode(raw)
    if scanned.results is UNSET:
        _raise_vendor_error(scanned.code, scanned.message, scanned.contextId)
        return []  # a query with no data may answer `{}`
    return _buckets(_decoded(_scanned_pieces(scanned.results)), group_by)


def parse_aggregates_json(raw: bytes, group_by: Sequence[str], *, status: int = 200) -> list[Bucket]:
    """Genesys aggregates JSON as received -> buckets. Pure; raises ProviderError naming the bad field."""
    try:
        try:
            return _read(raw, group_by)
        except msgspec.ValidationError:
            # A slice's error names its place in the slice: the reply decoded whole names the place in the
            # reply (`$.results[7].data[0].interval`). Only a broken reply pays for it.
            return _reply_buckets(_DECODER.decode(raw), group_by)
    except msgspec.ValidationError as exc:
        raise ProviderError(f"aggregates response: {exc}") from None
    except msgspec.DecodeError:
        raise not_json(raw, status, "aggregates query") from None
    except RecursionError:  # msgspec's own depth limit, for a value of a key we keep as Any
        raise ProviderError(f"aggregates response: {_TOO_DEEP}") from None


_TOO_DEEP = "nested too deeply to be an aggregates reply"


def _raise_vendor_error(code: Any, message: Any, context_id: Any) -> None:
    """A reply without results that is an error body with HTTP 200 (a gateway, a partial outage): never
    mistaken for "no data". Vendor text of any type and size: one line's worth of it (the poll's error cuts
    it again)."""
    if code is UNSET and message is UNSET:
        return
    code = "?" if code is UNSET else str(code)[:100]
    message = "" if message is UNSET else str(message)[:300]
    context = f" ({str(context_id)[:100]})" if context_id not in (UNSET, None, "") else ""
    raise ProviderError(f"aggregates response: the vendor answered 200 with an error: {code}: {message}{context}")


def _reply_buckets(reply: _Reply, group_by: Sequence[str]) -> list[Bucket]:
    """The buckets of a reply decoded whole."""
    if reply.results is UNSET:
        _raise_vendor_error(reply.code, reply.message, reply.contextId)
        return []
    return _buckets(iter([reply.results]), group_by)


def _buckets(slices: Iterator[list[_Result]], group_by: Sequence[str]) -> list[Bucket]:
    """The buckets of the results, given a slice at a time; a result's place (`results[i]`) counts from the
    first slice."""
    buckets: list[Bucket] = []
    intervals: dict[str, tuple[int, int]] = {}  # every group repeats the same few intervals
    zeros = [0] * len(SUMS_FIELDS)
    dimensions = _dimensions(group_by)
    i = -1
    for results in slices:
        for result in results:
            i += 1
            labels = _labels(result.group, dimensions, i)
            for j, entry in enumerate(result.data):
                span = intervals.get(entry.interval)
                if span is None:
                    span = intervals[entry.interval] = _interval(entry.interval, f"results[{i}].data[{j}]")
                row, reported = zeros.copy(), 0
                for k, metric in enumerate(entry.metrics):
                    # A metric not asked for: ignored.
                    for stat, index, bit, unit in _STAT_KEYS.get(metric.metric, ()):
                        value = metric.stats.count if stat == "count" else metric.stats.sum
                        # The common case inline (a float in range: NaN fails both comparisons); anything
                        # else is judged, and named by its path, by _stat. At 100k agents a call and an
                        # error path's text per stat were a tenth of the poll.
                        if not (isinstance(value, float) and 0 <= value <= _LIMITS[stat][0]):
                            value = _stat(metric.stats, stat, f"results[{i}].data[{j}].metrics[{k}].stats")
                        # Whole ms or contacts: exact (below 9e12 ms, 285 years); any fraction, rounded once.
                        row[index] += round(value * unit)
                        reported |= bit
                values = Micros(Sums(*row), reported)
                buckets.append(Bucket(start=span[0], end=span[1], labels=labels, values=values))
    return buckets


def _stat(stats: _Stats, stat: str, where: str) -> float:
    """One stat of a metric we read, in the vendor's unit. Every stat is optional in the SDK's
    StatisticalSummary [doc], and a zero may come as `{"count": 0}` without `sum` (issue 13): a `sum` left out
    beside a count of 0 is 0. The count is what says how much was measured, so it is never taken for 0: a
    count we need (as a figure, or to say a missing sum is 0) that is missing, or a `sum` left out beside a
    count above 0, fails the poll naming the path."""
    value = stats.count if stat == "count" else stats.sum
    if value is UNSET:
        if stats.count is UNSET:
            also = "" if stat == "count" else " (and so is sum)"
            raise ProviderError(f"aggregates response: {where}.count is missing{also}")
        if stats.count != 0:
            raise ProviderError(f"aggregates response: {where}.sum is missing, though count is {figure(stats.count)}")
        return 0.0
    # Negative, infinite or absurd: a vendor's bug, never an AHT (nor the store's overflow).
    problem = out_of_range(value, *_LIMITS[stat])
    if problem is not None:
        raise ProviderError(f"aggregates response: {where}.{stat}: {figure(value)} {problem}")
    return value


def _labels(group: Mapping[str, Any], dimensions: Sequence[tuple[str, str]], i: int) -> Labels:
    """The group's labels; `dimensions` pairs each label we group by with its vendor dimension, sorted by
    label as a label set is (`_dimensions`). A dimension we grouped by that the group lacks (absent, null or
    empty: an outbound call outside any queue has no queueId) is MISSING_LABEL, never "", which is no label
    at all."""
    pairs: list[tuple[str, str]] = []
    for label, dimension in dimensions:
        value = group.get(dimension)
        if value is None or value == "":
            value = MISSING_LABEL
        elif not isinstance(value, str):
            raise ProviderError(f"aggregates response: results[{i}].group.{dimension} is not a string")
        elif label == "media_type":
            value = value.lower()
        pairs.append((label, value))
    return tuple(pairs)


def _dimensions(group_by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Each label of `group_by` once, with its vendor dimension, in the order of a label set (model.Labels)."""
    return tuple((label, DIMENSIONS[label]) for label in sorted(set(group_by)))


def _interval(text: str, where: str) -> tuple[int, int]:
    try:
        first, last = text.split("/")
        return round(parse_iso(first)), round(parse_iso(last))
    except ValueError:
        raise ProviderError(f"aggregates response: {where}.interval is not an ISO-8601 interval") from None


def error_message(body: Mapping[str, Any]) -> str | None:
    """Genesys errors as `code: message (contextId)`; OAuth errors as `error: description`."""
    if "code" in body or "message" in body:
        text = f"{body.get('code', '?')}: {body.get('message', '')}"
        return f"{text} ({body['contextId']})" if body.get("contextId") else text
    if "error" in body:
        desc = body.get("error_description") or body.get("description") or ""
        return f"{body['error']}: {desc}".rstrip(": ")
    return None


def quota(response: httpx.Response, now: float) -> Quota | None:
    """The token's budget from a reply's `inin-ratelimit-*` headers, or None when they are missing or not
    numbers. [sample] The Genesys developer blog's SDK trace log of `GET /api/v2/users` shows `count: 1,
    allowed: 180, reset: 61`: the first request of a window, 180 allowed, the window ends in 61 s
    (docs/providers/genesys.md, Rate-limit headers)."""
    allowed, count, reset = (
        _header_number(response.headers.get(f"inin-ratelimit-{name}")) for name in ("allowed", "count", "reset")
    )
    if allowed is None or count is None:
        return None
    return Quota(limit=allowed, remaining=max(0.0, allowed - count), reset_at=None if reset is None else now + reset)


def _header_number(value: str | None) -> float | None:
    """A non-negative, finite number of a header (a bound on length: a header can be 64 KiB)."""
    if value is None or len(value) > 32:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


class GenesysProvider(BucketProvider[GenesysConfig]):
    name = "genesys"
    config_model = GenesysConfig
    data_age = DataAge(bucket=1800, delay=60)  # 30-minute buckets by default (15m possible), the default delay

    def __init__(self, config: GenesysConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        # Learned from "too large" 400s: the widest span a query may cover.
        self.query_span = config.max_query_span.seconds

    def client_needs(self) -> ClientNeeds:
        cfg = self.config
        token_url, client_id, secret = cfg.token_url, cfg.client_id, cfg.client_secret

        def token_request() -> httpx.Request:
            # [doc] HTTP Basic client_id:client_secret, form grant_type=client_credentials.
            basic = base64.b64encode(f"{client_id}:{secret.get_secret_value()}".encode()).decode()
            return httpx.Request(
                "POST",
                token_url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
            )

        auth = ClientCredentialsAuth(
            token_request,
            error_text=partial(vendor_error_text, message=error_message),
            default_lifetime=86400.0,
            on_token=self.health.count_token_issued,
        )
        return ClientNeeds(error_message=error_message, auth=auth, quota_reader=quota)

    @property
    def fields(self) -> frozenset[Field]:
        return fields_for(self.config.group_by)

    async def fetch(self, start: int, end: int) -> list[Bucket]:
        buckets: list[Bucket] = []
        for s, e in chunks(start, end, self.query_span):
            buckets.extend(await self._fetch_span(s, e))
        return buckets

    async def _fetch_span(self, start: int, end: int) -> list[Bucket]:
        url = self.config.api_url + AGGREGATES_PATH
        try:
            response = await self.client.request(
                "POST", url, endpoint="aggregates", json=query_body(start, end, self.config)
            )
        except ProviderError as exc:
            bucket = self.config.bucket_seconds
            if exc.status == 400 and _TOO_LARGE.search(str(exc)) and end - start > bucket:
                # Halve and remember; the recursion ends at one bucket per query.
                mid = start + max(bucket, floor_to((end - start) // 2, bucket))
                self.query_span = min(self.query_span, mid - start)
                log.warning(
                    "query too large, splitting",
                    extra={"source": self.config.name, "span": f"{(end - start) // 60}m"},
                )
                return await self._fetch_span(start, mid) + await self._fetch_span(mid, end)
            raise
        try:
            # In a worker thread: a 20,000-agent reply is a fifth of a second of CPU, which would keep the
            # event loop (and every scrape) waiting. It touches nothing shared.
            return await asyncio.to_thread(
                parse_aggregates_json, response.content, self.config.group_by, status=response.status_code
            )
        except ProviderError as exc:  # the reply's fault: say which request's, and which host answered it
            raise ProviderError(f"{where(response.request)}: {exc}", status=exc.status) from None

    async def names(self) -> Names:
        queues = await self._entity_names("queues") if "queue" in self.config.group_by else {}
        agents = await self._entity_names("users") if "agent" in self.config.group_by else {}
        return Names(queues=queues, agents=agents)

    async def _entity_names(self, endpoint: str) -> dict[str, str]:
        """[doc] `GET path?pageSize=100&pageNumber=N` -> `entities[].id/name`, `pageCount`."""
        path = NAME_ENDPOINTS[endpoint]
        names: dict[str, str] = {}
        for page in range(1, MAX_NAME_PAGES + 1):
            response = await self.client.request(
                "GET",
                self.config.api_url + path,
                endpoint=endpoint,
                step="names",
                params={"pageSize": 100, "pageNumber": page},
            )
            at = where(response.request)
            body = json_body(response, at)
            entities = body.get("entities") if isinstance(body, dict) else None
            if not isinstance(entities, list):
                raise ProviderError(f"{at}: `entities` is missing")
            for entity in entities:
                # An entity without a string id or name names nothing; the text itself is cleaned by Names.
                if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
                    continue
                name = entity.get("name", "")
                if not isinstance(name, str):
                    continue
                if len(names) >= MAX_NAMES and entity["id"] not in names:  # pages may hold more than asked for
                    log.warning(
                        "name lookup: too many names, the rest are not shown",
                        extra={"source": self.config.name, "path": path, "max": MAX_NAMES},
                    )
                    return names
                names[entity["id"]] = name
            page_count = body.get("pageCount")
            if not isinstance(page_count, int) or page >= page_count or not entities:
                break
        return names
