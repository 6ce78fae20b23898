"""A loopback Genesys Cloud: OAuth login, the conversation aggregates query, queues and users.

It serves a `Workload` the way the vendor documents its API, so the Genesys
provider and the whole exporter run end to end with no credentials and no internet, and a test can
check the exported figures against `truth()`. One server answers both the login and the API paths.
Time is the injected `Clock`'s: token expiry, the rate-limit window and which contacts are visible.

Where each shape comes from (docs/providers/genesys.md):
- the query and its reply: https://developer.genesys.cloud/api/rest/v2/analytics/conversation_aggregate and
  the models of Genesys' Python SDK (PureCloudPlatformClientV2: ConversationAggregationQuery,
  StatisticalSummary, in which every stat is optional);
- errors and 429s: https://developer.genesys.cloud/forum/t/normalized-platform-api-429-responses/12028;
- login: https://developer.genesys.cloud/authorization/platform-auth/use-client-credentials.
By default a zero comes as `{"count": 0}` without `sum` (issue 13): the SDK allows it, no tenant has shown
it in an aggregates reply yet, so `zero_metrics=False` serves the documented "left out" instead.
"""

from __future__ import annotations

import math
import re
import secrets
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import BasicAuth, web
from aiohttp.typedefs import Handler

from aht_exporter.clock import Clock
from aht_exporter.model import Labels
from aht_exporter.simulator import ServedSimulator
from aht_exporter.simulator.faults import FaultInjector, VendorForms
from aht_exporter.simulator.workload import Contact, Totals, Workload

TOKEN_PATH = "/oauth/token"
AGGREGATES_PATH = "/api/v2/analytics/conversations/aggregates/query"
QUEUES_PATH = "/api/v2/routing/queues"
USERS_PATH = "/api/v2/users"

DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # not a secret: the simulator's own, printed in the README

# How Genesys says things, for fault injection. Genesys answers errors with their HTTP status; the
# error-in-200 form is what a misbehaving gateway or a partial outage hands back.
FORMS = VendorForms(
    data_paths=(AGGREGATES_PATH,),
    token_paths=(TOKEN_PATH,),
    # The count is essential: a tHandle without it fails the poll (a `sum` may be left out beside a count of 0).
    essential_field="count",
    numeric_field="sum",
    error_in_200={
        "message": "Analytics is temporarily unavailable",
        "code": "service.unavailable",
        "status": 503,
        "contextId": "00000000-0000-4000-8000-00000000fa17",
    },
    unauthorized={
        "message": "Invalid login credentials.",
        "code": "bad.credentials",
        "status": 401,
        "contextId": "00000000-0000-4000-8000-0000000000a1",
    },
    rate_limited={
        "message": "Rate limit exceeded the maximum. Retry the request in [1] seconds",
        "code": "too.many.requests.retry.after",
        "status": 429,
    },
)

_RATE_WINDOW = 60  # seconds: Genesys limits requests per token per minute [doc]
_MAX_PAGE_SIZE = 500  # the listings' largest page; whether Genesys refuses or clamps more is [unverified]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Genesys dimension -> the Contact attribute it groups and filters on.
_DIMENSIONS = {"mediaType": "media_type", "queueId": "queue_id", "userId": "agent_id"}

# What each metric measures per contact, in ms; None when the contact does not count towards it.
# Definitions per the Genesys analytics metric docs: tHandle = talk + held + ACW of handled contacts;
# tHeldComplete and tAcw count only contacts that held or wrapped up; tAnswered and tAbandon are the
# queue waits of answered and abandoned contacts; nOffered counts offered contacts (count only).
_METRICS: dict[str, Callable[[Contact], int | None]] = {
    "tHandle": lambda c: None if c.abandoned else c.handle_ms,
    "tTalkComplete": lambda c: None if c.abandoned else c.talk_ms,
    "tHeldComplete": lambda c: c.hold_ms or None,
    "tAcw": lambda c: c.acw_ms or None,
    "tAnswered": lambda c: None if c.abandoned else c.wait_ms,
    "tAbandon": lambda c: c.wait_ms if c.abandoned else None,
    "nOffered": lambda c: 1,
}
_COUNT_ONLY = frozenset({"nOffered"})  # n* metrics carry only a count [doc]

# ISO-8601 periods of fixed length (weeks, days, hours, minutes, seconds): a month has no fixed length.
_PERIOD_RE = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_PERIOD_UNITS_MS = (7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000)

Matcher = Callable[[Contact], bool]


class _Reply(Exception):
    """An error reply, raised anywhere under a handler and rendered by the middleware."""

    def __init__(self, status: int, body: dict[str, object], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def _genesys_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> _Reply:
    """The platform API's error body [doc]: {message, code, status, contextId, details, errors}."""
    body: dict[str, object] = {
        "message": message,
        "code": code,
        "status": status,
        "contextId": str(uuid.uuid4()),
        "details": [],
        "errors": [],
    }
    return _Reply(status, body, headers)


def _bad_request(message: str) -> _Reply:
    return _genesys_error(400, "bad.request", message)


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """A validated body of the conversation aggregates query; instants in Unix ms."""

    start_ms: int
    end_ms: int
    granularity_ms: int | None  # None: the whole interval is one bucket
    group_by: tuple[str, ...]  # Genesys dimensions
    metrics: tuple[str, ...]
    matches: Matcher | None  # the filter, if any


def parse_query(body: object, max_interval_ms: int) -> AggregateQuery:
    """Validate a request body as Genesys does, raising a 400 reply naming what is wrong."""
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object")
    start_ms, end_ms = _parse_interval(body.get("interval"))
    if end_ms - start_ms > max_interval_ms:
        days = f"{max_interval_ms / 86_400_000:g}"
        raise _bad_request(f"Query interval is too large: the maximum is {days} days")
    granularity = body.get("granularity")
    group_by = _parse_names(body.get("groupBy", []), "groupBy", _DIMENSIONS, required=False)
    metrics = _parse_names(body.get("metrics"), "metrics", _METRICS, required=True)
    # nOffered is queue-scoped [doc]: offers to a user are not contacts offered, so refuse the mix.
    if "nOffered" in metrics and "userId" in group_by and "queueId" not in group_by:
        raise _bad_request("nOffered is queue-scoped: group by queueId to group it by userId")
    spec = body.get("filter")
    return AggregateQuery(
        start_ms=start_ms,
        end_ms=end_ms,
        granularity_ms=None if granularity is None else _parse_period(granularity),
        group_by=group_by,
        metrics=metrics,
        matches=None if spec is None else _parse_filter(spec, "filter", clauses_allowed=True),
    )


def _parse_interval(value: object) -> tuple[int, int]:
    if not isinstance(value, str):
        raise _bad_request("interval is required: a string 'start/end' of ISO-8601 date-times")
    parts = value.split("/")
    if len(parts) != 2:
        raise _bad_request(f"interval {value!r} must be 'start/end', two ISO-8601 date-times")
    start_ms, end_ms = (_parse_instant(part) for part in parts)
    if end_ms <= start_ms:
        raise _bad_request(f"interval {value!r} ends before it starts")
    return start_ms, end_ms


def _parse_instant(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad_request(f"interval: {text!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        raise _bad_request(f"interval: {text!r} has no time zone (end it with Z)")
    return (moment - _EPOCH) // _MS


def _parse_period(value: object) -> int:
    m = _PERIOD_RE.match(value) if isinstance(value, str) else None
    if m is None or not any(m.groups()):
        raise _bad_request(f"granularity {value!r} is not an ISO-8601 period such as PT30M or P1D")
    ms = sum(int(g) * unit for g, unit in zip(m.groups(), _PERIOD_UNITS_MS, strict=True) if g)
    if ms == 0:
        raise _bad_request(f"granularity {value!r} is empty")
    return ms


def _parse_names(value: object, field: str, known: Mapping[str, object], *, required: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad_request(f"{field} must be a list of strings")
    if required and not value:
        raise _bad_request(f"{field} must not be empty")
    for name in value:
        if name not in known:
            raise _bad_request(f"{field}: {name!r} is not supported (use one of {', '.join(known)})")
    return tuple(dict.fromkeys(value))  # Genesys ignores repeats; keep the first order


def _parse_filter(spec: object, where: str, *, clauses_allowed: bool) -> Matcher:
    """A Genesys filter: {type and|or, clauses: [{type, predicates}], predicates: [...]}.

    The filter's own predicates and its clauses are all combined by its `type`; each clause combines
    its predicates by the clause's `type` [doc: conversation aggregate query filter].
    """
    if not isinstance(spec, dict):
        raise _bad_request(f"{where} must be an object")
    kind = spec.get("type")
    if kind not in ("and", "or"):
        raise _bad_request(f"{where}.type must be 'and' or 'or', not {kind!r}")
    if "clauses" in spec and not clauses_allowed:
        raise _bad_request(f"{where}: a clause cannot hold clauses")
    parts = [_parse_predicate(p, f"{where}.predicates[{i}]") for i, p in enumerate(_list(spec, "predicates", where))]
    parts += [
        _parse_filter(c, f"{where}.clauses[{i}]", clauses_allowed=False)
        for i, c in enumerate(_list(spec, "clauses", where))
    ]
    if not parts:
        raise _bad_request(f"{where} has neither predicates nor clauses")
    if kind == "and":
        return lambda c: all(part(c) for part in parts)
    return lambda c: any(part(c) for part in parts)


def _list(spec: dict[str, object], key: str, where: str) -> list[object]:
    value = spec.get(key, [])
    if not isinstance(value, list):
        raise _bad_request(f"{where}.{key} must be a list")
    return value


def _parse_predicate(spec: object, where: str) -> Matcher:
    """A dimension predicate; `type` defaults to dimension and `operator` to matches [doc]."""
    if not isinstance(spec, dict):
        raise _bad_request(f"{where} must be an object")
    if spec.get("type", "dimension") != "dimension":
        raise _bad_request(f"{where}.type {spec.get('type')!r} is not supported (use dimension)")
    dimension = spec.get("dimension")
    if not isinstance(dimension, str) or dimension not in _DIMENSIONS:
        raise _bad_request(f"{where}.dimension {dimension!r} is not supported (use {', '.join(_DIMENSIONS)})")
    attr, operator, value = _DIMENSIONS[dimension], spec.get("operator", "matches"), spec.get("value")
    if operator == "matches":
        if not isinstance(value, str):
            raise _bad_request(f"{where}.value must be a string")
        return lambda c: getattr(c, attr) == value
    if operator == "exists":
        return lambda c: getattr(c, attr) is not None
    if operator == "notExists":
        return lambda c: getattr(c, attr) is None
    raise _bad_request(f"{where}.operator {operator!r} is not supported (use matches, exists, notExists)")


class _Stat:
    """Running sum/count/min/max of one metric in one group and bucket."""

    __slots__ = ("count", "max", "min", "sum")

    def __init__(self, value: int) -> None:
        self.count, self.sum, self.min, self.max = 1, value, value, value

    def add(self, value: int) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def render(self, count_only: bool) -> dict[str, int]:
        if count_only:
            return {"count": self.count}
        return {"max": self.max, "min": self.min, "count": self.count, "sum": self.sum}  # seed 000's order


def aggregate(
    contacts: Sequence[Contact], query: AggregateQuery, group_by: Sequence[str], *, zero_metrics: bool = False
) -> list[object]:
    """The `results` array: one entry per group, one data entry per bucket with data, seed 000's shape.

    Groups and buckets without data are left out, never reported as zeros [doc]. A metric asked for without
    data in a bucket that has others is left out too, or with `zero_metrics` comes as `{"count": 0}`: no
    `sum`, `min` or `max` (issue 13; every stat is optional in the SDK's StatisticalSummary). Grouped by
    userId, abandoned contacts (no user) are in no group, as in `Workload.truth`.
    """
    attrs = [_DIMENSIONS[d] for d in group_by]
    by_user = "userId" in group_by
    step = query.granularity_ms or query.end_ms - query.start_ms
    metrics = [(name, _METRICS[name]) for name in query.metrics]
    groups: dict[tuple[str, ...], dict[int, dict[str, _Stat]]] = {}
    for c in contacts:
        if (by_user and c.agent_id is None) or (query.matches is not None and not query.matches(c)):
            continue
        bucket = (round(c.ended_at * 1000) - query.start_ms) // step  # ended_at is whole ms
        stats: dict[str, _Stat] | None = None
        for name, measure in metrics:
            value = measure(c)
            if value is None:
                continue
            if stats is None:
                key = tuple(getattr(c, attr) for attr in attrs)
                stats = groups.setdefault(key, {}).setdefault(bucket, {})
            stat = stats.get(name)
            if stat is None:
                stats[name] = _Stat(value)
            else:
                stat.add(value)
    return [
        {"group": dict(zip(group_by, key, strict=True)), "data": _data(buckets, query, step, zero_metrics)}
        for key, buckets in sorted(groups.items())
    ]


def _data(buckets: dict[int, dict[str, _Stat]], query: AggregateQuery, step: int, zero_metrics: bool) -> list[object]:
    data: list[object] = []
    for index in sorted(buckets):
        start = query.start_ms + index * step
        interval = f"{_iso(start)}/{_iso(min(start + step, query.end_ms))}"
        stats = buckets[index]
        rendered = [
            {"metric": name, "stats": stats[name].render(name in _COUNT_ONLY) if name in stats else {"count": 0}}
            for name in query.metrics
            if name in stats or zero_metrics
        ]
        data.append({"interval": interval, "metrics": rendered})
    return data


def _iso(ms: int) -> str:
    """Genesys's interval format: UTC with milliseconds and Z, e.g. 2026-01-01T10:00:00.000Z."""
    moment = _EPOCH + ms * _MS
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class GenesysSimulator(ServedSimulator):
    """The Genesys Cloud endpoints the exporter calls, on a loopback port, serving `workload`."""

    def __init__(
        self,
        workload: Workload,
        clock: Clock,
        *,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        token_lifetime: int = 86400,
        rate_limit_per_minute: int = 300,
        max_interval_seconds: int = 31 * 86400,
        always_group_by_media_type: bool = False,
        zero_metrics: bool = True,
    ) -> None:
        """`always_group_by_media_type` adds mediaType to every group, as seed 000's response does for a
        query without groupBy: docs/providers/genesys.md says a group may carry keys not asked for, and a provider
        must then add such groups up, not overwrite one with another. `zero_metrics` answers a metric asked
        for but without data in a bucket as `{"count": 0}`, without `sum` (see `aggregate`); off, it is left
        out, as Genesys documents ("just because you query for a metric, you may not see any data about it
        returned": https://developer.genesys.cloud/api/rest/v2/analytics/conversation_aggregate)."""
        if rate_limit_per_minute < 1 or token_lifetime < 1 or max_interval_seconds < 1:
            raise ValueError("rate_limit_per_minute, token_lifetime and max_interval_seconds must be positive")
        self._workload = workload
        self._clock = clock
        self._client = (client_id, client_secret)
        self._token_lifetime = token_lifetime
        self._rate_limit = rate_limit_per_minute
        self._max_interval_ms = max_interval_seconds * 1000
        self._always_media_type = always_group_by_media_type
        self._zero_metrics = zero_metrics
        self.requests: Counter[str] = Counter()
        self.rate_limited = 0
        self.tokens_issued = 0
        self._tokens: dict[str, float] = {}  # access token -> expiry (clock seconds)
        self._calls: dict[str, deque[float]] = {}  # access token -> times of its admitted requests
        self.faults = FaultInjector(FORMS)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(TOKEN_PATH, self._token)
        router.add_post(AGGREGATES_PATH, self._aggregates)
        router.add_get(QUEUES_PATH, self._queues)
        router.add_get(USERS_PATH, self._users)

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far, as if they had all expired."""
        self._tokens.clear()
        self._calls.clear()

    def truth(
        self, start: float, end: float, group_by: Sequence[str], as_of: float | None = None
    ) -> dict[Labels, Totals]:
        """The workload's totals over [start, end), for the contacts visible now (or at `as_of`)."""
        return self._workload.truth(start, end, group_by, self._clock.now() if as_of is None else as_of)

    @web.middleware  # without it, aiohttp takes this for an old-style (app, handler) factory
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        try:
            response = await handler(request)
        except _Reply as reply:
            response = web.json_response(reply.body, status=reply.status, headers=reply.headers)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            missing = _genesys_error(404, "not.found", "The requested resource was not found.")
            response = web.json_response(missing.body, status=missing.status)
        # Every response carries the rate-limit state of its token [doc].
        count, reset = self._window(_bearer(request))
        response.headers["inin-ratelimit-count"] = str(count)
        response.headers["inin-ratelimit-allowed"] = str(self._rate_limit)
        response.headers["inin-ratelimit-reset"] = str(reset)
        return response

    async def _token(self, request: web.Request) -> web.Response:
        """OAuth client credentials [doc]: HTTP Basic client_id:client_secret, grant_type in the form."""
        if not self._client_ok(request.headers.get("Authorization", "")):
            raise _Reply(401, {"error": "invalid_client", "description": "client not found"})
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            raise _Reply(400, {"error": "unsupported_grant_type", "description": "grant type not supported"})
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self._clock.now() + self._token_lifetime
        self.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": self._token_lifetime})

    def _client_ok(self, authorization: str) -> bool:
        try:
            auth = BasicAuth.decode(authorization)
        except ValueError:
            return False
        return secrets.compare_digest(auth.login, self._client[0]) and secrets.compare_digest(
            auth.password, self._client[1]
        )

    async def _aggregates(self, request: web.Request) -> web.Response:
        self._admit(request)
        try:
            body = await request.json()
        except ValueError:
            raise _bad_request("The request body is not valid JSON") from None
        query = parse_query(body, self._max_interval_ms)
        group_by = query.group_by
        if self._always_media_type and "mediaType" not in group_by:
            group_by = (*group_by, "mediaType")
        contacts = self._workload.contacts(query.start_ms / 1000, query.end_ms / 1000, self._clock.now())
        return web.json_response({"results": aggregate(contacts, query, group_by, zero_metrics=self._zero_metrics)})

    async def _queues(self, request: web.Request) -> web.Response:
        self._admit(request)
        return _page(request, self._workload.queues, {})

    async def _users(self, request: web.Request) -> web.Response:
        self._admit(request)
        return _page(request, self._workload.agents, {"state": "active"})

    def _admit(self, request: web.Request) -> None:
        """Let an API request through, or raise its 401 or 429 reply."""
        token = _bearer(request)
        if token is None:
            raise _genesys_error(
                401, "authentication.required", "No authentication bearer token specified in authorization header."
            )
        expiry = self._tokens.get(token)
        if expiry is None or self._clock.now() >= expiry:
            # Genesys answers an unknown or expired token with bad.credentials, not authentication.required
            # (seen in the vendor's replies quoted by client libraries; all are 401s either way).
            raise _genesys_error(401, "bad.credentials", "Invalid login credentials.")
        calls = self._calls.setdefault(token, deque())
        count, reset = self._window(token)
        if count >= self._rate_limit:
            self.rate_limited += 1
            # Body and code as in Genesys's announcement "Normalized Platform API 429 responses"
            # (developer.genesys.cloud forum, 2021): every 429 carries Retry-After and this code.
            raise _genesys_error(
                429,
                "too.many.requests.retry.after",
                f"Rate limit exceeded the maximum. Retry the request in [{reset}] seconds",
                {"Retry-After": str(reset)},
            )
        calls.append(self._clock.now())

    def _window(self, token: str | None) -> tuple[int, int]:
        """(requests admitted in the last minute, seconds until the oldest of them leaves the window)."""
        calls = self._calls.get(token) if token is not None else None
        now = self._clock.now()
        while calls and calls[0] <= now - _RATE_WINDOW:
            calls.popleft()
        if not calls:
            return 0, _RATE_WINDOW
        return len(calls), max(1, math.ceil(calls[0] + _RATE_WINDOW - now))


def demo_sources(base_url: str) -> list[dict[str, Any]]:
    """The demo's Genesys sources, as raw config, for a simulator made by `demo_simulator` at `base_url`:
    by media type and queue on the default 30-minute buckets, and by agent on 15-minute ones."""
    common = {
        "provider": "genesys",
        "base_url": base_url,
        "login_url": base_url,  # one server answers both the login and the API paths
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
    }
    return [
        {"name": "demo-genesys", **common, "group_by": ["media_type", "queue"], "windows": ["30m", "1h", "1d"]},
        {"name": "demo-genesys-agents", **common, "bucket": "15m", "group_by": ["agent"], "windows": ["15m", "1h"]},
    ]


def demo_simulator(workload: Workload, clock: Clock) -> GenesysSimulator:
    return GenesysSimulator(workload, clock, client_id=DEMO_CLIENT_ID, client_secret=DEMO_CLIENT_SECRET)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _page(request: web.Request, items: Sequence[tuple[str, str]], extra: Mapping[str, str]) -> web.Response:
    """One page of a Genesys entity listing: 1-based pageNumber, pageSize 1..500, default 25 [doc]."""
    size = _int_param(request, "pageSize", 25)
    number = _int_param(request, "pageNumber", 1)
    if size > _MAX_PAGE_SIZE:
        raise _bad_request(f"pageSize must be at most {_MAX_PAGE_SIZE}")
    path, total = request.path, len(items)
    page_count = math.ceil(total / size)
    entities = [
        {"id": id_, "name": name, **extra, "selfUri": f"{path}/{id_}"}
        for id_, name in items[(number - 1) * size : number * size]
    ]
    body: dict[str, object] = {
        "entities": entities,
        "pageSize": size,
        "pageNumber": number,
        "total": total,
        "pageCount": page_count,
        "firstUri": f"{path}?pageSize={size}&pageNumber=1",
        "lastUri": f"{path}?pageSize={size}&pageNumber={max(page_count, 1)}",
        "selfUri": f"{path}?pageSize={size}&pageNumber={number}",
    }
    if number < page_count:
        body["nextUri"] = f"{path}?pageSize={size}&pageNumber={number + 1}"
    return web.json_response(body)


def _int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _bad_request(f"{name} must be an integer, not {text!r}") from None
    if value < 1:
        raise _bad_request(f"{name} must be at least 1")
    return value
