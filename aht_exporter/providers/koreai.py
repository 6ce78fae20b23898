"""Kore.ai: the Contact Volume API, one record per interval, queue and source (channel).

Vendor facts (docs/providers/koreai.md, with sources and tags; Kore.ai docs):
- [doc] `POST {host}/agentassist/api/public/analytics/account/{accountId}/callvolume`, JSON body
  `{orgId, fromTimeStamp, toTimeStamp, skip, limit}`; the reply is `{hasMore, CallVolumeUpdate[], totalCount}`.
- [doc] Auth is a header `auth: <JWT>` (not `Authorization`), HS256-signed with the app's client secret,
  payload `{"appId": <client id>, "sub": ...}` (seed 003; "How to generate JWT tokens for Kore.ai public
  APIs": only HS256 for API-scope apps).
- [doc] With a `jti` claim, Kore refuses a token whose `exp` is more than 1 h after `iat` and a `jti` seen
  before (Kore SDK security, "JTI validations"; apps may enforce `jti`). So we mint one JWT per request.
- [doc] 60 requests per minute per account, shared with Kore's other analytics APIs; over it requests fail
  with "You've exceeded the per-minute rate limit. Please wait for sometime before retrying." (Kore API
  rate-limit pages). The HTTP status of that reply and a `Retry-After` are [unverified]: the text is
  treated as rate limiting whatever the status, and we pace ourselves so that we never cause it. Kore
  also documents an hourly limit (1800) for some APIs; whether it covers this one is [unverified].
- [sample] Durations are milliseconds, although the field table says seconds: the sample's handle time
  68043 = talk 64094 + ACW 3949 for one contact, and a 180150 abandon wait. `time_unit` (default `ms`)
  says which; an implausible AHT logs a warning.
- [sample] Records are per interval x queue x `source` (`rtm` = chat, `voice`), 15-minute intervals in the
  sample; the interval length is [unverified], so each record's own interval is checked against the bucket.
- [unverified] sparse records (issue 13; docs/providers/koreai.md, "Real-tenant cases"): `queueId: null` for
  a contact abandoned before it reached a queue, and zero counters left out. A counter left out is 0; a
  `queueId` or `source` absent, null or empty is the label value MISSING_LABEL; a wrong type, or a record
  without its interval timestamps, fails the poll naming the JSON path.
- [unverified] the largest `limit` (we send at most 100); whether `toTimeStamp` includes the interval
  starting at it (we drop records outside the span asked for); what `sub` should hold (the client id).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import httpx
import jwt
import msgspec
from msgspec import UNSET, UnsetType
from pydantic import Field as PydanticField
from pydantic import SecretStr

from aht_exporter.clock import Clock
from aht_exporter.config import DurationField, SourceConfig
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ResendOn401, not_json, where
from aht_exporter.model import (
    MAX_COUNT,
    MAX_NAMES,
    MAX_SECONDS,
    MISSING_LABEL,
    Bucket,
    Field,
    Labels,
    Names,
    ProviderError,
    clean_labels,
    figure,
    out_of_range,
)
from aht_exporter.providers.base import BucketProvider, ClientNeeds, DataAge
from aht_exporter.timebuckets import Duration, floor_to, isoformat_z, parse_iso

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://platform.kore.ai"  # [doc] also de-platform, jp-platform, smartassist.kore.ai
CALLVOLUME_PATH = "/agentassist/api/public/analytics/account/{account_id}/callvolume"
MAX_PAGE_SIZE = 100  # [unverified] Kore's own maximum; 100 is our choice (docs/providers/koreai.md)
MAX_PAGES = 200  # 20,000 records per fetch: a hard bound that also fits a 5-minute poll at one request a second
JWT_LIFETIME = 300  # seconds: short, used once, well inside Kore's 1 h limit, and tolerant of clock skew
RATE_LIMIT_PER_MINUTE = 60  # [doc] per account
# At most `rate_limit` requests in any 63 seconds as sent: network jitter never lets Kore count more than
# its limit in any of its own minutes. Kore documents a count per minute, not a spacing, so the few pages
# of a poll go out at once (a poll's data is on /metrics in a second, not after one request a second).
PACING_SLACK = 3.0
# An AHT outside this range (seconds) is more likely a wrong `time_unit` than real.
PLAUSIBLE_AHT = (1.0, 4 * 3600.0)

# [doc] Kore's per-minute and hourly limit texts; [doc, Kore community] the older public APIs' text.
_RATE_LIMIT_TEXT = re.compile(
    r"exceeded the (per-minute|hourly) rate limit|rate limit for this api has been reached", re.IGNORECASE
)

TimeUnit = Literal["ms", "s"]
HandledField = Literal["completedContacts", "answeredContacts"]
GroupLabel = Literal["media_type", "queue"]
DEFAULT_GROUP_BY: tuple[GroupLabel, ...] = ("media_type", "queue")
BUCKETS = {300, 900, 1800, 3600}  # 15m is Kore's interval in the sample; records roll up into coarser buckets

# [sample] `rtm` (real-time messaging) is chat; any other source is its own lower-cased name.
MEDIA_TYPES = {"rtm": "chat", "voice": "voice"}

# Record field -> our field, and whether it is a duration (converted by `time_unit`) or a count.
_DURATIONS: tuple[tuple[str, Field], ...] = (
    ("conversationHandleTime", Field.HANDLE_TIME),
    ("conversationTalkTime", Field.TALK_TIME),
    ("holdDuration", Field.HOLD_TIME),
    ("acwDuration", Field.ACW_TIME),
)
_COUNTS: tuple[tuple[str, Field], ...] = (
    ("offeredContacts", Field.CONTACTS_OFFERED),
    ("answeredContacts", Field.CONTACTS_ANSWERED),
    ("abandonedContacts", Field.CONTACTS_ABANDONED),
)
FIELDS = frozenset({f for _, f in _DURATIONS} | {f for _, f in _COUNTS} | {Field.CONTACTS_HANDLED})


class KoreAIConfig(SourceConfig):
    default_refresh: ClassVar[str] = "1h"

    provider: Literal["koreai"]
    # Ids go into the URL path and the body: no characters that would change the path.
    account_id: str = PydanticField(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$", max_length=128)
    org_id: str = PydanticField(min_length=1, max_length=128)
    client_id: str = PydanticField(min_length=1)
    client_secret: SecretStr
    time_unit: TimeUnit = "ms"
    handled_field: HandledField = "completedContacts"
    page_size: int = PydanticField(default=MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    # [doc] 60 a minute per account, shared with Kore's other analytics APIs: set it lower when other
    # tools use the same account's budget.
    rate_limit: int = PydanticField(default=RATE_LIMIT_PER_MINUTE, ge=1)
    group_by: list[GroupLabel] = PydanticField(default_factory=lambda: list(DEFAULT_GROUP_BY))
    bucket: DurationField = Duration.parse("15m")

    @property
    def bucket_seconds(self) -> int:
        return self.bucket.seconds

    @property
    def api_url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def callvolume_url(self) -> str:
        return self.api_url + CALLVOLUME_PATH.format(account_id=self.account_id)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.bucket.millis not in {b * 1000 for b in BUCKETS}:
            yield "bucket", f"{self.bucket} is not supported (use 15m, Kore's interval, or 5m, 30m, 1h)"
            return
        yield from super().problems()
        if len(set(self.group_by)) != len(self.group_by):
            yield "group_by", "lists a label twice"


# --- the pure part: JSON -> records -> buckets --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rules:
    """How a source reads records: its bucket, grouping, unit and handled-contacts field."""

    bucket: int
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    time_unit: TimeUnit = "ms"
    handled_field: HandledField = "completedContacts"

    @classmethod
    def of(cls, config: KoreAIConfig) -> Rules:
        return cls(config.bucket_seconds, tuple(config.group_by), config.time_unit, config.handled_field)


@dataclass(frozen=True, slots=True)
class Record:
    """One CallVolumeUpdate entry, validated and in our units."""

    index: int  # its position in the whole reply (skip + position in its page), for error messages
    id: str | None
    version: int
    start: int
    end: int
    labels: Labels
    queue_id: str | None
    queue_name: str | None
    values: dict[str, float]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[_Record]
    has_more: bool
    total: int | None


# The reply's shape, decoded by msgspec into these compact records as Genesys' is: straight from the bytes
# (parse_page_json) or from JSON already decoded (parse_page), and a mistyped or missing field fails with its
# JSON path (`$.CallVolumeUpdate[3].holdDuration`). Keys we do not read (orgId, the queue waits, csat...) are
# skipped. What msgspec cannot say is checked after it, naming the path the same way (`- at ...`): bounds,
# timestamps, and the fields whose use depends on the source's config.
_Figure = int | float  # a JSON integer of any size stays itself, so its error can say `about 10^400`


class _Record(msgspec.Struct, gc=False):
    # The interval places a record: without it the record belongs nowhere, so it fails the poll.
    intervalStartTimeStamp: str
    intervalEndTimeStamp: str
    id: str | None = msgspec.field(default=None, name="_id")
    version: int = msgspec.field(default=0, name="__v")
    # Read only when the config groups by them (`_dimension`): a dimension not grouped by never fails a poll.
    queueId: Any = None
    source: Any = None
    queueName: Any = None  # names are decoration: never fatal
    # A counter left out is zero (issue 13: records leave out their zero counters); a null one is a wrong
    # type like any other, since nothing says whether Kore would mean "zero" or "unknown" by it.
    conversationHandleTime: _Figure | UnsetType = UNSET
    conversationTalkTime: _Figure | UnsetType = UNSET
    holdDuration: _Figure | UnsetType = UNSET
    acwDuration: _Figure | UnsetType = UNSET
    offeredContacts: _Figure | UnsetType = UNSET
    answeredContacts: _Figure | UnsetType = UNSET
    abandonedContacts: _Figure | UnsetType = UNSET
    # Read only with `handled_field: completedContacts` (the default), and checked then.
    completedContacts: Any = UNSET


class _Reply(msgspec.Struct, gc=False):
    CallVolumeUpdate: list[_Record] | UnsetType | None = UNSET
    hasMore: bool | UnsetType = UNSET
    totalCount: Any = None  # [sample] only: anything but an integer is no total
    # An error body (`error_message`): `{"errors": [{"msg", "code"}]}` or a flat message [unverified].
    errors: Any = UNSET
    msg: Any = UNSET
    message: Any = UNSET
    error: Any = UNSET
    errorMessage: Any = UNSET
    code: Any = UNSET
    errorCode: Any = UNSET


_DECODER = msgspec.json.Decoder(_Reply)
_TOO_DEEP = "nested too deeply to be a callvolume reply"
_RECORD_PATH = re.compile(r"`\$\.CallVolumeUpdate\[(\d+)\]")


def parse_page_json(raw: bytes, *, skip: int = 0, status: int = 200) -> Page:
    """One reply of the Contact Volume API as received, the page at `skip`. Pure; raises ProviderError naming
    the JSON path of the bad field, its record numbered in the whole reply (`skip` + its place in the page)."""
    try:
        reply = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, skip) from None
    except msgspec.DecodeError:
        # JSON that msgspec refuses but Python's json module reads, as the provider did before msgspec: a lone
        # surrogate's escape (`"q\ud800"`, JSON's grammar though no Unicode), NaN and Infinity, a BOM, UTF-16.
        # Anything else is not JSON, and the error says so with the reply's first bytes.
        try:
            payload = json.loads(raw)
        except RecursionError:
            raise ProviderError(f"callvolume response: {_TOO_DEEP}", status=status) from None
        except ValueError:  # UnicodeDecodeError included
            raise not_json(raw, status, "callvolume") from None
        return parse_page(payload, skip=skip)
    except RecursionError:  # msgspec's own depth limit, for a value of a key we keep as Any
        raise ProviderError(f"callvolume response: {_TOO_DEEP}") from None
    return _page(reply)


def parse_page(payload: object, *, skip: int = 0) -> Page:
    """One reply of the Contact Volume API, already decoded; the rest as parse_page_json."""
    try:
        reply = msgspec.convert(payload, _Reply)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, skip) from None
    except RecursionError:
        raise ProviderError(f"callvolume response: {_TOO_DEEP}") from None
    return _page(reply)


def _invalid(exc: msgspec.ValidationError, skip: int) -> ProviderError:
    """msgspec's error with its path, a record's index counted in the whole reply as Kore's `skip` counts."""
    text = str(exc)
    if skip:
        text = _RECORD_PATH.sub(lambda m: f"`$.CallVolumeUpdate[{int(m[1]) + skip}]", text, count=1)
    return ProviderError(f"callvolume response: {text}")


def _page(reply: _Reply) -> Page:
    records = reply.CallVolumeUpdate
    if records is UNSET or records is None:
        if reply.errors is not UNSET:
            # Kore's error body, with a 2xx status (a gateway or a partial outage): say what Kore said.
            body = {k: v for k, v in msgspec.structs.asdict(reply).items() if v is not UNSET}
            message = error_message(body)
            if message is not None:
                raise ProviderError(f"callvolume: answered 200 with an error: {message}")
        # msgspec's own words, for errors that read alike whichever part of the parser found them.
        if records is UNSET:
            raise ProviderError("callvolume response: Object missing required field `CallVolumeUpdate`")
        raise ProviderError("callvolume response: Expected `array`, got `null` - at `$.CallVolumeUpdate`")
    if reply.hasMore is UNSET:
        raise ProviderError("callvolume response: Object missing required field `hasMore`")
    total = reply.totalCount
    return Page(records, reply.hasMore, total if isinstance(total, int) and not isinstance(total, bool) else None)


def parse_record(raw: object, index: int, rules: Rules) -> Record:
    """One record, a page's (from parse_page) or decoded JSON; every field we use is checked. Pure; raises
    ProviderError naming the JSON path of the bad field, `$.CallVolumeUpdate[index]...`."""
    path = f"$.CallVolumeUpdate[{index}]"
    if isinstance(raw, _Record):
        record = raw
    else:
        try:
            record = msgspec.convert(raw, _Record)
        except msgspec.ValidationError as exc:
            head, at, tail = str(exc).rpartition(" - at `$")
            text = f"{head} - at `{path}{tail}" if at else f"{exc} - at `{path}`"
            raise ProviderError(f"callvolume response: {text}") from None
        except RecursionError:
            raise ProviderError(f"callvolume response: {_TOO_DEEP}") from None
    start = _timestamp(record.intervalStartTimeStamp, f"{path}.intervalStartTimeStamp")
    end = _timestamp(record.intervalEndTimeStamp, f"{path}.intervalEndTimeStamp")
    labels: dict[str, str] = {}
    if "media_type" in rules.group_by:
        source = _dimension(record.source, f"{path}.source")
        labels["media_type"] = MISSING_LABEL if source is None else MEDIA_TYPES.get(source.lower(), source.lower())
    queue_id: str | None = None
    if "queue" in rules.group_by:
        queue_id = _dimension(record.queueId, f"{path}.queueId")
        labels["queue"] = MISSING_LABEL if queue_id is None else queue_id
    elif isinstance(record.queueId, str) and record.queueId:
        queue_id = record.queueId
    name = record.queueName if queue_id is not None else None  # a record without a queue names none
    # Kore stores durations in ms [sample]; dividing (not multiplying by 1e-3) keeps n/1000 exact.
    divisor = 1000 if rules.time_unit == "ms" else 1
    most = MAX_SECONDS * divisor  # in the vendor's unit
    values: dict[str, float] = {
        field: _number(getattr(record, key), f"{path}.{key}", most, rules.time_unit) / divisor
        for key, field in _DURATIONS
    }
    values.update(
        {field: _number(getattr(record, key), f"{path}.{key}", MAX_COUNT, "contacts") for key, field in _COUNTS}
    )
    handled = record.answeredContacts
    if rules.handled_field == "completedContacts":
        handled = record.completedContacts
        if handled is not UNSET and type(handled) not in (int, float):  # as msgspec checks the others
            raise _wrong_type(handled, _Figure, f"{path}.completedContacts")
    values[Field.CONTACTS_HANDLED] = _number(handled, f"{path}.{rules.handled_field}", MAX_COUNT, "contacts")
    return Record(
        index=index,
        id=record.id,
        version=record.version,
        start=start,
        end=end,
        labels=tuple(sorted(labels.items())),
        queue_id=queue_id,
        queue_name=name if isinstance(name, str) and name else None,
        values=values,
    )


def _wrong_type(value: Any, kind: Any, path: str) -> ProviderError:
    """The error for a field typed Any in `_Record` whose `value` is not a `kind`, in msgspec's own words.
    Callers check the usual types themselves: msgspec.convert to a union costs microseconds a call."""
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        return ProviderError(f"callvolume response: {exc} - at `{path}`")
    return ProviderError(f"callvolume response: unexpected {figure(value)} - at `{path}`")  # a caller's bug


def _dimension(value: Any, path: str) -> str | None:
    """A grouping dimension (`queueId`, `source`), or None when the record has none: absent, null or empty.

    Issue 13: a contact abandoned before it reached a queue comes as `queueId: null`; the field table
    says nothing of nullability, so `source` is read the same way. Any other type fails the poll."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    raise _wrong_type(value, str | None, path)


def _number(value: _Figure | UnsetType, path: str, limit: float, unit: str) -> float:
    """A figure no larger than `limit` (in the vendor's `unit`), 0 when left out: anything negative, not
    finite or larger is a vendor's bug, never an AHT (nor the store's overflow)."""
    if value is UNSET:
        return 0.0
    if 0 <= value <= limit:  # the usual case, without out_of_range's type checks: msgspec made it a number
        return float(value)
    problem = out_of_range(value, limit, unit)
    if problem is not None:
        raise ProviderError(f"callvolume response: {figure(value)} {problem} - at `{path}`")
    return float(value)


def _timestamp(value: str, path: str) -> int:
    try:
        t = _instant(value)
    except ValueError:
        raise ProviderError(
            f"callvolume response: {figure(value)} is not an ISO-8601 timestamp - at `{path}`"
        ) from None
    if t != int(t):
        raise ProviderError(f"callvolume response: {figure(value)} is not on a whole second - at `{path}`")
    return int(t)


@functools.lru_cache(maxsize=4096)
def _instant(value: str) -> float:
    """parse_iso, remembered: a reply's records share a few interval timestamps (20,000 records, 96 of them)."""
    return parse_iso(value)


def latest_revisions(records: Iterable[Record]) -> list[Record]:
    """One record per `_id`, the highest `__v` (a later one on a tie).

    Paging by `skip` over data that is being updated may show a record twice; counting it twice would
    inflate every figure. Records without an `_id` cannot be matched and are all kept.
    """
    by_id: dict[str, Record] = {}
    kept: list[Record] = []
    for r in records:
        if r.id is None:
            kept.append(r)
        elif r.id not in by_id or r.version >= by_id[r.id].version:
            by_id[r.id] = r
    return kept + list(by_id.values())


def to_buckets(records: Iterable[Record], start: int, end: int, bucket: int) -> list[Bucket]:
    """Sum records into the buckets of [start, end); records of other buckets are dropped.

    A record must lie inside one bucket (a 15-minute record rolls up into a 30-minute bucket); one that
    straddles a bucket boundary, or is longer than the bucket, fails the poll rather than being misplaced.
    """
    sums: dict[tuple[int, Labels], dict[str, float]] = {}
    for r in records:
        first = floor_to(r.start, bucket)
        if not r.start < r.end <= first + bucket:
            raise ProviderError(
                f"callvolume response: CallVolumeUpdate[{r.index}] covers {isoformat_z(r.start)}/"
                f"{isoformat_z(r.end)}, which is not inside one {Duration.of(bucket)} bucket: "
                "set `bucket` to Kore's interval (15m in Kore's sample) or a multiple of it"
            )
        if not start <= first < end:
            continue  # e.g. the interval starting at toTimeStamp, if Kore includes it [unverified]
        totals = sums.setdefault((first, r.labels), {})
        for f, v in r.values.items():
            totals[f] = totals.get(f, 0.0) + v
    return [
        Bucket(start=t, end=t + bucket, labels=labels, values=values) for (t, labels), values in sorted(sums.items())
    ]


def implausible_aht(buckets: Iterable[Bucket]) -> tuple[Bucket, float] | None:
    """The bucket whose AHT is furthest outside PLAUSIBLE_AHT, if any: a hint of a wrong `time_unit`."""
    low, high = PLAUSIBLE_AHT
    worst: tuple[Bucket, float] | None = None
    worst_factor = 1.0
    for b in buckets:
        handled = b.values.get(Field.CONTACTS_HANDLED, 0.0)
        aht = b.values.get(Field.HANDLE_TIME, 0.0) / handled if handled > 0 else 0.0
        if aht <= 0:
            continue  # nothing handled, or no handle time at all: nothing to judge the unit by
        factor = max(aht / high, low / aht)  # how far outside the range: more than 1 when outside
        if factor > worst_factor:
            worst, worst_factor = (b, aht), factor
    return worst


def query_body(config: KoreAIConfig, start: int, end: int, skip: int) -> dict[str, Any]:
    # [doc] ISO timestamps with Z, as in the vendor's sample request: 2023-01-07T09:45:00Z
    return {
        "orgId": config.org_id,
        "fromTimeStamp": _iso_seconds(start),
        "toTimeStamp": _iso_seconds(end),
        "skip": skip,
        "limit": config.page_size,
    }


def _iso_seconds(t: int) -> str:
    return isoformat_z(t).replace(".000Z", "Z")


def error_message(body: Mapping[str, Any]) -> str | None:
    """`{"errors": [{"msg", "code"}]}` (Kore's platform APIs), or a flat `message`/`msg`/`error`."""
    errors = body.get("errors")
    entry = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else body
    message = next((entry[k] for k in ("msg", "message", "error", "errorMessage") if entry.get(k)), None)
    if message is None:
        return None
    code = entry.get("code") or entry.get("errorCode")
    return f"{code}: {message}" if code is not None else str(message)


def rate_limit_sign(response: httpx.Response) -> bool:
    """Kore's "slow down" text in a reply of any status, unless the reply is real data that mentions it."""
    if response.status_code == 429 or not _RATE_LIMIT_TEXT.search(response.text):
        return False
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and "CallVolumeUpdate" in body)


# --- pacing and signing ---------------------------------------------------------------------------------


def mint_jwt(client_id: str, secret: SecretStr, now: float, lifetime: int = JWT_LIFETIME) -> str:
    """A fresh HS256 JWT for one request: `appId` [doc], `sub` [unverified: the client id], a unique `jti`."""
    iat = int(now)
    claims = {"appId": client_id, "sub": client_id, "iat": iat, "exp": iat + lifetime, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")


def sign(client_id: str, secret: SecretStr, clock: Clock, request: httpx.Request) -> None:
    """Sign a request with a JWT of its own, as it leaves (after its turn in the account's budget).

    Every attempt is signed afresh, retries included. Minting per request costs one HMAC; caching would
    reuse a `jti`, which apps that enforce `jti` refuse as a replay [doc]."""
    request.headers["auth"] = mint_jwt(client_id, secret, clock.now())


# --- the provider -----------------------------------------------------------------------------------------


class KoreAIProvider(BucketProvider[KoreAIConfig]):
    name = "koreai"
    config_model = KoreAIConfig
    data_age = DataAge(bucket=900, delay=60)  # 15-minute intervals in Kore.ai's sample, the default delay

    def __init__(self, config: KoreAIConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        self.rules = Rules.of(config)
        self._queue_names: dict[str, str] = {}

    def client_needs(self) -> ClientNeeds:
        cfg = self.config
        # Every source of one account shares one pacer, retries included; each request is signed with a JWT
        # of its own once its turn has come.
        pacer = self.accounts.pacer(
            ("koreai", cfg.api_url.lower(), cfg.account_id), cfg.rate_limit, slack=PACING_SLACK, burst=True
        )
        return ClientNeeds(
            error_message=error_message,
            auth=ResendOn401(),  # a fresh JWT: `sign` signs the resent request anew
            sign=partial(sign, cfg.client_id, cfg.client_secret, self.clock),
            pacer=pacer,
            rate_limit_sign=rate_limit_sign,
        )

    @property
    def fields(self) -> frozenset[Field]:
        return FIELDS

    async def fetch(self, start: int, end: int) -> list[Bucket]:
        records = await self._records(start, end)
        for r in records:
            if r.queue_id is not None and r.queue_name is not None:
                # The latest name wins, and moves to the end: beyond MAX_NAMES the longest unseen go first.
                self._queue_names.pop(r.queue_id, None)
                self._queue_names[r.queue_id] = r.queue_name
        for stale in list(itertools.islice(self._queue_names, max(0, len(self._queue_names) - MAX_NAMES))):
            del self._queue_names[stale]
        buckets = to_buckets(latest_revisions(records), start, end, self.rules.bucket)
        self._warn_if_implausible(buckets)
        return buckets

    async def _records(self, start: int, end: int) -> list[Record]:
        """Every record of [start, end), page by page, `skip` by what arrived, at most MAX_PAGES pages."""
        records: list[Record] = []
        for _ in range(MAX_PAGES):
            body = query_body(self.config, start, end, len(records))
            try:
                response = await self.client.request(
                    "POST", self.config.callvolume_url, endpoint="callvolume", json=body
                )
            except ProviderError as exc:
                if exc.status in (401, 403):
                    raise ProviderError(
                        f"{exc} (check client_id and client_secret, that the app has the API scope for this "
                        "API and account_id, and this host's clock: the JWT's iat/exp come from it)",
                        status=exc.status,
                    ) from None
                raise
            try:
                # In a worker thread, as Genesys and LivePerson do: a page of thousands of records is
                # milliseconds of CPU that every scrape would otherwise wait behind. It touches nothing shared.
                page, parsed = await asyncio.to_thread(self._parse, response, len(records))
                if page.total is not None and page.total > MAX_PAGES * self.config.page_size:
                    raise self._too_many(start, end, page.total)
                records.extend(parsed)
            except ProviderError as exc:  # the reply's fault: say which request's, and which host answered it
                raise ProviderError(f"{where(response.request)}: {exc}", status=exc.status) from None
            if not page.has_more:
                return records
            if not page.records:
                raise ProviderError(f"callvolume response: `hasMore` is true but page skip={body['skip']} is empty")
        raise self._too_many(start, end, None)

    def _parse(self, response: httpx.Response, offset: int) -> tuple[Page, list[Record]]:
        page = parse_page_json(response.content, skip=offset, status=response.status_code)
        return page, [parse_record(raw, offset + i, self.rules) for i, raw in enumerate(page.records)]

    def _too_many(self, start: int, end: int, total: int | None) -> ProviderError:
        size = self.config.page_size
        found = f"{total} records" if total is not None else f"more than {MAX_PAGES * size} records"
        return ProviderError(
            f"callvolume: {found} for {isoformat_z(start)}/{isoformat_z(end)} exceed the bound of {MAX_PAGES} "
            f"pages of {size}: use a larger page_size, shorter windows or refresh, or narrower group_by"
        )

    def _warn_if_implausible(self, buckets: list[Bucket]) -> None:
        found = implausible_aht(buckets)
        if found is None:
            return
        bucket, aht = found
        unit = self.config.time_unit
        if aht > PLAUSIBLE_AHT[1]:
            hint = "above 4h: if Kore sends milliseconds, set time_unit: ms" if unit == "s" else "above 4h"
        else:
            hint = "below 1s: if Kore sends seconds, set time_unit: s" if unit == "ms" else "below 1s"
        log.warning(
            "implausible AHT: check time_unit",
            extra={
                "source": self.config.name,
                "aht_seconds": round(aht, 3),
                "bucket": isoformat_z(bucket.start),
                "labels": ",".join(f"{k}={v}" for k, v in clean_labels(bucket.labels)),  # vendor text: made printable
                "time_unit": unit,
                "hint": hint,
            },
        )

    names_every = 0.0  # names come with the data: no request of their own

    async def names(self) -> Names:
        """Queue names as the records last gave them: the Contact Volume API carries them, no extra call."""
        if "queue" not in self.config.group_by:
            return Names()
        return Names(queues=dict(self._queue_names))
