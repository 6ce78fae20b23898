"""Ozonetel CloudAgent: the vendor's own AHT of outbound calls over the last two hours, per agent and campaign.

Vendor facts, with their sources and how sure we are of each: docs/providers/ozonetel.md. In short:
- [doc] `https://{domain}/ca_apis/aht` with a JSON body `{"userName", "agentId"}` or `{"userName",
  "campaignName"}`, one of the two. It answers the average handle time of OUTBOUND calls made over the
  LAST TWO HOURS as `"HH:MM:SS"`: no sum, no count (reference/post_ca-apis-aht).
- [doc] Success: `{"status": "success", "message": {"AgentID", "AgentName", "AHT"}}`, or `CampaignID`,
  `CampaignName`. [unverified] the nesting of `message` (the docs print it flattened): we take an object,
  a one-element list of one, a JSON string of one, or the fields beside `status`.
- [doc] Errors are `{"status": "error", "message": ...}` (the token API says `"status": "false"`),
  possibly with HTTP 200: `status` is checked on every reply, case-insensitively. The texts are the AHT
  page's (docs/providers/ozonetel.md, Response).
- [sibling API's doc] No calls: Ozonetel's sibling report APIs answer `{"status": "error", "message": "No Data
  Found"}` (reference/post_ca-reports-summaryreport-2); like an `AHT` of "00:00:00", "" or null
  ([unverified]), it means no calls in the window: the target's series goes, the poll still succeeds.
- [doc] The method: POST and GET (with the same JSON body) are both documented (reference/post_ca-apis-aht,
  reference/get_ca-apis-aht-1). [unverified] which one a tenant takes: a route was seen refusing the wrong
  one with a 401 or a bare 405. We send `method`; a 401 or 405 makes us try the other with the same token
  before we doubt the token, and the one that worked is kept.
- [doc] 50 requests a minute; over it the reply says `max limit exceeded` (its HTTP status is
  [unverified]). We pace requests evenly (aht_exporter.pacing) so that we never cause it.
- [doc] Token: `POST /ca_apis/CAToken/generateToken`, header `apiKey`, body `{"userName"}` ->
  `{"token": "...", "message": ""}`; errors `{"status": "false", "message": "Invalid userName or apiKey" |
  "UserName is null" | "Token Expired", "data": null}`. A token lives 60 minutes, at most 10 are issued
  per hour, and each new one invalidates the older ones (reference/post_ca-apis-catoken-generatetoken).
  Calls then send `Authorization: Bearer <token>` and `apiKey`.
- [doc] Accounts whose "API Authentication" setting is BASIC_AUTH send only `apiKey` (`auth: basic`,
  reference/post_ca-apis-aht-1).
- [doc] Domains: `in1-ccaas-api.ozonetel.com` (India, the default), `api.ccaas.ozonetel.com` (international).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
from msgspec import UNSET, UnsetType
from pydantic import BeforeValidator, SecretStr
from pydantic import Field as PydanticField

from aht_exporter.clock import Clock
from aht_exporter.config import DurationField, SourceConfig
from aht_exporter.health import Quota, SourceHealth
from aht_exporter.httpclient import (
    RetryPolicy,
    json_body,
    scrub_credentials,
    step_extensions,
    where,
)
from aht_exporter.model import (
    MAX_SECONDS,
    AverageUpdate,
    Labels,
    Names,
    ProviderError,
    RateLimited,
    figure,
    make_labels,
)
from aht_exporter.net import is_loopback
from aht_exporter.pacing import Pacer
from aht_exporter.providers.base import AverageProvider, ClientNeeds, DataAge
from aht_exporter.timebuckets import Duration, poll_budget

log = logging.getLogger(__name__)
Publish = Callable[[AverageUpdate], None]

DEFAULT_BASE_URL = "https://in1-ccaas-api.ozonetel.com"
AHT_PATH = "/ca_apis/aht"
TOKEN_PATH = "/ca_apis/CAToken/generateToken"
WINDOW = Duration.parse("2h")  # [doc] the API's fixed span
MEDIA_TYPE = "voice"  # [doc] outbound calls
DOCUMENTED_RATE_LIMIT = 50  # [doc] requests per minute
TOKEN_REUSE = 55 * 60  # [doc] a token lives 60 minutes: we use one for 55
TOKENS_PER_HOUR = 10  # [doc]
PAUSE_SECONDS = 60.0  # after "slow down": a whole minute, whether Ozonetel counts by calendar minute or rolling
# We stop serving targets this long before the runner cancels the poll (timebuckets.poll_budget), so that
# what this poll got is kept.
SERVE_MARGIN = 5.0


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


NonEmpty = Annotated[str, PydanticField(min_length=1)]
Method = Literal["POST", "GET"]


class OzonetelConfig(SourceConfig):
    # The data is one 2h average: call that the bucket, so --check-config tells the truth about it.
    default_bucket: ClassVar[int] = WINDOW.seconds
    default_refresh: ClassVar[str] = WINDOW.text
    fixed_keys: ClassVar[frozenset[str]] = frozenset({"windows", "refresh", "bucket"})

    provider: Literal["ozonetel"]
    base_url: str = DEFAULT_BASE_URL
    windows: list[DurationField] = PydanticField(default_factory=lambda: [WINDOW])
    bucket: DurationField | None = None  # accepted only to be refused with a clear message
    user_name: NonEmpty
    api_key: SecretStr
    auth: Literal["token", "basic"] = "token"
    agents: list[NonEmpty] = PydanticField(default_factory=list)
    campaigns: list[NonEmpty] = PydanticField(default_factory=list)
    method: Annotated[Method, BeforeValidator(_upper)] = "POST"
    rate_limit: int = PydanticField(default=DOCUMENTED_RATE_LIMIT, ge=1)

    @property
    def api_url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def account(self) -> tuple[str, str]:
        """What Ozonetel counts its budget and its tokens by: sources with the same one share them."""
        return self.api_url, self.user_name

    def problems(self) -> Iterator[tuple[str, str]]:
        for key in sorted(self.fixed_keys):
            if key in self.model_fields_set:
                yield key, "does not apply to ozonetel: its AHT is always over the last 2h (remove this key)"
        yield from super().problems()
        if not self.agents and not self.campaigns:
            yield "agents", "list at least one agent or campaign"
        for key in ("agents", "campaigns"):
            seen: set[str] = set()
            for i, value in enumerate(getattr(self, key)):
                if value in seen:
                    yield f"{key}[{i}]", f"{value!r} is listed twice"
                seen.add(value)


# --- targets and replies (pure) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One agent or campaign to ask the AHT of."""

    kind: Literal["agent", "campaign"]
    key: str  # the agentId or campaignName as configured

    def body(self, user_name: str) -> dict[str, str]:
        return {"userName": user_name, ("agentId" if self.kind == "agent" else "campaignName"): self.key}

    def __str__(self) -> str:
        return f"{self.kind} {self.key!r}"


def target_labels(kind: str, ident: str) -> Labels:
    """An agent's series is (agent, media_type), a campaign's (media_type, queue): two grains, one source."""
    if kind == "agent":
        return make_labels(agent=ident, media_type=MEDIA_TYPE)
    return make_labels(media_type=MEDIA_TYPE, queue=ident)


def targets_of(config: OzonetelConfig) -> list[Target]:
    return [Target("agent", a) for a in config.agents] + [Target("campaign", c) for c in config.campaigns]


@dataclass(frozen=True, slots=True)
class Reading:
    """One target's AHT: `seconds` is None when it made no call (the series is then absent)."""

    labels: Labels
    seconds: float | None
    id: str
    name: str | None


class Problem(Enum):
    RATE_LIMITED = "rate limited"
    TOKEN_EXPIRED = "token expired"  # the vendor's own words: renew the token once
    REFUSED = "refused"  # a 401 or 405 without them: the wrong method, or a token gone bad
    NO_DATA = "no data"  # no calls in the window: the target has no AHT
    INVALID_TARGET = "invalid target"
    CREDENTIALS = "credentials"
    BAD_REQUEST = "bad request"
    UNKNOWN = "unknown"  # an error text we do not know
    MALFORMED = "malformed"  # a reply with a field missing or mistyped


# [doc] the AHT page's texts (docs/providers/ozonetel.md, Response), the token API's
# (reference/post_ca-apis-catoken-generatetoken), and the sibling report APIs' "No Data Found"
# (reference/post_ca-reports-summaryreport-2).
_KNOWN_TEXTS: tuple[tuple[str, Problem], ...] = (
    ("no data found", Problem.NO_DATA),
    ("max limit exceeded", Problem.RATE_LIMITED),
    ("token expired", Problem.TOKEN_EXPIRED),
    ("agentid is invalid", Problem.INVALID_TARGET),
    ("campaignname is invalid", Problem.INVALID_TARGET),
    ("username or apikey is invalid", Problem.CREDENTIALS),
    ("invalid username or apikey", Problem.CREDENTIALS),
    ("username should not be empty", Problem.CREDENTIALS),
    ("apikey should not be empty", Problem.CREDENTIALS),
    ("username is null", Problem.CREDENTIALS),
    ("both agentid and campaignname cannot be passed at a time", Problem.BAD_REQUEST),
    ("both agentid and campaignname cannot be empty", Problem.BAD_REQUEST),
)
_SPACES = re.compile(r"\s+")


def classify(text: str) -> Problem:
    """What an Ozonetel error text means, matched case-insensitively (the docs even break one across lines)."""
    folded = _SPACES.sub(" ", text).lower()
    return next((problem for known, problem in _KNOWN_TEXTS if known in folded), Problem.UNKNOWN)


class ReplyError(ProviderError):
    """An error reply from Ozonetel, with what it means."""

    def __init__(self, message: str, problem: Problem, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.problem = problem


_OK = frozenset({"success", "true"})

# The replies' shapes, checked by msgspec as Genesys' are: a field missing or mistyped fails the reply with its
# JSON path (`$.message.AHT`), and keys we do not read are skipped, whatever they hold. The `message` a success
# carries is nested four ways [unverified] (module docstring): the union below takes an object and a list, the
# code after it a JSON string and the fields beside `status`.


class _Status(msgspec.Struct, gc=False):
    """What every reply says first: whether it is a success (`status` as text, or a JSON boolean)."""

    status: str | bool
    message: Any = UNSET  # an error's text, nested any way: message_text reads it


class _Agent(msgspec.Struct, gc=False, rename={"id": "AgentID", "aht": "AHT", "name": "AgentName"}):
    id: str | int
    aht: str | None  # required, but null means no calls, as "" does
    name: str | None = None


class _Campaign(msgspec.Struct, gc=False, rename={"id": "CampaignID", "aht": "AHT", "name": "CampaignName"}):
    id: str | int
    aht: str | None
    name: str | None = None


_Fields = TypeVar("_Fields", _Agent, _Campaign)


class _Success(msgspec.Struct, Generic[_Fields], gc=False):
    # A list is unwrapped as if its one element were `message` itself: "No Data Found", or even null.
    message: _Fields | list[_Fields | str | None] | str | UnsetType | None = UNSET
    aht: Any = msgspec.field(name="AHT", default=UNSET)  # present when the fields sit beside `status`


# `_Success` for each kind of target, looked up by the kind's fields (`_fields`).
_SUCCESS: dict[type[_Agent | _Campaign], Any] = {_Agent: _Success[_Agent], _Campaign: _Success[_Campaign]}


class _TokenReply(msgspec.Struct, gc=False):
    token: Any = UNSET  # checked by _Token unless the reply is an error
    status: Any = UNSET  # present in an error reply only [doc]
    message: Any = UNSET


class _Token(msgspec.Struct, gc=False):
    token: str


_TOO_DEEP = "nested too deeply to be an Ozonetel reply"
_T = TypeVar("_T")


def _at(text: str, root: str) -> str:
    """A msgspec error with its path put under `root`; an error it gives without a path is at the root."""
    cut = text.rfind("`$")
    if cut < 0:
        return f"{text} - at `{root}`"
    return f"{text[:cut]}`{root}{text[cut + 2 :]}"


def _convert(payload: object, shape: type[_T], what: str) -> _T:
    try:
        return msgspec.convert(payload, shape)
    except msgspec.ValidationError as exc:
        raise ProviderError(f"{what}: {_at(str(exc), '$')}") from None
    except RecursionError:  # msgspec's own depth limit
        raise ProviderError(f"{what}: {_TOO_DEEP} - at `$`") from None


def reply_error(payload: object, what: str) -> ReplyError | None:
    """The error an AHT reply carries, or None for a success. Raises ProviderError for a malformed reply."""
    reply = _convert(payload, _Status, what)
    ok = reply.status if isinstance(reply.status, bool) else reply.status.strip().lower() in _OK
    if ok:
        return None
    text = message_text(None if reply.message is UNSET else reply.message)
    return ReplyError(f"{what}: {text}", classify(text))


def message_text(message: object) -> str:
    """An error reply's `message` as one line. Nested the ways a success's is read (a one-element list, an
    object): its own text, e.g. `{"message": "No Data Found"}` -> `No Data Found`."""
    if isinstance(message, list) and len(message) == 1:
        message = message[0]
    if isinstance(message, dict):
        texts = [v for k, v in message.items() if isinstance(v, str) and (k.lower() == "message" or len(message) == 1)]
        message = texts[0] if texts else message
    if isinstance(message, str) and message.strip():
        return message.strip()
    if message in (None, ""):
        return "(no message)"
    try:
        return json.dumps(message)[:200]
    except (RecursionError, ValueError):  # as deep as the decoder allows, or a NaN: nothing to show
        return "(a message that cannot be shown)"


def parse_token_reply(payload: object, what: str) -> str:
    """`{"token": ...}` -> the token; an error reply raises ReplyError with the vendor's message.

    An error about the reply's shape shows none of its values (msgspec's name types and paths only): a mistyped
    or cut token may still be most of a credential."""
    reply = _convert(payload, _TokenReply, what)
    # A token wins over a `status` beside it; without a token, a `status` makes the reply the vendor's error.
    if reply.status is UNSET or (isinstance(reply.token, str) and reply.token.strip()):
        token = _convert(payload, _Token, what).token.strip()
        if not token:
            raise ProviderError(f"{what}: `token` is empty - at `$.token`")
        return token
    # [doc] errors: {"status": "false", "message": ..., "data": null}
    text = message_text(None if reply.message is UNSET else reply.message)
    raise ReplyError(f"{what}: {text}", classify(text))


# Hours of at most 9 digits: a longer number is no average handle time, and int() of 400 digits then float()
# would overflow (issue 12: a vendor's number must fail its poll, never crash it).
_HMS = re.compile(r"^(\d{1,9}):([0-5]?\d):([0-5]?\d)(?:\.(\d{1,9}))?$")


def parse_hms(value: object) -> float | None:
    """Ozonetel's `"HH:MM:SS"` in seconds (also `H:MM:SS` and hours past 24); empty or null is None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an HH:MM:SS string")
    text = value.strip()
    if not text:
        return None
    m = _HMS.match(text)
    if m is None:
        raise ValueError(f"{figure(value)} is not HH:MM:SS")
    hours, minutes, seconds, fraction = m.groups()
    total = int(hours) * 3600 + int(minutes) * 60 + int(seconds) + (float(f"0.{fraction}") if fraction else 0.0)
    if total > MAX_SECONDS:
        raise ValueError(f"{figure(value)} is above the limit of {MAX_SECONDS:.0e} s")
    return total


def parse_aht_reply(payload: Mapping[str, Any], target: Target, what: str | None = None) -> Reading:
    """A success reply -> the target's reading. Pure; raises ProviderError naming the bad field's JSON path,
    after `what` (the request: `data request to <host> POST /ca_apis/aht for agent 'a1'`)."""
    what = what or f"{AHT_PATH} for {target}"
    fields: _Agent | _Campaign
    if target.kind == "agent":
        fields, at = _fields(payload, _Agent, what)
    else:
        fields, at = _fields(payload, _Campaign, what)
    id_key = "AgentID" if target.kind == "agent" else "CampaignID"
    ident = str(fields.id).strip()
    if not ident:
        raise ProviderError(f"{what}: `{id_key}` is empty - at `{at}.{id_key}`")
    name = fields.name.strip() if fields.name else None
    try:
        seconds = parse_hms(fields.aht)
    except ValueError as exc:
        raise ProviderError(f"{what}: {exc} - at `{at}.AHT`") from None
    # [unverified] whether "no call in two hours" also comes as empty, null or 00:00:00 (besides "No Data
    # Found"). No handled call averages zero seconds, so a zero is "no data" and the series is absent.
    return Reading(target_labels(target.kind, ident), seconds or None, ident, name or None)


def _fields(payload: object, shape: type[_Fields], what: str) -> tuple[_Fields, str]:
    """The reply's fields for one target and their JSON path, wherever `message` puts them."""
    reply: _Success[_Fields] = _convert(payload, _SUCCESS[shape], what)
    message, at = reply.message, "$.message"
    if isinstance(message, list):
        if len(message) != 1:
            raise ProviderError(f"{what}: Expected one object with `AHT`, got {len(message)} - at `{at}`")
        message, at = message[0], "$.message[0]"
    if isinstance(message, shape):
        return message, at
    if message is UNSET or message is None:
        if reply.aht is not UNSET:  # the fields beside `status`, as the docs print them
            return _convert(payload, shape, what), "$"
        if message is UNSET:
            raise ProviderError(f"{what}: Object missing required field `message` - at `$`")
        raise ProviderError(f"{what}: Expected an object with `AHT`, got `null` - at `{at}`")
    assert isinstance(message, str)
    if at == "$.message" and message.strip().startswith("{"):
        fields = _decode_text(message, shape, what)
        if fields is not None:
            return fields, at
    if classify(message) is Problem.NO_DATA:  # said with "status": "success"
        raise ReplyError(f"{what}: {message_text(message)}", Problem.NO_DATA)
    raise ProviderError(f"{what}: Expected an object with `AHT`, got a string - at `{at}`")


def _decode_text(text: str, shape: type[_Fields], what: str) -> _Fields | None:
    """The fields from a `message` that is a JSON string of them, errors named by their path in it; None when
    the text is not JSON. Decoded as the reply around it was (json.loads), so that it reads the same."""
    try:
        fields = json.loads(text)
    except RecursionError:
        raise ProviderError(f"{what}: {_TOO_DEEP} - at `$.message` (in the JSON text it holds)") from None
    except ValueError:
        return None
    try:
        return msgspec.convert(fields, shape)
    except msgspec.ValidationError as exc:
        raise ProviderError(f"{what}: {_at(str(exc), '$.message')} (in the JSON text it holds)") from None


def error_message(body: Mapping[str, Any]) -> str | None:
    """Ozonetel's `message`."""
    return message_text(body["message"]) if "message" in body else None


def rate_limit_sign(response: httpx.Response) -> bool:
    """`max limit exceeded` in a non-2xx reply: the ApiClient counts and retries it like a 429.

    The documented form, with HTTP 200, is handled (counted once, no retry, a pause) by the provider.
    """
    return not response.is_success and "max limit exceeded" in response.text.lower()


def requests_per_poll(config: OzonetelConfig) -> int:
    """AHT requests one poll can send at `rate_limit`, keeping one slot for a token call."""
    serving = max(0.0, poll_budget(config.every.seconds) - SERVE_MARGIN)
    return max(1, Pacer(config.rate_limit).requests_within(serving) - (1 if config.auth == "token" else 0))


@dataclass
class _Round:
    """What one poll got."""

    averages: dict[Labels, float | None] = field(default_factory=dict)
    removed: set[Labels] = field(default_factory=set)
    read: int = 0  # success replies read, with a value or none
    served: list[Target] = field(default_factory=list)  # asked, whatever the answer
    skipped: list[str] = field(default_factory=list)  # errors we do not know, one per target
    quiet: list[Target] = field(default_factory=list)  # "No Data Found": no calls in the window
    limited: ProviderError | None = None  # the "slow down" that ended the round


# --- the token --------------------------------------------------------------------------------------------


Generate = Callable[[], Awaitable[str]]


class Tokens:
    """The account's one token: cached 55 minutes, renewed once on `Token Expired`, one renewal at a time,
    and never more than 10 generated in any rolling hour ([doc] Ozonetel's own cap).

    Every source of one account shares it (`OzonetelProvider.tokens`): each new token invalidates the older ones
    [doc], so two sources with a token each would invalidate each other's until the hourly cap ran out.
    Each caller passes its own `generate`, so that the token request is counted on its own source.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._token: str | None = None
        self._issued_at = -math.inf
        self.issued: deque[float] = deque()  # clock times of the generations in the last hour
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and self._clock.now() - self._issued_at < TOKEN_REUSE

    async def get(self, generate: Generate) -> str:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():  # another task may have renewed it while we waited
                    await self._renew(generate)
        assert self._token is not None
        return self._token

    async def renew(self, stale: str, generate: Generate) -> str:
        """A new token, unless another task already replaced `stale`."""
        async with self._lock:
            if self._token in (stale, None):
                await self._renew(generate)
        assert self._token is not None
        return self._token

    async def _renew(self, generate: Generate) -> None:
        now = self._clock.now()
        while self.issued and self.issued[0] <= now - 3600:
            self.issued.popleft()
        if len(self.issued) >= TOKENS_PER_HOUR:
            wait = math.ceil(self.issued[0] + 3600 - now)
            raise ProviderError(
                f"no new token: {TOKENS_PER_HOUR} were generated in the last hour, the most Ozonetel allows "
                f"(the next is allowed in {wait}s)"
            )
        self._token = None
        token = await generate()
        self.issued.append(self._clock.now())
        self._token, self._issued_at = token, self._clock.now()


# --- the provider -----------------------------------------------------------------------------------------


class OzonetelProvider(AverageProvider[OzonetelConfig]):
    name = "ozonetel"
    config_model = OzonetelConfig
    data_age = DataAge(bucket=300, delay=0)  # no buckets: data ends when the poll ran (every 5m), no delay

    def __init__(self, config: OzonetelConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        self.targets = targets_of(config)
        self._method: Method = config.method  # the one in use: `method`, or the other once only it worked
        self._wrong_method: Method | None = None  # refused while the other took the same token: not tried again
        self._last_ok: tuple[Method, str | None] | None = None  # the method and token of the last answer
        self._polls = itertools.count()
        self._poll = -1
        self._renewed_in = -1  # the poll that last renewed the token for a refusal: one a poll at most
        self._learned: dict[Target, Reading] = {}  # each target's last good reply
        self._order: dict[Target, int] = {}  # when each target was last served (a sequence number)
        self._sequence = itertools.count()
        self._invalid: set[Target] = set()
        self._agent_names: dict[str, str] = {}
        self._campaign_names: dict[str, str] = {}
        self._warn_about_budget()

    def client_needs(self) -> ClientNeeds:
        return ClientNeeds(
            error_message=error_message,
            rate_limit_sign=rate_limit_sign,
            # [doc] over 50 a minute Ozonetel says "max limit exceeded": retrying within the minute only
            # spends more of it. The whole account pauses instead (fetch_averages).
            policy=RetryPolicy(retry_rate_limited=False),
            # Every request, retries and token calls included, waits for its slot in the account's budget.
            pacer=self.pacer,
        )

    @cached_property
    def pacer(self) -> Pacer:
        """The account's pacer: sources of one account share it (and the first one's rate_limit)."""
        return self.accounts.pacer(("ozonetel", *self.config.account), self.config.rate_limit)

    @cached_property
    def tokens(self) -> Tokens | None:
        """The account's token, shared by its sources; None with `auth: basic`."""
        if self.config.auth != "token":
            return None
        return self.accounts.shared(("ozonetel tokens", *self.config.account), lambda: Tokens(self.clock))

    @classmethod
    def check_sources(cls, sources: Sequence[OzonetelConfig]) -> None:
        """Sources of one account share its budget: warn when, together, they ask more than it allows."""
        accounts: dict[tuple[str, str], list[OzonetelConfig]] = {}
        for source in sources:
            accounts.setdefault(source.account, []).append(source)
        for shared in accounts.values():
            if len(shared) < 2:
                continue  # one source's own budget is checked when it starts
            # Requests a minute the sources would need to serve every target on every poll.
            wanted = sum(len(targets_of(s)) * 60 / s.every.seconds for s in shared)
            allowed = shared[0].rate_limit  # the account's pacer takes the first source's
            if wanted > allowed:
                log.warning(
                    "the sources of one account ask more than its rate_limit allows together: "
                    "their targets are refreshed less often than every poll",
                    extra={
                        "sources": ",".join(s.name for s in shared),
                        "requests_per_minute": round(wanted, 1),
                        "rate_limit": allowed,
                    },
                )

    def _warn_about_budget(self) -> None:
        cfg = self.config
        extra = {"source": cfg.name, "rate_limit": cfg.rate_limit}
        # A simulator on loopback (the demo's) may allow more; Ozonetel itself does not.
        if cfg.rate_limit > DOCUMENTED_RATE_LIMIT and not is_loopback(urlsplit(cfg.api_url).hostname or ""):
            log.warning(f"rate_limit is above the {DOCUMENTED_RATE_LIMIT}/min Ozonetel documents", extra=extra)
        per_poll = requests_per_poll(cfg)
        if len(self.targets) > per_poll:
            polls = math.ceil(len(self.targets) / per_poll)
            log.warning(
                "more targets than one poll can serve at rate_limit: they are refreshed round-robin, oldest first",
                extra={
                    **extra,
                    "targets": len(self.targets),
                    "per_poll": per_poll,
                    "every": str(cfg.every),
                    "refreshed_every": str(Duration.of(polls * cfg.every.seconds)),
                },
            )

    async def fetch(self, start: int, end: int) -> AverageUpdate:
        """The vendor's span is fixed (the last 2 hours): what the runner asks is served by `fetch_averages`."""
        return await self.fetch_averages(self.publish)

    async def fetch_averages(self, publish: Publish | None = None) -> AverageUpdate:
        """Serve the targets, never served first then the least recently served, until done, told to
        slow down, or out of poll time; the others wait for the next poll and keep their values.

        The poll succeeds when any target was refreshed or dropped, or when every target answered had no
        calls ("No Data Found", as on any quiet night). A 'slow down' costs the targets left;
        an unknown error text or a malformed reply about one target costs that target (the poll fails,
        naming it, only when no target was refreshed); an error about the account, the token, the
        request, or no usable answer at all (timeouts, 5xx, not JSON) fails the poll at once. Each answer
        is handed to `publish` as it arrives: those already published stay, being the vendor's own.
        """
        queue = sorted(self.targets, key=lambda t: self._order.get(t, -1))
        self._poll = next(self._polls)
        got = _Round()
        deadline = asyncio.get_running_loop().time() + max(1.0, poll_budget(self.config.every.seconds) - SERVE_MARGIN)
        try:
            async with asyncio.timeout_at(deadline):
                await self._serve(queue, got, publish or (lambda _: None))
        except TimeoutError:
            pass  # out of poll time: the rest waits
        for target in got.served:
            self._order[target] = next(self._sequence)
        if got.limited is not None:
            self.pacer.pause(PAUSE_SECONDS)
        # Nothing refreshed: say why, and fail. "No Data Found" alone is a quiet night, unless other targets
        # failed: then it does not vouch for the replies with data (a schema change must not look quiet).
        if not got.read and not got.removed and (got.skipped or not got.quiet):
            if got.limited is not None:
                raise RateLimited(f"{got.limited} (paused for {PAUSE_SECONDS:.0f}s)", status=got.limited.status)
            if got.skipped:
                more = f" (and {len(got.skipped) - 1} more)" if len(got.skipped) > 1 else ""
                raise ProviderError(got.skipped[0] + more)
            raise ProviderError(f"no target could be served within the poll ({len(queue)} waiting)")
        self._log_partial(got, len(queue))
        return AverageUpdate(got.averages, frozenset(got.removed))

    async def _serve(self, queue: list[Target], got: _Round, publish: Publish) -> None:
        """Ask each target in turn; each answer is published as it comes, not when the round ends."""
        for target in queue:
            try:
                reading = await self._read(target)
            except RateLimited as exc:
                got.limited = exc
                return
            except ReplyError as exc:
                if exc.problem is Problem.NO_DATA:
                    got.quiet.append(target)
                    if (labels := self._no_calls(target)) is not None:
                        got.averages[labels] = None
                        publish(AverageUpdate({labels: None}))
                elif exc.problem is Problem.INVALID_TARGET:
                    labels = self._drop(target, exc)
                    got.removed.add(labels)
                    publish(AverageUpdate({}, frozenset({labels})))
                elif exc.problem in (Problem.UNKNOWN, Problem.MALFORMED):
                    log.debug("target not refreshed", extra={"source": self.config.name, "error": str(exc)})
                    got.skipped.append(str(exc))
                else:
                    raise
            else:
                got.averages[reading.labels] = reading.seconds
                got.read += 1
                self._learn(target, reading)
                publish(AverageUpdate({reading.labels: reading.seconds}))
            got.served.append(target)

    def _log_partial(self, got: _Round, waiting: int) -> None:
        """One line for what a successful poll left out (the runner logs the poll itself)."""
        extra = {"source": self.config.name, "served": len(got.served), "targets": waiting}
        if got.limited is not None:
            log.warning(f"rate limited: paused for {PAUSE_SECONDS:.0f}s, the other targets wait", extra=extra)
        if got.skipped:
            log.warning("targets not refreshed", extra={**extra, "failed": len(got.skipped), "error": got.skipped[0]})
        if got.limited is None and len(got.served) < waiting:
            log.debug("poll time used up: the other targets wait for the next poll", extra=extra)

    def _learn(self, target: Target, reading: Reading) -> None:
        self._valid(target)
        self._learned[target] = reading
        if reading.name:
            self._names_of(target)[reading.id] = reading.name

    def _no_calls(self, target: Target) -> Labels | None:
        """ "No Data Found": the target's series, if it has one, goes; it comes back with its next call."""
        self._valid(target)
        reading = self._learned.get(target)  # its names stay: they are still its names
        return None if reading is None else reading.labels

    def _valid(self, target: Target) -> None:
        if target in self._invalid:
            self._invalid.discard(target)
            log.info("target is valid again", extra={"source": self.config.name, "target": str(target)})

    def _drop(self, target: Target, exc: ReplyError) -> Labels:
        """Forget an invalid target: its series, if it had one, is removed. Warn once until it is valid again."""
        if target not in self._invalid:
            self._invalid.add(target)
            log.warning(
                "invalid target: its series is dropped",
                extra={"source": self.config.name, "target": str(target), "error": str(exc)},
            )
        reading = self._learned.pop(target, None)
        if reading is None:
            return target_labels(target.kind, target.key)
        self._names_of(target).pop(reading.id, None)
        return reading.labels

    def _names_of(self, target: Target) -> dict[str, str]:
        return self._agent_names if target.kind == "agent" else self._campaign_names

    names_every = 0.0  # names come with the data: no request of their own

    async def names(self) -> Names:
        # Learned from the AHT replies: no request of its own.
        return Names(queues=dict(self._campaign_names), agents=dict(self._agent_names))

    # --- requests ---------------------------------------------------------------------------------------

    async def _read(self, target: Target) -> Reading:
        """Ask one target's AHT. A refusal is met, in this order, by the other method with the same token,
        then by one new token (at most one a poll, and only when the vendor says `Token Expired` or the
        token had been answered before), then by one line saying what the refusals point at."""
        tokens = self.tokens
        token = await tokens.get(self._generate_token) if tokens else None
        refused: dict[Method, ReplyError] = {}
        payload = await self._ask_either(target, token, refused)
        renewed = False
        if payload is None and tokens is not None and token is not None and self._may_renew(token, refused):
            self._renewed_in = self._poll
            token, renewed, refused = await tokens.renew(token, self._generate_token), True, {}
            payload = await self._ask_either(target, token, refused)
        if payload is None:
            raise self._refusal(target, refused, renewed)
        try:
            return parse_aht_reply(payload, target, self._data_request(self._method, target))
        except ReplyError:
            raise  # "No Data Found" said with "status": "success"
        except ProviderError as exc:
            raise ReplyError(str(exc), Problem.MALFORMED) from None

    async def _ask_either(
        self, target: Target, token: str | None, refused: dict[Method, ReplyError]
    ) -> dict[str, Any] | None:
        """The reply to the method in use or, when that one is refused in a way that may be the method's,
        to the other one with the same token. None when refused (each refusal is put in `refused`)."""
        method = self._method
        while True:
            try:
                payload = await self._ask(target, token, method)
            except ReplyError as exc:
                if exc.problem not in (Problem.REFUSED, Problem.TOKEN_EXPIRED):
                    raise
                refused[method] = exc
                method = _other(method)
                if method in refused or not self._may_try(method, exc, token):
                    return None
            else:
                self._answered(method, token, refused)
                return payload

    def _may_try(self, method: Method, refusal: ReplyError, token: str | None) -> bool:
        """Whether `method` is worth a try after the other one was refused with `token`: not after the
        vendor's own `Token Expired`, nor for a method refused before while this one worked, nor after a 401
        to a method that was answered with this very token (then the token went bad, not the method)."""
        answered_before = self._last_ok == (_other(method), token)
        return (
            refusal.problem is Problem.REFUSED
            and method != self._wrong_method
            and not (refusal.status == 401 and answered_before)
        )

    def _answered(self, method: Method, token: str | None, refused: Mapping[Method, ReplyError]) -> None:
        if method != self._method:
            log.warning(
                f"{self._method} {AHT_PATH} is refused and {method} is answered with the same token: "
                f"using {method} from now on (set `method: {method}` to skip the refused one)",
                extra={"source": self.config.name, "error": str(refused[self._method])},
            )
            self._wrong_method, self._method = self._method, method
        self._last_ok = (method, token)

    def _may_renew(self, token: str, refused: Mapping[Method, ReplyError]) -> bool:
        """A new token only when the old one may have gone bad: the vendor says `Token Expired`, or a 401
        came for a token that was answered before. One a poll at most: each new token also cancels the
        account's other clients' tokens, and Ozonetel issues 10 an hour [doc]."""
        if self._renewed_in == self._poll:
            return False
        answered = self._last_ok is not None and self._last_ok[1] == token
        return any(e.problem is Problem.TOKEN_EXPIRED or (e.status == 401 and answered) for e in refused.values())

    def _refusal(self, target: Target, refused: Mapping[Method, ReplyError], renewed: bool) -> ProviderError:
        """One line for a request that every method it may use refused, naming what the evidence points at."""
        errors = list(refused.values())
        status = errors[-1].status
        expired = [e for e in errors if e.problem is Problem.TOKEN_EXPIRED]
        if expired and renewed:  # the vendor's own words about a token it issued a moment ago
            return ProviderError(
                f"{expired[-1]} even with a token generated just now (does another client use this account? "
                "each new token invalidates the older ones)",
                status=status,
            )
        methods = " and ".join(refused)
        if all(e.status == 405 for e in errors):
            why = f"not allowed: is base_url ({self.config.api_url}) the account's API domain?"
        elif self.tokens is None:
            why = (
                'refused with the apiKey alone: is the account\'s "API Authentication" BASIC_AUTH, as '
                "`auth: basic` says? (for TOKEN_AUTH, set `auth: token`)"
            )
        elif not renewed and self._renewed_in == self._poll:
            why = "refused the token, already renewed once in this poll: the next poll tries again"
        else:
            issued = "generated just now" if renewed else "Ozonetel issued and never accepted"
            why = (
                f'refused a token {issued}, so not an expired token: is the account\'s "API Authentication" '
                "TOKEN_AUTH, as `auth: token` says? (for BASIC_AUTH, set `auth: basic`)"
            )
        at = f"data request to {httpx.URL(self.config.api_url).netloc.decode('ascii', 'replace')}"
        said = "; ".join(str(e).removeprefix(f"{at} ") for e in errors)  # each said by the same host
        return ProviderError(f"{at} {AHT_PATH} for {target}: {methods} {why} ({said})", status=status)

    def _data_request(self, method: Method, target: Target) -> str:
        """`data request to <host> POST /ca_apis/aht for agent 'a1'`: what an error about a reply starts with."""
        request = httpx.Request(method, self.config.api_url + AHT_PATH, extensions=step_extensions("data", "aht"))
        return f"{where(request)} for {target}"

    async def _ask(self, target: Target, token: str | None, method: Method) -> dict[str, Any]:
        what = self._data_request(method, target)
        headers = {"apiKey": self.config.api_key.get_secret_value()}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = self.config.api_url + AHT_PATH
        try:
            # [doc] GET takes the same JSON body as POST (reference/get_ca-apis-aht-1).
            response = await self.client.request(
                method, url, endpoint="aht", json=target.body(self.config.user_name), headers=headers
            )
        except RateLimited:
            raise  # 429 or a non-2xx "max limit exceeded": the ApiClient counted it, not retried
        except ProviderError as exc:
            raise _typed(exc) from None
        payload = json_body(response, what)
        try:
            problem = reply_error(payload, what)
        except ProviderError as exc:
            raise ReplyError(str(exc), Problem.MALFORMED) from None
        if problem is not None:
            raise self._counted(_scrubbed(problem, response), "aht")
        assert isinstance(payload, dict)
        return payload

    async def _generate_token(self) -> str:
        url = self.config.api_url + TOKEN_PATH
        what = where(httpx.Request("POST", url, extensions=step_extensions("token", "token")))
        try:
            response = await self.client.request(
                "POST",
                url,
                endpoint="token",
                step="token",
                json={"userName": self.config.user_name},
                headers={"apiKey": self.config.api_key.get_secret_value()},
                token_endpoint=True,
            )
        except RateLimited:
            raise
        except ProviderError as exc:
            raise _typed(exc) from None
        try:
            # No snippet of a reply that is not JSON: one cut short holds most of a token (issue 12).
            token = parse_token_reply(json_body(response, what, snippet=False), what)
        except ReplyError as exc:
            raise self._counted(_scrubbed(exc, response), "token") from None
        self.client.runtime_secrets.add(token)  # masked wherever it is echoed, from now on
        self.health.count_token_issued()
        return token

    def _counted(self, error: ReplyError, endpoint: str) -> ProviderError:
        """A 2xx error reply; `max limit exceeded` is counted here, once (the ApiClient saw a success), and
        says the endpoint's budget is spent, as a 429 would."""
        if error.problem is Problem.RATE_LIMITED:
            self.health.count_rate_limited()
            self.health.record_quota(endpoint, Quota(remaining=0.0))
            return RateLimited(str(error))
        return error


def _scrubbed(error: ReplyError, response: httpx.Response) -> ReplyError:
    """A 2xx error reply's text without the credentials its request carried: Ozonetel's `message` may
    echo the token or the apiKey it refused, and the ApiClient scrubs only non-2xx replies."""
    return ReplyError(scrub_credentials(str(error), response.request), error.problem, status=error.status)


def _other(method: Method) -> Method:
    return "GET" if method == "POST" else "POST"


def _typed(exc: ProviderError) -> ProviderError:
    """A non-2xx reply the ApiClient gave up on, as a ReplyError when its text (or a 401 or 405) says what it means.

    A 401 or 405 without the vendor's words is only "refused": the wrong method as much as a bad token.
    """
    problem = classify(str(exc))
    if problem is Problem.UNKNOWN and exc.status in (401, 405):
        problem = Problem.REFUSED
    if problem is Problem.UNKNOWN:
        return exc
    return ReplyError(str(exc), problem, status=exc.status)
