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

import itertools
import logging
import math
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
import jwt
from pydantic import Field as PydanticField
from pydantic import SecretStr

from aht_exporter.clock import Clock
from aht_exporter.config import DurationField, SourceConfig
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient, Sleep, generic_error_text, json_body, where
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
from aht_exporter.pacing import shared_pacer
from aht_exporter.providers.base import Provider
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

    def problems(self) -> Any:
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
    values: dict[Field, float]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[object]
    has_more: bool
    total: int | None


def parse_page(payload: object) -> Page:
    """One reply of the Contact Volume API. Pure; raises ProviderError naming the bad field."""
    if not isinstance(payload, dict):
        raise ProviderError(f"callvolume response: expected a JSON object, got {type(payload).__name__}")
    records = payload.get("CallVolumeUpdate")
    message = _error_message(payload) if records is None and "errors" in payload else None
    if message is not None:
        # Kore's error body, with a 2xx status (a gateway or a partial outage): say what Kore said.
        raise ProviderError(f"callvolume: answered 200 with an error: {message}")
    if not isinstance(records, list):
        raise ProviderError("callvolume response: `CallVolumeUpdate` is missing or not a list")
    has_more = payload.get("hasMore")
    if not isinstance(has_more, bool):
        raise ProviderError("callvolume response: `hasMore` is missing or not a boolean")
    total = payload.get("totalCount")
    return Page(records, has_more, total if isinstance(total, int) and not isinstance(total, bool) else None)


def parse_record(raw: object, index: int, rules: Rules) -> Record:
    """One record; every field we use is checked. Pure; raises ProviderError naming record and field."""
    where = f"callvolume response: CallVolumeUpdate[{index}]"
    if not isinstance(raw, dict):
        raise ProviderError(f"{where} is not an object")
    # The interval is what places a record: without it the record belongs nowhere, so it fails the poll.
    start, end = (_timestamp(raw, key, where) for key in ("intervalStartTimeStamp", "intervalEndTimeStamp"))
    labels: dict[str, str] = {}
    if "media_type" in rules.group_by:
        source = _dimension(raw, "source", where)
        labels["media_type"] = MISSING_LABEL if source is None else MEDIA_TYPES.get(source.lower(), source.lower())
    queue_id: str | None = None
    if "queue" in rules.group_by:
        queue_id = _dimension(raw, "queueId", where)
        labels["queue"] = MISSING_LABEL if queue_id is None else queue_id
    elif isinstance(raw.get("queueId"), str) and raw["queueId"]:
        queue_id = raw["queueId"]
    name = raw.get("queueName") if queue_id is not None else None  # a record without a queue names none
    # Kore stores durations in ms [sample]; dividing (not multiplying by 1e-3) keeps n/1000 exact.
    divisor = 1000 if rules.time_unit == "ms" else 1
    most = MAX_SECONDS * divisor  # in the vendor's unit
    values = {field: _number(raw, key, where, most, rules.time_unit) / divisor for key, field in _DURATIONS}
    values.update({field: _number(raw, key, where, MAX_COUNT, "contacts") for key, field in _COUNTS})
    values[Field.CONTACTS_HANDLED] = _number(raw, rules.handled_field, where, MAX_COUNT, "contacts")
    record_id = raw.get("_id")
    if record_id is not None and not isinstance(record_id, str):
        raise ProviderError(f"{where}._id is not a string")
    version = raw.get("__v", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProviderError(f"{where}.__v is not an integer")
    return Record(
        index=index,
        id=record_id,
        version=version,
        start=start,
        end=end,
        labels=tuple(sorted(labels.items())),
        queue_id=queue_id,
        queue_name=name if isinstance(name, str) and name else None,  # names are decoration: never fatal
        values=values,
    )


def _string(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ProviderError(f"{where}.{key} is {'missing' if value is None else 'not a string'}")
    return value


def _dimension(raw: dict[str, Any], key: str, where: str) -> str | None:
    """A grouping dimension (`queueId`, `source`), or None when the record has none: absent, null or empty.

    Issue 13: a contact abandoned before it reached a queue comes as `queueId: null`; the field table
    says nothing of nullability, so `source` is read the same way. Any other type fails the poll."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProviderError(f"{where}.{key} is not a string")
    return value


def _number(raw: dict[str, Any], key: str, where: str, limit: float, unit: str) -> float:
    """A figure no larger than `limit` (in the vendor's `unit`): anything larger is a vendor's bug.

    A counter left out is zero (issue 13: records leave out their zero counters); a null one is a wrong
    type like any other, since nothing says whether Kore would mean "zero" or "unknown" by it."""
    if key not in raw:
        return 0.0
    value = raw[key]
    if out_of_range(value, math.inf, unit) is not None:  # mistyped, negative, NaN or infinite
        raise ProviderError(f"{where}.{key} is not a non-negative number: {figure(value)}")
    problem = out_of_range(value, limit, unit)
    if problem is not None:
        raise ProviderError(f"{where}.{key}: {figure(value)} {problem}")
    return float(value)


def _timestamp(raw: dict[str, Any], key: str, where: str) -> int:
    value = _string(raw, key, where)
    try:
        t = parse_iso(value)
    except ValueError:
        raise ProviderError(f"{where}.{key} is not an ISO-8601 timestamp: {value!r}") from None
    if t != int(t):
        raise ProviderError(f"{where}.{key} is not on a whole second: {value!r}")
    return int(t)


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
    sums: dict[tuple[int, Labels], dict[Field, float]] = {}
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


def parse_callvolume(payloads: Sequence[object], start: int, end: int, rules: Rules) -> list[Bucket]:
    """Pages of a reply, in order -> buckets of [start, end). Pure."""
    records: list[Record] = []
    for payload in payloads:
        page = parse_page(payload)
        offset = len(records)
        records.extend(parse_record(raw, offset + i, rules) for i, raw in enumerate(page.records))
    return to_buckets(latest_revisions(records), start, end, rules.bucket)


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


def error_text(response: httpx.Response) -> str:
    """Kore's error body as `code: message`; the shape is [unverified], so several are understood."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return (_error_message(body) if isinstance(body, dict) else None) or generic_error_text(response)


def _error_message(body: dict[str, Any]) -> str | None:
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


class KoreAuth(httpx.Auth):
    """Waits for the account's rate limiter, then signs the request with a JWT of its own.

    It runs for every attempt, so retries are paced and signed afresh too. Minting per request costs
    one HMAC; caching would reuse a `jti`, which apps that enforce `jti` refuse as a replay [doc].
    A 401 is answered once with a fresh JWT, as every provider does with its tokens; a second 401 stands.
    """

    def __init__(self, client_id: str, secret: SecretStr, clock: Clock, pace: Callable[[], Awaitable[None]]) -> None:
        self._client_id = client_id
        self._secret = secret
        self._clock = clock
        self._pace = pace

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await self._sign(request)
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()
        await self._sign(request)
        yield request

    async def _sign(self, request: httpx.Request) -> None:
        await self._pace()
        request.headers["auth"] = mint_jwt(self._client_id, self._secret, self._clock.now())


# --- the provider -----------------------------------------------------------------------------------------


class KoreAIProvider(Provider):
    name = "koreai"
    config_model = KoreAIConfig

    def __init__(self, config: SourceConfig, health: SourceHealth, **kwargs: Any) -> None:
        assert isinstance(config, KoreAIConfig)
        self.kconfig = config
        self.rules = Rules.of(config)
        self._queue_names: dict[str, str] = {}
        super().__init__(config, health, **kwargs)

    def make_client(
        self,
        config: SourceConfig,
        health: SourceHealth,
        *,
        sleep: Sleep,
        transport: httpx.AsyncBaseTransport | None,
    ) -> ApiClient:
        assert isinstance(config, KoreAIConfig)
        api_url, account_id = config.api_url, config.account_id

        rate_limit = config.rate_limit

        async def pace() -> None:
            # Every source of one account shares one pacer, retries included.
            pacer = shared_pacer(("koreai", api_url.lower(), account_id), rate_limit, slack=PACING_SLACK, burst=True)
            await pacer.wait_turn()

        return ApiClient(
            counter=health,
            timeout=config.timeout.total_seconds,
            auth=KoreAuth(config.client_id, config.client_secret, self.clock, pace),
            error_text=error_text,
            rate_limit_sign=rate_limit_sign,
            sleep=sleep,
            transport=transport,
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
            body = query_body(self.kconfig, start, end, len(records))
            try:
                response = await self.client.request(
                    "POST", self.kconfig.callvolume_url, endpoint="callvolume", json=body
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
                page = parse_page(json_body(response, "callvolume"))
                if page.total is not None and page.total > MAX_PAGES * self.kconfig.page_size:
                    raise self._too_many(start, end, page.total)
                offset = len(records)
                records.extend(parse_record(raw, offset + i, self.rules) for i, raw in enumerate(page.records))
            except ProviderError as exc:  # the reply's fault: say which request's, and which host answered it
                raise ProviderError(f"{where(response.request)}: {exc}", status=exc.status) from None
            if not page.has_more:
                return records
            if not page.records:
                raise ProviderError(f"callvolume response: `hasMore` is true but page skip={body['skip']} is empty")
        raise self._too_many(start, end, None)

    def _too_many(self, start: int, end: int, total: int | None) -> ProviderError:
        size = self.kconfig.page_size
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
        unit = self.kconfig.time_unit
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
        if "queue" not in self.kconfig.group_by:
            return Names()
        return Names(queues=dict(self._queue_names))
