"""A loopback Kore.ai Contact Volume API: JWT-checked, paged, rate-limited, serving a `Workload`.

It renders the workload the way docs/providers/koreai.md describes the vendor's API, so the Kore.ai
provider and the whole exporter run end to end with no credentials and no internet, and a test can
check the exported figures against `truth()`. Time is the injected `Clock`'s: JWT expiry, the rate-limit
window and which contacts are visible (so a closed interval's record is revised as late contacts show
up, its `__v` counting the revisions).

Choices where the vendor is silent ([unverified] in docs/providers/koreai.md), made to be the less convenient
reading, so the provider has to cope with it:
- `toTimeStamp` includes the interval that starts at it (still in progress when it is the current one);
- a record is served for every interval, queue and source with any visible contact, durations in ms;
- error bodies are `{"errors": [{"msg", "code"}]}`, as Kore's platform APIs answer;
- sparse records, as issue 13 expects of real tenants (docs/providers/koreai.md, "Real-tenant cases"): about
  half the records (by `_id`) leave out their zero counters; and with `before_queue_ms`, a contact abandoned
  before it reached a queue is served in a record with `queueId: null` (and `queueName: null`), which
  `truth()` counts under the queue MISSING_LABEL, as the exporter must.

The record shape is the Contact Volume page's field table and sample:
https://koreai.mintlify.app/ai-for-service/apis/contact-center/contact-volume (also
https://koredotcom.github.io/docs/xo/apis/contact-center/contact-volume/).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from aht_exporter.clock import Clock
from aht_exporter.model import MISSING_LABEL, Labels
from aht_exporter.simulator import ServedSimulator
from aht_exporter.simulator.faults import Fault, FaultInjector, VendorForms
from aht_exporter.simulator.workload import Contact, Totals, Workload, total_by_group

CALLVOLUME_PATH = "/agentassist/api/public/analytics/account/{account_id}/callvolume"

DEMO_ACCOUNT_ID = "636f5b36bcf8a8c7101e0d3m"
DEMO_ORG_ID = "o-01aedac2-26fb-5bdb-bb0f-f71292cad3m0"
DEMO_CLIENT_ID = "cs-cac474a3-0aa9-5c6b-b306-3263a3a5d3m0"
# Not a secret: the simulator's own, printed in the README. 32+ bytes, as HS256 keys should be (RFC 7518).
DEMO_CLIENT_SECRET = "demo-koreai-secret-not-a-real-one-0123456789"

RATE_LIMIT_TEXT = "You've exceeded the per-minute rate limit. Please wait for sometime before retrying."  # [doc]
_RATE_WINDOW = 60  # seconds [doc]
_MAX_JTI_LIFETIME = 3600  # [doc] a token with a jti may live at most an hour
_CLOCK_SKEW = 60  # seconds of iat in the future tolerated
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Workload media type -> Kore `source` [sample: rtm is chat]; the others keep their own names.
SOURCES = {"chat": "rtm"}

# The counters a sparse record leaves out when they are zero (issue 13): every figure of the field table.
COUNTERS = frozenset(
    {
        "offeredContacts",
        "answeredContacts",
        "completedContacts",
        "abandonedContacts",
        "conversationHandleTime",
        "conversationTalkTime",
        "holdDuration",
        "acwDuration",
        "maxQueueHoldTimeAnswered",
        "queueHoldTimeAnswered",
        "maxqueueHoldTimeAbandoned",
        "queueHoldTimeAbandoned",
        "messageCount",
        "savedMessageCount",
        "csatResponses",
        "csatScore",
    }
)


def _kore_error(status: int, message: str) -> dict[str, object]:
    return {"errors": [{"msg": message, "code": status}]}


# How Kore says things, for fault injection. There is no token endpoint: the client signs every request
# itself, so an UNAUTHORIZED fault lasts one request (see `KoreAISimulator._middleware`).
FORMS = VendorForms(
    data_paths=("/agentassist/api/public/analytics/account/",),
    token_paths=(),
    # Without its interval a record belongs nowhere: the one field whose absence must fail the poll (a
    # counter left out is zero, a queue left out is MISSING_LABEL).
    essential_field="intervalStartTimeStamp",
    numeric_field="conversationHandleTime",
    error_in_200=_kore_error(500, "Analytics is temporarily unavailable"),
    unauthorized=_kore_error(401, "Invalid JWT: token expired"),
    rate_limited=_kore_error(429, RATE_LIMIT_TEXT),
)


class _Reply(Exception):
    """An error reply, raised anywhere under a handler and rendered by the middleware."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = _kore_error(status, message)


class KoreAISimulator(ServedSimulator):
    """The Kore.ai Contact Volume API on a loopback port, serving `workload` in `interval_seconds` records."""

    def __init__(
        self,
        workload: Workload,
        clock: Clock,
        *,
        account_id: str = DEMO_ACCOUNT_ID,
        org_id: str = DEMO_ORG_ID,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        rate_limit_per_minute: int = 60,
        rate_limited_status: int = 429,
        interval_seconds: int = 900,
        max_limit: int = 100,
        split_records: bool = False,
        before_queue_ms: int = 0,
        sparse_records: bool = True,
    ) -> None:
        """`rate_limited_status` is the HTTP status of the "slow down" reply (Kore's is [unverified]);
        `split_records` serves each interval, queue and source as two records, which must be summed.
        An abandoned contact that waited less than `before_queue_ms` hung up before it reached a queue: its
        record has `queueId: null` (tests use 60000, a third of the abandoned). Off by default: those records
        come on top of the workload's, and the demo's first poll stays one page (other suites share its
        account's 60 requests a minute). `sparse_records` leaves the zero counters out of about half the
        records (those whose `_id` starts with an even hex digit), as a document store that never set them."""
        if rate_limit_per_minute < 1 or interval_seconds < 1 or max_limit < 1:
            raise ValueError("rate_limit_per_minute, interval_seconds and max_limit must be positive")
        if before_queue_ms < 0:
            raise ValueError("before_queue_ms must not be negative")
        self._workload = workload
        self._clock = clock
        self._account_id = account_id
        self._org_id = org_id
        self._client = (client_id, client_secret)
        self._rate_limit = rate_limit_per_minute
        self._rate_limited_status = rate_limited_status
        self._interval = interval_seconds
        self._max_limit = max_limit
        self._split = split_records
        self._before_queue_ms = before_queue_ms
        self._sparse = sparse_records
        self._queue_names = dict(workload.queues)
        self.faults = FaultInjector(FORMS)
        self.requests: Counter[str] = Counter()
        self.rate_limited = 0
        self.bodies: deque[dict[str, Any]] = deque(maxlen=10_000)  # accepted request bodies, newest last
        self._calls: deque[float] = deque()  # times of admitted requests, for the per-minute limit
        self._jtis: dict[str, float] = {}  # jti -> its token's expiry: a replay is refused

    @property
    def path(self) -> str:
        return CALLVOLUME_PATH.format(account_id=self._account_id)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(CALLVOLUME_PATH.format(account_id="{account_id}"), self._callvolume)

    def truth(
        self, start: float, end: float, group_by: Sequence[str], as_of: float | None = None
    ) -> dict[Labels, Totals]:
        """The workload's totals over [start, end), for the contacts visible now (or at `as_of`); contacts
        abandoned before a queue count under the queue MISSING_LABEL, as the exporter reports them."""
        contacts = self._workload.contacts(start, end, self._clock.now() if as_of is None else as_of)
        return total_by_group(
            [dataclasses.replace(c, queue_id=MISSING_LABEL) if self.before_queue(c) else c for c in contacts],
            group_by,
        )

    def before_queue(self, contact: Contact) -> bool:
        """Whether `contact` was abandoned before it reached a queue (served with `queueId: null`)."""
        return contact.abandoned and contact.wait_ms < self._before_queue_ms

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        unauthorized = self.faults.fault is Fault.UNAUTHORIZED
        try:
            response = await handler(request)
        except _Reply as reply:
            response = web.json_response(reply.body, status=reply.status)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            response = web.json_response(_Reply(404, "Resource not found").body, status=404)
        if unauthorized and response.status == 401:
            # "Until the client presents a new token": every Kore request carries a new one.
            self.faults.clear()
        return response

    async def _callvolume(self, request: web.Request) -> web.Response:
        if request.match_info["account_id"] != self._account_id:
            raise _Reply(404, "Account not found")
        self._verify_jwt(request.headers.get("auth"))
        self._admit()
        try:
            body = await request.json()
        except ValueError:
            raise _Reply(400, "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Reply(400, "Request body must be a JSON object")
        start, end, skip, limit = self._query(body)
        self.bodies.append(body)
        records = self.records(start, end)
        page = records[skip : skip + limit]
        return web.json_response(
            {"hasMore": skip + len(page) < len(records), "CallVolumeUpdate": page, "totalCount": len(records)}
        )

    def _verify_jwt(self, token: str | None) -> None:
        """[doc] HS256 with the client secret, `appId` = the client id; a `jti` once only, an hour at most."""
        if not token:
            raise _Reply(401, "auth header is missing")
        try:
            # Expiry is checked against the injected clock below, not the wall clock.
            claims = jwt.decode(
                token,
                self._client[1],
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError as exc:
            raise _Reply(401, f"Invalid JWT: {exc}") from None
        now = self._clock.now()
        if not secrets.compare_digest(str(claims.get("appId", "")), self._client[0]):
            raise _Reply(401, "Invalid JWT: unknown appId")
        for claim in ("sub", "jti"):
            if not isinstance(claims.get(claim), str) or not claims[claim]:
                raise _Reply(401, f"Invalid JWT: {claim} is missing")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise _Reply(401, "Invalid JWT: iat and exp are required")
        if exp <= now:
            raise _Reply(401, "Invalid JWT: token expired")
        if iat > now + _CLOCK_SKEW or exp - iat > _MAX_JTI_LIFETIME:
            raise _Reply(401, "Invalid JWT: iat in the future or exp more than an hour after it")
        for jti in [j for j, until in self._jtis.items() if until <= now]:
            del self._jtis[jti]
        if claims["jti"] in self._jtis:
            raise _Reply(401, "Invalid JWT: jti already used")
        self._jtis[claims["jti"]] = exp

    def _admit(self) -> None:
        """[doc] 60 requests a minute per account; beyond it, Kore's text."""
        now = self._clock.now()
        while self._calls and self._calls[0] <= now - _RATE_WINDOW:
            self._calls.popleft()
        if len(self._calls) >= self._rate_limit:
            self.rate_limited += 1
            raise _Reply(self._rate_limited_status, RATE_LIMIT_TEXT)
        self._calls.append(now)

    def _query(self, body: Mapping[str, object]) -> tuple[int, int, int, int]:
        if body.get("orgId") != self._org_id:
            raise _Reply(400, "orgId is missing or does not belong to this account")
        start, end = (_timestamp(body, key) for key in ("fromTimeStamp", "toTimeStamp"))
        if end < start:
            raise _Reply(400, "toTimeStamp is before fromTimeStamp")
        skip, limit = body.get("skip", 0), body.get("limit", self._max_limit)
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise _Reply(400, "skip must be a non-negative integer")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self._max_limit:
            raise _Reply(400, f"limit must be an integer from 1 to {self._max_limit}")
        return start, end, skip, limit

    def records(self, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        """Every record whose interval starts in [start, end] (both ends: see the module doc), as of now."""
        step = self._interval * 1000
        first = math.ceil(start_ms / step) * step
        now = self._clock.now()
        out: list[dict[str, object]] = []
        for t in range(first, end_ms + 1, step):
            groups: dict[tuple[str | None, str], list[Contact]] = {}
            for c in self._workload.contacts(t / 1000, (t + step) / 1000, now):
                queue_id = None if self.before_queue(c) else c.queue_id
                groups.setdefault((queue_id, SOURCES.get(c.media_type, c.media_type)), []).append(c)
            for (queue_id, source), contacts in sorted(groups.items(), key=lambda g: (g[0][0] or "", g[0][1])):
                parts = [contacts[0::2], contacts[1::2]] if self._split and len(contacts) > 1 else [contacts]
                for n, part in enumerate(parts):
                    out.append(self._record(t, t + step, queue_id, source, part, n))
        return out

    def _record(
        self, start: int, end: int, queue_id: str | None, source: str, contacts: list[Contact], n: int
    ) -> dict[str, object]:
        """One record in seed 003's shape and field order; durations in ms. `queue_id` None: the contacts
        never reached a queue, so none of them waited in one."""
        answered = [c for c in contacts if not c.abandoned]
        abandoned = [c for c in contacts if c.abandoned and queue_id is not None]  # waits in a queue
        key = f"{self._org_id}/{start}/{queue_id}/{source}/{n}"
        record_id = hashlib.sha256(key.encode()).hexdigest()[:24]  # stable across revisions: an upsert
        record: dict[str, object] = {
            "_id": record_id,
            "intervalStartTimeStamp": _iso(start),
            "orgId": self._org_id,
            "queueId": queue_id,
            "source": source,
            "__v": len(contacts) - 1,  # one revision per contact after the first
            "intervalEndTimeStamp": _iso(end),
            "offeredContacts": len(contacts),
            "answeredContacts": len(answered),
            "maxQueueHoldTimeAnswered": max((c.wait_ms for c in answered), default=0),
            "queueHoldTimeAnswered": sum(c.wait_ms for c in answered),
            "acwDuration": sum(c.acw_ms for c in answered),
            "completedContacts": len(answered),
            "conversationHandleTime": sum(c.handle_ms for c in answered),
            "conversationTalkTime": sum(c.talk_ms for c in answered),
            "holdDuration": sum(c.hold_ms for c in answered),
            "messageCount": 0,
            "savedMessageCount": 0,
            "csatResponses": 0,
            "csatScore": 0,
            "abandonedContacts": len(contacts) - len(answered),
            "maxqueueHoldTimeAbandoned": max((c.wait_ms for c in abandoned), default=0),  # sic [sample]
            "queueHoldTimeAbandoned": sum(c.wait_ms for c in abandoned),
            "iId": "st-" + hashlib.sha256(self._org_id.encode()).hexdigest()[:32],
            "queueName": None if queue_id is None else self._queue_names.get(queue_id, ""),
        }
        if self._sparse and int(record_id[0], 16) % 2 == 0:
            return {k: v for k, v in record.items() if not (k in COUNTERS and v == 0)}
        return record


def _timestamp(body: Mapping[str, object], key: str) -> int:
    """An ISO-8601 timestamp of the body, in whole ms."""
    value = body.get(key)
    if not isinstance(value, str):
        # [doc] fromTimeStamp may be left out to start at the first record; this simulator has no first.
        raise _Reply(400, f"{key} is required")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Reply(400, f"{key} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _iso(ms: int) -> str:
    """Kore's record timestamps: UTC with milliseconds and Z, e.g. 2023-06-01T09:45:00.000Z [sample]."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def demo_source(base_url: str) -> dict[str, Any]:
    """A raw source for `--demo`: Kore.ai by media type and queue, against a simulator at `base_url`.

    Windows up to 2h keep the first poll to two pages (about a second of pacing at 60 requests a minute).
    """
    return {
        "name": "demo-koreai",
        "provider": "koreai",
        "base_url": base_url,
        "account_id": DEMO_ACCOUNT_ID,
        "org_id": DEMO_ORG_ID,
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "group_by": ["media_type", "queue"],
        "windows": ["15m", "1h", "2h"],
    }
