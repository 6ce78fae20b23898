"""A loopback Ozonetel CloudAgent: the token API and the AHT API, with their limits, serving a `Workload`.

It answers the way seed 001 and the vendor's pages document (docs/providers/ozonetel.md), so the Ozonetel
provider and the whole exporter run end to end with no credentials and no internet, and a test can
check every exported figure against `truth()`. Where each reply's shape comes from:

- AHT success, agent and campaign, and every error text: https://docs.ozonetel.com/reference/post_ca-apis-aht
  (the same on post_ca-apis-aht-1, get_ca-apis-aht and get_ca-apis-aht-1); HTTP 200 for all [unverified].
- GET with the same JSON body as POST: https://docs.ozonetel.com/reference/get_ca-apis-aht-1 [doc].
- Token replies, lifetime and cap: https://docs.ozonetel.com/reference/post_ca-apis-catoken-generatetoken.
- No calls in the window (`no_calls`): by default `{"status": "error", "message": "No Data Found"}`, the
  reply of Ozonetel's sibling report APIs (https://docs.ozonetel.com/reference/post_ca-reports-summaryreport-2,
  "No data is found"); not documented for this API. Or, all [unverified], an `AHT` of "00:00:00", "" or null.
- A refused method (`methods`, `refuse_method_with`): a bare 405, or a bare 401 as a CloudAgent route was
  seen to answer [unverified; no page documents it].

How the workload is rendered:
- Ozonetel's AHT is that of OUTBOUND calls over the last two hours [doc]: here, the handled voice
  contacts whose attribution time (`ended_at`) lies in [now - 2h, now) and that are visible now.
- Agents are `agent001`, `agent002`, ... (the workload's agents in order, with their names); campaigns
  are the workload's queues, named as there ("Sales", "Support", ...), with CampaignIDs 1001, 1002, ...
- The AHT is the mean handle time rounded to whole seconds (half up) and printed `HH:MM:SS` (hours may
  pass 24); no call is "No Data Found" (see above). `truth_*` give exactly the seconds printed, or None
  for no call.

Limits: at most `rate_limit` requests (token calls included) in any 60 s, counted on the event loop's
clock (monotonic, as a server's limiter is; fast-forwarded in looptime tests), answering
`max limit exceeded` beyond it; tokens live 60 minutes, at most 10 are issued in any hour, and each new
one invalidates the older ones [doc]. Token expiry and the workload use the injected `Clock`.

Choices where the docs are silent, marked "sim" below: the texts for a missing bearer token, for the
token cap and for a basic-auth account asking for a token, and which check comes first.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from aht_exporter.clock import Clock
from aht_exporter.model import Labels
from aht_exporter.simulator import ServedSimulator
from aht_exporter.simulator.faults import FaultInjector, VendorForms
from aht_exporter.simulator.workload import Contact, Workload

AHT_PATH = "/ca_apis/aht"
TOKEN_PATH = "/ca_apis/CAToken/generateToken"
WINDOW_SECONDS = 7200  # [doc] the last two hours
RATE_WINDOW = 60.0  # [doc] requests per minute
TOKENS_WINDOW = 3600  # [doc] tokens per hour
FIRST_CAMPAIGN_ID = 1001

# How a target with no call in its two hours is answered (see the module's docstring for the sources).
NoCalls = Literal["no data found", "00:00:00", "empty", "null"]
NO_DATA_FOUND = "No Data Found"  # [sibling API's doc] reference/post_ca-reports-summaryreport-2
_NO_CALL_AHT: dict[str, str | None] = {"00:00:00": "00:00:00", "empty": "", "null": None}  # [unverified]

DEMO_USER_NAME = "demo_account"
DEMO_API_KEY = "demo-ozonetel-api-key"  # not a secret: the simulator's own, printed in the README
# The demo's simulator allows more than Ozonetel's 50/min so that `--demo --once` answers in a second.
DEMO_RATE_LIMIT = 1200

# How Ozonetel says things, for fault injection: errors as `{"status", "message"}`, AHT in `message`.
FORMS = VendorForms(
    data_paths=(AHT_PATH,),
    token_paths=(TOKEN_PATH,),
    essential_field="AHT",
    numeric_field="message",  # the reply object turned into a string
    error_in_200={"status": "error", "message": "Service temporarily unavailable"},
    unauthorized={"status": "false", "message": "Token Expired", "data": None},
    rate_limited={"status": "error", "message": "max limit exceeded"},
)


def agent_id(index: int) -> str:
    """The Ozonetel AgentID of the workload's agent number `index` (from 0)."""
    return f"agent{index + 1:03d}"


def demo_source(base_url: str) -> dict[str, Any]:
    """The demo's Ozonetel source, as raw config, for a simulator made by `demo_simulator`."""
    return {
        "name": "demo-ozonetel",
        "provider": "ozonetel",
        "base_url": base_url,
        "user_name": DEMO_USER_NAME,
        "api_key": DEMO_API_KEY,
        "agents": [agent_id(i) for i in range(5)],
        "campaigns": ["Sales", "Support", "Billing"],  # the first queues of any workload
        "rate_limit": DEMO_RATE_LIMIT,
    }


def demo_simulator(workload: Workload, clock: Clock) -> OzonetelSimulator:
    return OzonetelSimulator(
        workload, clock, user_name=DEMO_USER_NAME, api_key=DEMO_API_KEY, rate_limit=DEMO_RATE_LIMIT
    )


class _Reply(Exception):
    """An error reply, raised anywhere under a handler: HTTP 200 unless said otherwise [doc]."""

    def __init__(self, message: str, *, status: str = "error", http: int = 200) -> None:
        super().__init__(message)
        self.http = http
        self.body: dict[str, object] = {"status": status, "message": message}
        if status == "false":  # [doc] the token API's form
            self.body["data"] = None


class OzonetelSimulator(ServedSimulator):
    """The two Ozonetel endpoints the exporter calls, on a loopback port, serving `workload`."""

    def __init__(
        self,
        workload: Workload,
        clock: Clock,
        *,
        user_name: str = DEMO_USER_NAME,
        api_key: str = DEMO_API_KEY,
        agents: Iterable[str] | None = None,
        campaigns: Iterable[str] | None = None,
        rate_limit: int = 50,
        auth: Literal["token", "basic"] = "token",
        methods: Sequence[str] = ("POST", "GET"),
        refuse_method_with: Literal[401, 405] = 405,
        no_calls: NoCalls = "no data found",
        token_lifetime: float = 3600.0,
        tokens_per_hour: int = 10,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        """`agents` (AgentIDs) and `campaigns` (names) that exist, default all of the workload's; `methods`
        the AHT endpoint accepts (the others get a bare `refuse_method_with`, before any other check);
        `no_calls` how a target without calls is answered; `monotonic` the rate limiter's clock (default
        the running event loop's)."""
        if rate_limit < 1 or token_lifetime <= 0 or tokens_per_hour < 1:
            raise ValueError("rate_limit, token_lifetime and tokens_per_hour must be positive")
        self._workload = workload
        self._clock = clock
        self._account = (user_name, api_key)
        self._rate_limit = rate_limit
        self._auth = auth
        self._methods = frozenset(m.upper() for m in methods)
        self._refuse_method_with = refuse_method_with
        self._no_calls = no_calls
        self._token_lifetime = token_lifetime
        self._tokens_per_hour = tokens_per_hour
        self._monotonic = monotonic or (lambda: asyncio.get_running_loop().time())
        all_agents = {agent_id(i): (a, name) for i, (a, name) in enumerate(workload.agents)}
        self._agents = {k: all_agents[k] for k in agents if k in all_agents} if agents is not None else all_agents
        all_campaigns = {name: (str(FIRST_CAMPAIGN_ID + i), queue) for i, (queue, name) in enumerate(workload.queues)}
        wanted = all_campaigns if campaigns is None else {c: all_campaigns[c] for c in campaigns if c in all_campaigns}
        self._campaigns = wanted
        self._campaign_names = {cid: name for name, (cid, _) in wanted.items()}
        self.faults = FaultInjector(FORMS)
        self.requests: Counter[str] = Counter()  # by path
        self.requests_by_method: Counter[tuple[str, str]] = Counter()  # by (method, path)
        # monotonic, every request received (the newest 100,000: a demo runs for days)
        self.request_times: deque[float] = deque(maxlen=100_000)
        self.over_limit = 0  # requests received beyond the limit (answered `max limit exceeded`)
        self.tokens_issued = 0
        self._admitted: deque[float] = deque()  # monotonic times of admitted requests, last minute
        self._issued: deque[float] = deque()  # clock times of tokens issued, last hour
        self._token: tuple[str, float] | None = None  # the one valid token and its expiry (clock)

    @property
    def agent_ids(self) -> list[str]:
        return list(self._agents)

    @property
    def campaign_names(self) -> list[str]:
        return list(self._campaigns)

    def campaign_id(self, name: str) -> str:
        return self._campaigns[name][0]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", AHT_PATH, self._aht)
        router.add_route("*", TOKEN_PATH, self._generate_token)

    def expire_tokens(self) -> None:
        """Invalidate the current token, as if it had expired."""
        self._token = None

    # --- ground truth ----------------------------------------------------------------------------------

    def truth_agent(self, agent: str, as_of: float | None = None) -> int | None:
        """The AHT in seconds the simulator reports for an AgentID now (or at `as_of`); None: no call."""
        workload_id = self._agents[agent][0]
        return self._aht_seconds(lambda c: c.agent_id == workload_id, as_of)

    def truth_campaign(self, name: str, as_of: float | None = None) -> int | None:
        queue_id = self._campaigns[name][1]
        return self._aht_seconds(lambda c: c.queue_id == queue_id, as_of)

    def truth(self, labels: Labels, as_of: float | None = None) -> int | None:
        """The same, by the exported label set: (agent, media_type) or (media_type, queue=CampaignID)."""
        values = dict(labels)
        if "agent" in values:
            return self.truth_agent(values["agent"], as_of)
        return self.truth_campaign(self._campaign_names[values["queue"]], as_of)

    def _aht_seconds(self, matches: Callable[[Contact], bool], as_of: float | None) -> int | None:
        now = self._clock.now() if as_of is None else as_of
        total_ms = calls = 0
        for c in self._workload.contacts(now - WINDOW_SECONDS, now, now):
            if c.media_type == "voice" and not c.abandoned and matches(c):
                total_ms += c.handle_ms
                calls += 1
        if not calls:
            return None
        return (total_ms + calls * 500) // (calls * 1000)  # whole seconds, half up, in integers

    # --- HTTP ------------------------------------------------------------------------------------------

    @web.middleware  # without it, aiohttp takes this for an old-style (app, handler) factory
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        self.requests_by_method[request.method, request.path] += 1
        now = self._monotonic()
        self.request_times.append(now)
        try:
            self._admit(now)
            return await handler(request)
        except _Reply as reply:
            return web.json_response(reply.body, status=reply.http)

    def _admit(self, now: float) -> None:
        """[doc] 50 requests a minute (token calls count too: sim): beyond, `max limit exceeded`."""
        while self._admitted and self._admitted[0] <= now - RATE_WINDOW:
            self._admitted.popleft()
        if len(self._admitted) >= self._rate_limit:
            self.over_limit += 1
            raise _Reply("max limit exceeded")
        self._admitted.append(now)

    async def _generate_token(self, request: web.Request) -> web.Response:
        """[doc] POST, header apiKey, body {"userName"} -> {"token", "message": ""}; errors status "false"."""
        if request.method != "POST":
            raise _Reply("Method Not Allowed", http=405)
        body = await _json_object(request, status="false")
        user = body.get("userName")
        if not isinstance(user, str) or not user.strip():
            raise _Reply("UserName is null", status="false")
        if (user, request.headers.get("apiKey", "")) != self._account:
            raise _Reply("Invalid userName or apiKey", status="false")
        if self._auth != "token":
            raise _Reply("API Authentication is not set to TOKEN_AUTH", status="false")  # sim
        now = self._clock.now()
        while self._issued and self._issued[0] <= now - TOKENS_WINDOW:
            self._issued.popleft()
        if len(self._issued) >= self._tokens_per_hour:
            raise _Reply("Token generation limit exceeded", status="false")  # sim
        token = secrets.token_urlsafe(32)
        self._token = (token, now + self._token_lifetime)  # [doc] the newest invalidates the older ones
        self._issued.append(now)
        self.tokens_issued += 1
        return web.json_response({"token": token, "message": ""})

    async def _aht(self, request: web.Request) -> web.Response:
        if request.method not in self._methods:
            if self._refuse_method_with == 401:  # [unverified] as a CloudAgent route was seen to: no body
                return web.Response(status=401)
            raise _Reply("Method Not Allowed", http=405)
        if not request.headers.get("apiKey", "").strip():
            raise _Reply("apiKey should not be empty")
        body = await _json_object(request)
        user = body.get("userName")
        if not isinstance(user, str) or not user.strip():
            raise _Reply("userName should not be empty")
        if self._auth == "token":
            self._check_token(request)
        if (user, request.headers["apiKey"]) != self._account:
            raise _Reply("userName or apiKey is Invalid")
        agent, campaign = _text(body.get("agentId")), _text(body.get("campaignName"))
        if agent and campaign:
            raise _Reply("Both agentId and campaignName cannot be passed at a time")
        # [doc] reference/post_ca-apis-aht: {"status": "success", "message": {"AgentID", "AgentName", "AHT"}}
        # or {"CampaignID", "CampaignName", "AHT"}; `message` as an object [unverified: the page prints it flat].
        if agent:
            if agent not in self._agents:
                raise _Reply("agentId is Invalid")
            seconds = self.truth_agent(agent)
            found = {"AgentID": agent, "AgentName": self._agents[agent][1], "AHT": self._aht_text(seconds)}
        elif campaign:
            if campaign not in self._campaigns:
                raise _Reply("campaignName is Invalid")
            seconds = self.truth_campaign(campaign)
            cid = self._campaigns[campaign][0]
            found = {"CampaignID": cid, "CampaignName": campaign, "AHT": self._aht_text(seconds)}
        else:
            raise _Reply("Both agentId and campaignName cannot be empty")
        if seconds is None and self._no_calls == "no data found":
            raise _Reply(NO_DATA_FOUND)  # [sibling API's doc] reference/post_ca-reports-summaryreport-2, HTTP 200
        return web.json_response({"status": "success", "message": found})

    def _aht_text(self, seconds: int | None) -> str | None:
        return _hms(seconds) if seconds is not None else _NO_CALL_AHT.get(self._no_calls)

    def _check_token(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Reply("Authorization token is missing", status="false", http=401)  # sim
        current = self._token
        if current is None or token.strip() != current[0] or self._clock.now() >= current[1]:
            raise _Reply("Token Expired", status="false")  # [doc] the token page's reply


async def _json_object(request: web.Request, *, status: str = "error") -> Mapping[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _Reply("Invalid JSON body", status=status, http=400) from None  # sim
    if not isinstance(body, dict):
        raise _Reply("Invalid JSON body", status=status, http=400)  # sim
    return body


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _hms(seconds: int) -> str:
    """[doc] "HH:MM:SS"; hours keep counting past 24."""
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
