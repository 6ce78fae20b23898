"""A loopback LivePerson: the Domain API (CSDS), the sentinel token endpoint, and engactivity.

It serves a `Workload`'s chats the way LivePerson documents engactivity, so the LivePerson provider and the
whole exporter run end to end with no credentials and no internet, and a test can check the exported figures
against `truth()`. One server answers every path; the Domain API points both services (`leDataReporting`,
`sentinel`) back at it. Time is the injected `Clock`'s. Each fact's tag and source is in
docs/providers/liveperson.md; each shape served comes from the page named here:

- Domain API, `{service, account, baseURI}`:
  https://developers.liveperson.com/essential-resources-getting-started-with-authentication.html [doc]
- Sentinel token, both versions (https://developers.liveperson.com/oauth-2-0-client-credentials.html) [doc]:
  V2 at `/sentinel/api/v2/account/{account}/app/token` (that page's API V2 example) or at
  `/sentinel/api/account/{account}/app/token?v=2.0` (LivePerson's Functions client, faas-client-node
  appJwtAuthentication.ts); V1 at the latter with `v=1.0` (and `grant_type` in the query, as
  https://developers.liveperson.com/connector-api-authorization-and-authentication-get-appjwt.html writes it).
  Reply `{access_token, token_type: "Bearer", expires_in}`: `expires_in` as the V2 delegated token page has it
  (https://developers.liveperson.com/authorizing-conversational-cloud-applications-methods-delegated-token-request.html).
  Errors in the RFC 6749 section 5.2 shape (`error`, `error_description`): the OAuth 2.0 page says sentinel
  answers "in accordance with OAuth 2.0"; no LivePerson sample of one [unverified]. A `v` other than 1.0 or
  2.0 on the unversioned path is a 400 [unverified].
- engactivity (https://developers.liveperson.com/data-operational-realtime-engagement-activity.html) [doc]:
  chats are the workload's contacts of `chat_media_types`; an answered one is an interactive chat closed
  when its after-contact work ended, handled for its handle time in whole seconds; an abandoned one is a
  non-interactive chat of its skill, with no agent. Skills are the workload's queues and agents its agents,
  under numeric ids (the page: ids are longs) derived from theirs, see `lp_id`. A skill or agent without
  data is left out of its map; with no data at all the map is `{}` and the totals still list every metric
  as 0. One answered chat in 16 has skill -1, as a "no skill" id: [unverified] for this API (the page never
  mentions -1; LivePerson's Connector API uses -1 as a default skill).
- 5-minute buckets: the data starts at the bucket holding `now - timeframe` and ends at the newest
  interval, rounded up past now and still filling. Intervals are counted back from that end, the earliest
  one holding only the remainder [doc]; every interval is listed, empty ones with zero totals [sample: the
  page's interval examples].
- 400 for a timeframe outside 1..1440, an interval under 5 or not dividing the timeframe [doc], a missing `v`
  [doc: required]; 429 past `max_concurrent` requests in flight (the page: a concurrency limit answered with
  429; its number is not published) [doc]; 401 for a missing, unknown or expired token, a bad OAuth 1.0a
  signature, or a token whose sentinel version `accepted_token_versions` leaves out (whether engactivity
  takes a V1 or a V2 token at all is [unverified]: the flag lets a test play either tenant). The bodies of
  these errors are not documented [unverified]: `{"message", "status"}`.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import math
import secrets
from collections import Counter, deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature, utils

from aht_exporter.clock import Clock
from aht_exporter.model import Labels
from aht_exporter.simulator import ServedSimulator
from aht_exporter.simulator.faults import FaultInjector, VendorForms
from aht_exporter.simulator.workload import Contact, Totals, Workload, total_by_group

CSDS_PATH = "/api/account/{account}/service/{service}/baseURI.json"
TOKEN_PATH = "/sentinel/api/account/{account}/app/token"  # V1 (v=1.0), or V2 with v=2.0
TOKEN_PATH_V2 = "/sentinel/api/v2/account/{account}/app/token"
ENGACTIVITY_PATH = "/operations/api/account/{account}/engactivity"
SERVICES = ("leDataReporting", "sentinel")

DEMO_ACCOUNT = "12345678"
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"  # not secrets: the simulator's own, printed in the README
DEMO_CONSUMER_KEY = "demo-consumer-key"
DEMO_CONSUMER_SECRET = "demo-consumer-secret"
DEMO_TOKEN = "demo-token"
DEMO_TOKEN_SECRET = "demo-token-secret"

# How LivePerson says things, for fault injection (simulator/faults.py). Its error bodies are not
# documented [unverified]: a plain message, as this simulator's own errors.
FORMS = VendorForms(
    data_paths=("/operations/api/account/",),
    token_paths=("/sentinel/api/",),  # both token paths
    essential_field="totalHandlingTime",
    numeric_field="totalInteractiveChats",
    error_in_200={"message": "Engagement Activity is temporarily unavailable", "status": 503},
    unauthorized={"message": "Unauthorized: the token is invalid or expired", "status": 401},
    rate_limited={"message": "Too many concurrent requests", "status": 429},
)

_BUCKET = 300
_MAX_TIMEFRAME = 1440
_SEEN_NONCES = 10_000


class _Reply(Exception):
    """An error reply, raised anywhere under a handler and rendered by the middleware."""

    def __init__(self, status: int, body: dict[str, object]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def _error(status: int, message: str) -> _Reply:
    # LivePerson's error body for this API is not documented [unverified]: a plain message.
    return _Reply(status, {"message": message, "status": status})


@dataclass(frozen=True, slots=True)
class EngactivityQuery:
    timeframe: int  # minutes
    interval: int | None  # minutes; None: whole-timeframe blocks only
    skills: tuple[str, ...] | None  # None: not asked; () : all
    agents: tuple[str, ...] | None


def parse_query(query: dict[str, str]) -> EngactivityQuery:
    """Validate engactivity's URL parameters as LivePerson documents them, raising a 400 reply."""
    if not query.get("v"):
        raise _error(400, "v is required")
    timeframe = _int(query, "timeframe")
    if timeframe is None:
        raise _error(400, "timeframe is required")
    if not 1 <= timeframe <= _MAX_TIMEFRAME:
        raise _error(400, f"timeframe must be between 1 and {_MAX_TIMEFRAME} minutes")
    interval = _int(query, "interval")
    if interval is not None:
        if interval < 5:
            raise _error(400, "interval must be at least 5 minutes")
        if interval > timeframe or timeframe % interval:
            raise _error(400, "interval must be smaller than or equal to the timeframe, and a divisor of it")
    return EngactivityQuery(timeframe, interval, _ids(query, "skillIds"), _ids(query, "agentIds"))


def _int(query: dict[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise _error(400, f"{name} must be numeric, not {text!r}") from None


def _ids(query: dict[str, str], name: str) -> tuple[str, ...] | None:
    text = query.get(name)
    if text is None:
        return None
    ids = tuple(i for i in (part.strip() for part in text.split(",")) if i)
    if not ids:
        raise _error(400, f"{name} is empty")
    return () if ids == ("all",) else ids


def _metrics(chats: Iterable[Contact]) -> dict[str, int]:
    """One metrics map, seed 002's keys in seed 002's order. Chats carry whole seconds (see `as_chat`)."""
    interactive = non_interactive = handling = non_handling = 0
    for c in chats:
        if c.abandoned:
            non_interactive += 1
            non_handling += c.wait_ms // 1000
        else:
            interactive += 1
            handling += c.handle_ms // 1000
    return {
        "totalInteractiveChats": interactive,
        "totalNonInteractiveChats": non_interactive,
        "totalHandlingTime": handling,
        "nonInteractiveTotalHandlingTime": non_handling,
        "connectedEngagements": interactive,
    }


def _by(chats: Iterable[Contact], attr: str) -> dict[str, list[Contact]]:
    groups: dict[str, list[Contact]] = {}
    for c in chats:
        key = getattr(c, attr)
        if key is not None:
            groups.setdefault(key, []).append(c)
    return groups


def blocks(chats: Sequence[Contact], query: EngactivityQuery) -> dict[str, Any]:
    """The metrics blocks for `chats` as the request's ids select them [doc, seed 002]."""
    if query.skills is None and query.agents is None:
        return {"metricsTotals": _metrics(chats)}
    chosen = [
        c
        for c in chats
        if (not query.skills or c.queue_id in query.skills)
        and (not query.agents or (c.agent_id is not None and c.agent_id in query.agents))
    ]
    out: dict[str, Any] = {}
    if query.skills is not None:
        per_skill = {
            skill: {
                "metricsPerAgent": {a: _metrics(cs) for a, cs in sorted(_by(skill_chats, "agent_id").items())},
                "metricsTotals": _metrics(skill_chats),
            }
            for skill, skill_chats in sorted(_by(chosen, "queue_id").items())
        }
        out["skillsMetricsPerAgent"] = {"metricsPerSkill": per_skill, "metricsTotals": _metrics(chosen)}
    if query.agents is not None:
        with_agent = [c for c in chosen if c.agent_id is not None]
        per_agent = {a: _metrics(cs) for a, cs in sorted(_by(with_agent, "agent_id").items())}
        out["agentsMetrics"] = {"metricsPerAgent": per_agent, "metricsTotals": _metrics(with_agent)}
    return out


def lp_id(workload_id: str) -> str:
    """A workload id (a UUID) as a LivePerson id: a whole number, stable across runs and processes."""
    return str(int(hashlib.sha256(workload_id.encode()).hexdigest()[:12], 16))


UNASSIGNED_SKILL = "-1"  # [unverified] as engactivity's "no skill" id: the Engagement Activity page never shows it
UNASSIGNED_SHARE = 16  # one answered chat in this many has no skill


def _skill_of(contact: Contact) -> str:
    """Its queue's LivePerson id; for a stable one in `UNASSIGNED_SHARE` answered chats, skill -1."""
    if contact.agent_id is not None:
        key = f"{contact.queue_id} {contact.agent_id} {contact.offered_at!r}".encode()
        if int(hashlib.sha256(key).hexdigest()[:8], 16) % UNASSIGNED_SHARE == 0:
            return UNASSIGNED_SKILL
    return lp_id(contact.queue_id)


def as_chat(contact: Contact) -> Contact:
    """A workload contact as LivePerson reports it: a `chat` with numeric skill and agent ids and a handle
    time in whole seconds. LivePerson gives no handle-time components: all of it is kept as talk time.
    A few answered chats carry skill -1, as a "no skill" id [unverified for engactivity]."""
    seconds = (contact.handle_ms + 500) // 1000
    return dataclasses.replace(
        contact,
        queue_id=_skill_of(contact),
        agent_id=None if contact.agent_id is None else lp_id(contact.agent_id),
        media_type="chat",
        talk_ms=seconds * 1000,
        hold_ms=0,
        acw_ms=0,
    )


class LivePersonSimulator(ServedSimulator):
    """The LivePerson endpoints the exporter calls, on a loopback port, serving `workload`'s chats."""

    def __init__(
        self,
        workload: Workload,
        clock: Clock,
        *,
        account_id: str = DEMO_ACCOUNT,
        client_id: str = DEMO_CLIENT_ID,
        client_secret: str = DEMO_CLIENT_SECRET,
        consumer_key: str | None = DEMO_CONSUMER_KEY,
        consumer_secret: str = DEMO_CONSUMER_SECRET,
        token: str = DEMO_TOKEN,
        token_secret: str = DEMO_TOKEN_SECRET,
        token_lifetime: int = 3600,
        max_concurrent: int = 4,
        chat_media_types: Sequence[str] = ("chat", "message"),
        accepted_token_versions: Collection[str] = ("1.0", "2.0"),
    ) -> None:
        """`consumer_key=None` refuses OAuth 1.0a altogether (an account whose app keys have ended).
        `accepted_token_versions`: the sentinel API versions ("1.0", "2.0") whose tokens engactivity takes;
        sentinel issues both either way, as it would for an account whose data APIs want the other one."""
        if token_lifetime < 1 or max_concurrent < 1:
            raise ValueError("token_lifetime and max_concurrent must be positive")
        if not set(accepted_token_versions) <= {"1.0", "2.0"}:
            raise ValueError("accepted_token_versions holds sentinel API versions: 1.0, 2.0")
        self._workload = workload
        self._clock = clock
        self.account_id = account_id
        self._client = (client_id, client_secret)
        self._oauth1 = None if consumer_key is None else (consumer_key, consumer_secret, token, token_secret)
        self._token_lifetime = token_lifetime
        self._max_concurrent = max_concurrent
        self._chat_types = frozenset(m.lower() for m in chat_media_types)
        self._accepted_versions = frozenset(accepted_token_versions)
        self.faults = FaultInjector(FORMS)
        self.requests: Counter[str] = Counter()
        self.rate_limited = 0
        self.tokens_issued = 0
        self.tokens_by_version: Counter[str] = Counter()  # sentinel API version -> tokens issued
        self.refused_tokens = 0  # engactivity requests refused for their token's sentinel version
        self._tokens: dict[str, tuple[float, str]] = {}  # access token -> (expiry in clock seconds, version)
        self._nonces: deque[tuple[str, str]] = deque(maxlen=_SEEN_NONCES)
        self._in_flight = 0
        self._gate: asyncio.Event | None = None

    @property
    def engactivity_path(self) -> str:
        return ENGACTIVITY_PATH.format(account=self.account_id)

    @property
    def token_path(self) -> str:
        """Where the provider asks for a token by default (`token_version: v2`)."""
        return self.token_path_for("v2")

    def token_path_for(self, token_version: str) -> str:
        """The token path the provider's `token_version` uses."""
        path = TOKEN_PATH_V2 if token_version == "v2" else TOKEN_PATH
        return path.format(account=self.account_id)

    def csds_path(self, service: str) -> str:
        return CSDS_PATH.format(account=self.account_id, service=service)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(CSDS_PATH.format(account="{account}", service="{service}"), self._csds)
        router.add_post(TOKEN_PATH.format(account="{account}"), self._token)
        router.add_post(TOKEN_PATH_V2.format(account="{account}"), self._token)
        router.add_get(ENGACTIVITY_PATH.format(account="{account}"), self._engactivity)

    async def stop(self) -> None:
        self.resume()
        await super().stop()

    @property
    def skills(self) -> list[tuple[str, str]]:
        """(skill id, name) of every skill: the workload's queues under their LivePerson ids."""
        return [(lp_id(q), name) for q, name in self._workload.queues]

    @property
    def agents(self) -> list[tuple[str, str]]:
        """(agent id, name) of every agent."""
        return [(lp_id(a), name) for a, name in self._workload.agents]

    @property
    def in_flight(self) -> int:
        """engactivity requests being answered (or held by `pause()`) right now."""
        return self._in_flight

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far, as if they had all expired."""
        self._tokens.clear()

    def pause(self) -> None:
        """Hold engactivity requests in flight (they count against `max_concurrent`) until `resume()`."""
        if self._gate is None:
            self._gate = asyncio.Event()

    def resume(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def chats(self, start: float, end: float, as_of: float) -> list[Contact]:
        """The chats closed in [start, end) that LivePerson reports at `as_of`, by close time."""
        return [as_chat(c) for c in self._workload.contacts(start, end, as_of) if c.media_type in self._chat_types]

    def truth(
        self, start: float, end: float, group_by: Sequence[str], as_of: float | None = None
    ) -> dict[Labels, Totals]:
        """What a LivePerson source grouped by `group_by` must export over [start, end), for the chats
        visible now (or at `as_of`). Every label set carries media_type="chat", as the exported series do;
        handle time is in whole seconds per chat, as LivePerson reports it."""
        chats = self.chats(start, end, self._clock.now() if as_of is None else as_of)
        return total_by_group(chats, [*group_by, "media_type"])

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        try:
            return await handler(request)
        except _Reply as reply:
            return web.json_response(reply.body, status=reply.status)
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            return web.json_response({"message": exc.reason, "status": exc.status}, status=exc.status)

    def _check_account(self, request: web.Request) -> None:
        if request.match_info["account"] != self.account_id:
            raise _error(404, f"account {request.match_info['account']} not found")

    async def _csds(self, request: web.Request) -> web.Response:
        """[doc] Domain API: `{service, account, baseURI}`; both services live here."""
        self._check_account(request)
        service = request.match_info["service"]
        if service not in SERVICES:
            raise _error(404, f"service {service} not found")
        host = urlsplit(self.base_url).netloc
        return web.json_response({"service": service, "account": self.account_id, "baseURI": host})

    async def _token(self, request: web.Request) -> web.Response:
        """[doc] Sentinel client credentials: grant_type in the query (or form), client id and secret in the form;
        V2 by its path, or either version by `v` on the unversioned path."""
        self._check_account(request)
        if "/api/v2/" in request.path:
            version = "2.0"
        else:
            version = request.query.get("v", "")
            if version not in ("1.0", "2.0"):
                raise _Reply(400, {"error": "invalid_request", "error_description": "unsupported API version"})
        form = await request.post()
        grant = request.query.get("grant_type") or form.get("grant_type")
        if grant != "client_credentials":
            raise _Reply(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not (
            isinstance(client_id, str)
            and isinstance(client_secret, str)
            and secrets.compare_digest(client_id, self._client[0])
            and secrets.compare_digest(client_secret, self._client[1])
        ):
            raise _Reply(401, {"error": "invalid_client", "error_description": "client authentication failed"})
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (self._clock.now() + self._token_lifetime, version)
        self.tokens_issued += 1
        self.tokens_by_version[version] += 1
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self._token_lifetime})

    async def _engactivity(self, request: web.Request) -> web.Response:
        self._check_account(request)
        self._authorize(request)
        query = parse_query(dict(request.query))
        if self._in_flight >= self._max_concurrent:
            self.rate_limited += 1
            raise _error(429, "Too many concurrent requests")
        self._in_flight += 1
        try:
            if self._gate is not None:
                await self._gate.wait()
            return web.json_response(self.render(query, self._clock.now()))
        finally:
            self._in_flight -= 1

    def render(self, query: EngactivityQuery, now: float) -> dict[str, Any]:
        """engactivity's reply at `now` [doc, seed 002]: intervals newest first, then the whole timeframe."""
        newest_end = (math.floor(now / _BUCKET) + 1) * _BUCKET
        first = math.floor((now - query.timeframe * 60) / _BUCKET) * _BUCKET
        chats = self.chats(first, newest_end, now)
        whole = blocks(chats, query)
        if query.interval is None:
            return whole
        ends = [c.ended_at for c in chats]  # ascending: the workload returns contacts by ended_at
        step = query.interval * 60
        intervals: list[dict[str, Any]] = []
        end = newest_end
        while end > first:
            begin = max(first, end - step)
            part = chats[bisect.bisect_left(ends, begin) : bisect.bisect_left(ends, end)]
            intervals.append({"timestamp": end * 1000, "metricsData": blocks(part, query)})
            end -= step
        return {"metricsByIntervals": intervals, **whole}

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            issued = self._tokens.get(credentials.strip())
            if issued is None or self._clock.now() >= issued[0]:
                raise _error(401, "Unauthorized: the token is invalid or expired")
            if issued[1] not in self._accepted_versions:
                self.refused_tokens += 1
                raise _error(401, f"Unauthorized: this API does not accept tokens of sentinel API {issued[1]}")
            return
        if scheme.lower() == "oauth":
            if self._oauth1_ok(request, header):
                return
            raise _error(401, "Unauthorized: invalid OAuth 1.0a signature or keys")
        raise _error(401, "Unauthorized: no credentials")

    def _oauth1_ok(self, request: web.Request, header: str) -> bool:
        """Recompute the HMAC-SHA1 signature with oauthlib's server-side helpers (RFC 5849 section 3.4)."""
        if self._oauth1 is None:
            return False
        consumer_key, consumer_secret, token, token_secret = self._oauth1
        try:
            params = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(header)}
        except ValueError:
            return False
        if (
            params.get("oauth_consumer_key") != consumer_key
            or params.get("oauth_token") != token
            or params.get("oauth_signature_method") != "HMAC-SHA1"
            or "oauth_signature" not in params
        ):
            return False
        nonce = (params.get("oauth_nonce", ""), params.get("oauth_timestamp", ""))
        if not all(nonce) or nonce in self._nonces:
            return False  # a replayed request
        uri = f"{request.scheme}://{request.host}{request.raw_path}"
        signed = OAuthRequest(uri, http_method=request.method, headers={"Authorization": header})
        signed.params = signature.collect_parameters(
            uri_query=urlsplit(uri).query, headers={"Authorization": header}, exclude_oauth_signature=True
        )
        signed.signature = params["oauth_signature"]
        if not bool(signature.verify_hmac_sha1(signed, consumer_secret, token_secret)):
            return False
        self._nonces.append(nonce)
        return True


def demo_source(base_url: str) -> dict[str, Any]:
    """A LivePerson source pointed at a simulator at `base_url`, as raw config (for `--demo`)."""
    return {
        "name": "demo-liveperson",
        "provider": "liveperson",
        "account_id": DEMO_ACCOUNT,
        "base_url": base_url,
        "csds_url": base_url,
        "sentinel_url": base_url,
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
        "group_by": ["queue", "agent"],
        "windows": ["30m", "1h", "12h"],
    }
