"""LivePerson: the Engagement Activity API (`engactivity`), in seconds, per 5-minute interval.

Vendor facts, with their tags and sources, are in docs/providers/liveperson.md; the Engagement Activity page is
https://developers.liveperson.com/data-operational-realtime-engagement-activity.html ("the page" below).
- [doc] `GET https://{domain}/operations/api/account/{account}/engactivity?timeframe=&v=1&interval=&skillIds=&agentIds=`.
  `timeframe` is minutes back from the vendor's now, at most 1440; `interval` (minutes, at least 5) must
  divide the timeframe, else 400.
- [doc] Events sit in 5-minute buckets; the data starts at the bucket holding `now - timeframe`. An
  interval's `timestamp` is its END, UTC ms. The newest interval is rounded up past now and still filling.
  Intervals are counted back from that rounded-up end, so only `interval=5` gives the UTC-aligned 5-minute
  buckets the store keeps: it is our bucket, and every request asks for it.
- [doc] Blocks by request (the page's examples): no ids -> `metricsTotals`; `skillIds` ->
  `skillsMetricsPerAgent.metricsPerSkill[skill].{metricsPerAgent[agent], metricsTotals}` + `metricsTotals`;
  `agentIds` -> `agentsMetrics.{metricsPerAgent[agent], metricsTotals}`; with `interval`, the same per
  `metricsByIntervals[].metricsData`. Ids are string keys; skills and agents without data are left out.
- [unverified] `-1` as the "no skill" id: the page never mentions it; it is read like any other id.
- [sample] Intervals without data are still listed, with zero totals (the page's interval examples): an
  interval missing from the reply means the timeframe fell short, not that it was empty.
- [sample] With both `skillIds` and `agentIds`, the skills block holds only the requested agents (the page's
  second example); we still filter by both lists ourselves rather than rely on it.
- [doc] `totalHandlingTime`: seconds spent handling the interactive chats; `totalInteractiveChats`: interactive
  chats closed. Non-interactive chats (`totalNonInteractiveChats`, `nonInteractiveTotalHandlingTime`) are
  another workload and are never mixed in; `connectedEngagements` counts both kinds, so it is not exported.
- [doc] The domain comes from the Domain API (CSDS), service `leDataReporting` (and `sentinel` for OAuth 2.0).
- [doc] Over the concurrency limit the API answers 429 with no `Retry-After`; LivePerson's retry policy asks
  for at least 1 s before a retry, which the shared RetryPolicy's first wait (1 s plus up to 1 s of jitter) meets.
- [unverified] Whether engactivity accepts the OAuth 2.0 sentinel token: a refusal (401 after the one refresh,
  or 403) fails the poll saying which `token_version` or `auth` to try next (`refused_token_advice`).
- [unverified] The error body format: `vendor_message` reads the common shapes and falls back to the raw text.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec
from msgspec import UNSET, UnsetType
from pydantic import BeforeValidator, SecretStr
from pydantic import Field as PydanticField

from aht_exporter.config import SourceConfig
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import json_body, not_json, step_extensions, vendor_error_text, where
from aht_exporter.model import MAX_COUNT, MAX_SECONDS, Bucket, Field, Labels, ProviderError, figure, out_of_range
from aht_exporter.net import is_loopback
from aht_exporter.oauth import ClientCredentialsAuth
from aht_exporter.providers.base import BucketProvider, ClientNeeds, DataAge
from aht_exporter.providers.liveperson_auth import (
    DEFAULT_TOKEN_VERSION,
    TOKEN_LIFETIME,
    OAuth1Auth,
    TokenVersion,
    refused_token_advice,
    sentinel_token_request,
)
from aht_exporter.timebuckets import Duration, isoformat_z

log = logging.getLogger(__name__)
_T = TypeVar("_T")

ENGACTIVITY_PATH = "/operations/api/account/{account}/engactivity"
CSDS_PATH = "/api/account/{account}/service/{service}/baseURI.json"
DATA_SERVICE = "leDataReporting"
SENTINEL_SERVICE = "sentinel"
INTERVAL = 5  # minutes: the vendor's bucket, and ours
BUCKET = INTERVAL * 60
MAX_TIMEFRAME = 1440  # minutes [doc]
# One spare interval on top of the span: the vendor counts back from ITS now, which may have moved on
# (clock skew, retries) by the time the request lands. Intervals before the span are dropped.
SPARE = INTERVAL
DOMAIN_TTL = 86400.0  # a domain rarely moves; look it up again daily, or at once after a failed request
MEDIA_TYPE = "chat"
FIELDS = frozenset({Field.HANDLE_TIME, Field.CONTACTS_HANDLED})

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?$")
_ID_RE = re.compile(r"^-?\d+$")  # [doc] skill and agent ids are longs; -1 ("no skill") [unverified] is one too

GroupLabel = Literal["queue", "agent"]
DEFAULT_GROUP_BY: tuple[GroupLabel, ...] = ("queue",)


def _id_filter(value: object) -> object:
    """`all`, or a non-empty list of ids. YAML reads `skills: [12, 15]` as numbers; ids are strings on the wire."""
    if value == "all":
        return value
    if not isinstance(value, list) or not value:
        raise ValueError("must be `all` or a non-empty list of ids")
    ids = []
    for item in value:
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        if text == "all":
            raise ValueError("write `all` on its own, not inside a list")
        if not isinstance(text, str) or not _ID_RE.match(text):
            raise ValueError(f"{item!r} is not a LivePerson id (a whole number, e.g. 12 or -1)")
        ids.append(text)
    return ids


IdFilter = Annotated[Literal["all"] | list[str], BeforeValidator(_id_filter)]
AccountId = Annotated[
    str,
    BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
    PydanticField(pattern=r"^[A-Za-z0-9]+$", max_length=64),
]


class LivePersonConfig(SourceConfig):
    default_refresh: ClassVar[str] = "1h"
    url_keys: ClassVar[tuple[str, ...]] = ("base_url", "csds_url", "sentinel_url")

    provider: Literal["liveperson"]
    account_id: AccountId  # the site id; YAML may read it as a number
    domain: str | None = None
    csds_url: str = "https://api.liveperson.net"
    sentinel_url: str | None = None
    auth: Literal["oauth2", "oauth1"] = "oauth2"
    # Which sentinel token request to make (liveperson_auth.TOKEN_REQUESTS); V2 unless told otherwise.
    token_version: TokenVersion = DEFAULT_TOKEN_VERSION
    client_id: str | None = None
    client_secret: SecretStr | None = None
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    token: SecretStr | None = None
    token_secret: SecretStr | None = None
    skills: IdFilter = "all"
    agents: IdFilter = "all"
    group_by: list[GroupLabel] = PydanticField(default_factory=lambda: list(DEFAULT_GROUP_BY))
    max_window: ClassVar[Duration] = Duration.of(MAX_TIMEFRAME * 60)  # [doc] timeframe: at most 1440 minutes

    def problems(self) -> Iterator[tuple[str, str]]:
        from aht_exporter.config import shown  # quoted short, and without a `user:password@`

        yield from super().problems()
        if self.domain is not None and self.base_url is not None:
            yield "domain", "set either domain or base_url, not both"
        if self.domain is not None and not _HOST_RE.match(self.domain):
            yield "domain", f"{shown(self.domain)} is not a host name (e.g. va.data.liveperson.net, no https://)"
        yield from self._auth_problems()
        if len(set(self.group_by)) != len(self.group_by):
            yield "group_by", "lists a label twice"
        if self.windows:
            longest = max(range(len(self.windows)), key=lambda i: self.windows[i].seconds)
            need = timeframe_needed(self.windows[longest].seconds, self.every.seconds, self.delay.seconds)
            if need > MAX_TIMEFRAME:
                most = (MAX_TIMEFRAME - (need - self.windows[longest].seconds // 60)) * 60
                fits = f"the longest window is {Duration.of(most)}" if most >= BUCKET else "no window fits"
                yield (
                    f"windows[{longest}]",
                    f"{self.windows[longest]} does not fit LivePerson's 1440-minute timeframe, which counts back "
                    f"from now: with every {self.every} and delay {self.delay} {fits}",
                )

    def _auth_problems(self) -> Iterator[tuple[str, str]]:
        oauth2 = ("client_id", "client_secret")
        oauth1 = ("consumer_key", "consumer_secret", "token", "token_secret")
        wanted, unwanted = (oauth2, oauth1) if self.auth == "oauth2" else (oauth1, (*oauth2, "sentinel_url"))
        for key in wanted:
            if getattr(self, key) is None:
                yield key, f"is required with auth: {self.auth}"
        for key in unwanted:
            if getattr(self, key) is not None:
                yield key, f"does not apply to auth: {self.auth}"
        if self.auth == "oauth1" and "token_version" in self.model_fields_set:
            yield "token_version", "does not apply to auth: oauth1"


def timeframe_needed(span: int, every: int, delay: int) -> int:
    """The most minutes a poll can ask for: the span, plus how far `now` may be past the data's end
    (less than `every` + `delay`, rounded up to whole intervals), plus the spare interval."""
    lag = every + math.ceil(delay / BUCKET) * BUCKET
    return (span + lag) // 60 + SPARE


def timeframe_minutes(now: float, start: int) -> int:
    """`timeframe` for a request at `now` whose data must begin at `start` (a bucket boundary)."""
    needed = max(1, math.ceil((now - start) / BUCKET)) * INTERVAL
    if needed > MAX_TIMEFRAME:
        raise ProviderError(
            f"engactivity: data from {isoformat_z(start)} is {needed} minutes back, beyond the "
            f"{MAX_TIMEFRAME}-minute timeframe LivePerson allows"
        )
    return min(needed + SPARE, MAX_TIMEFRAME)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which ids to ask engactivity for, and which block of its reply holds the source's grain."""

    group_by: tuple[str, ...]
    skills: tuple[str, ...] | None = None  # None: all
    agents: tuple[str, ...] | None = None

    @classmethod
    def of(cls, config: LivePersonConfig) -> Selection:
        return cls(
            group_by=tuple(config.group_by),
            skills=None if config.skills == "all" else tuple(config.skills),
            agents=None if config.agents == "all" else tuple(config.agents),
        )

    @property
    def by_skill(self) -> bool:
        """Read the skills block: grouped by skill, or only some skills."""
        return "queue" in self.group_by or self.skills is not None

    @property
    def per_agent(self) -> bool:
        """Read per-agent figures: grouped by agent, or only some agents."""
        return "agent" in self.group_by or self.agents is not None

    def params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.by_skill:
            # The skills block breaks each skill down per agent by itself [doc]: agentIds only to filter.
            params["skillIds"] = ",".join(self.skills) if self.skills else "all"
            if self.agents is not None:
                params["agentIds"] = ",".join(self.agents)
        elif self.per_agent:
            params["agentIds"] = ",".join(self.agents) if self.agents else "all"
        return params

    def labels(self, skill: str | None = None, agent: str | None = None) -> Labels:
        values = {"media_type": MEDIA_TYPE}
        if "queue" in self.group_by and skill is not None:
            values["queue"] = skill
        if "agent" in self.group_by and agent is not None:
            values["agent"] = agent
        return tuple(sorted(values.items()))

    def wants(self, skill: str | None, agent: str | None) -> bool:
        return (skill is None or self.skills is None or skill in self.skills) and (
            agent is None or self.agents is None or agent in self.agents
        )


def query_string(timeframe: int, selection: Selection) -> str:
    params = {"timeframe": str(timeframe), "v": "1", "interval": str(INTERVAL), **selection.params()}
    return urlencode(params, safe=",")  # skillIds=4,15,3 as the vendor writes it [doc]


# --- parsing: pure -----------------------------------------------------------------------------------
#
# The reply is decoded by msgspec from the bytes as received, as Genesys' is: a value of the wrong type or a
# key we need left out fails naming its JSON path (`$.metricsByIntervals[3].timestamp`), and keys we do not
# read are skipped. Below the intervals, each value stays msgspec.Raw (a view of the bytes) until it is read
# and is decoded then, with its path, so that a reply fails only for what the selection reads, as it always
# has: a `metricsData` outside the span (the interval still filling), a block or `metricsTotals` the selection
# does not use, a key of an id-keyed map that is no id (a field LivePerson added) may hold anything. msgspec
# alone would also write `[...]` where our paths name the id.


class _Cell(msgspec.Struct, gc=False):
    """One metrics object: a `metricsPerAgent["<id>"]` or a `metricsTotals` [doc]."""

    # int as well as float: a JSON integer of any size stays one, for out_of_range to judge without converting
    # it (float(10**400) raises OverflowError).
    totalHandlingTime: int | float
    totalInteractiveChats: int | float
    # [doc] the figures we do not export, of any type: one other than 0 says the cell is not empty (see `_add`).
    # A figure LivePerson may add later is skipped, and so does not.
    totalNonInteractiveChats: Any = 0
    nonInteractiveTotalHandlingTime: Any = 0
    connectedEngagements: Any = 0


class _Block(msgspec.Struct, gc=False):
    """`skillsMetricsPerAgent` (with `metricsPerSkill`), `agentsMetrics` or one skill's entry in `metricsPerSkill`
    (both with `metricsPerAgent`) [doc]: an id-keyed map, and the block's `metricsTotals`."""

    metricsPerSkill: msgspec.Raw | UnsetType = UNSET
    metricsPerAgent: msgspec.Raw | UnsetType = UNSET
    metricsTotals: msgspec.Raw | UnsetType = UNSET


class _Data(msgspec.Struct, gc=False):
    """An interval's `metricsData`, or a reply without intervals (the whole timeframe): its blocks [doc]."""

    skillsMetricsPerAgent: msgspec.Raw | UnsetType = UNSET
    agentsMetrics: msgspec.Raw | UnsetType = UNSET
    metricsTotals: msgspec.Raw | UnsetType = UNSET


class _Interval(msgspec.Struct, gc=False):
    timestamp: int | float  # [doc] its END, UTC ms; a float only if it is a whole number
    metricsData: msgspec.Raw | UnsetType = UNSET


class _Reply(msgspec.Struct, gc=False):
    metricsByIntervals: list[_Interval] | UnsetType | None = UNSET
    # An error body, in the shapes vendor_message reads [unverified]: vendor text of any type.
    error: Any = UNSET
    message: Any = UNSET
    error_description: Any = UNSET
    description: Any = UNSET
    internalCode: Any = UNSET  # the vendor's spelling
    code: Any = UNSET


_REPLY = msgspec.json.Decoder(_Reply)
_DATA = msgspec.json.Decoder(_Data)
_BLOCK = msgspec.json.Decoder(_Block)
_MAP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_CELL = msgspec.json.Decoder(_Cell)
_ERROR_KEYS = ("error", "message", "error_description", "description", "internalCode", "code")
_TOO_DEEP = "nested too deeply to be an engactivity reply"


def parse_engactivity(raw: bytes, selection: Selection, start: int, end: int, *, status: int = 200) -> list[Bucket]:
    """engactivity JSON as received (with `metricsByIntervals`) -> one bucket per label set and closed 5-minute
    interval in [start, end). The in-progress interval (the newest, which must end after `end`) and those before
    `start` are dropped. Pure; raises ProviderError naming the JSON path of the first bad field. `status`: the
    reply's HTTP status, for the error a body that is not JSON gets."""
    try:
        reply = _REPLY.decode(raw)
    except msgspec.ValidationError as exc:  # before DecodeError, its base class
        raise ProviderError(f"engactivity response: {_at(str(exc), '$')}") from None
    except msgspec.DecodeError:
        raise not_json(raw, status, "engactivity") from None
    except RecursionError:  # msgspec's own depth limit, in a value kept as Any or Raw, or one it skips
        raise ProviderError(f"engactivity response: {_TOO_DEEP}") from None
    intervals = reply.metricsByIntervals
    if intervals is UNSET or intervals is None:
        vendor = vendor_message({key: value for key in _ERROR_KEYS if (value := getattr(reply, key)) is not UNSET})
        if vendor:  # an error inside a 200: never mistake it for "no data"
            raise ProviderError(f"engactivity response: the vendor answered 200 with an error: {vendor}")
        state = "null" if intervals is None else "missing"
        raise ProviderError(f"engactivity response: $.metricsByIntervals is {state}")
    seen: set[int] = set()
    buckets: list[Bucket] = []
    for i, interval in enumerate(intervals):
        path = f"$.metricsByIntervals[{i}].timestamp"
        stamp = interval.timestamp
        if isinstance(stamp, float):
            if not stamp.is_integer():
                raise ProviderError(f"engactivity response: {path} {figure(stamp)} is not a whole number (UTC ms)")
            stamp = int(stamp)
        if not 0 <= stamp <= _LAST_STAMP:  # beyond what a date can show, and so what an error line can
            raise ProviderError(f"engactivity response: {path} {figure(stamp)} is not a time (UTC ms)")
        if stamp % (BUCKET * 1000):
            raise ProviderError(f"engactivity response: {path} {stamp} is not on a 5-minute boundary")
        if stamp in seen:
            raise ProviderError(f"engactivity response: {path} {stamp} appears twice")
        seen.add(stamp)
        bucket_end = stamp // 1000
        if bucket_end > end or bucket_end - BUCKET < start:
            continue  # still filling, or outside the span asked for: its metricsData is never read
        path = f"$.metricsByIntervals[{i}].metricsData"
        if interval.metricsData is UNSET:
            raise ProviderError(f"engactivity response: {path} is missing")
        for labels, values in read_metrics(interval.metricsData, selection, path).items():
            buckets.append(Bucket(start=bucket_end - BUCKET, end=bucket_end, labels=labels, values=values))
    newest = max(seen, default=None)
    if newest is not None and newest // 1000 <= end:
        # [doc] the newest interval is always the one still filling. Ending inside our span, it is a bucket
        # we would export as closed: the vendor's clock is behind ours by more than `delay`.
        raise ProviderError(
            f"engactivity response: the newest interval, still filling, ends at {isoformat_z(newest // 1000)}, "
            f"inside the span asked for (up to {isoformat_z(end)}): the vendor's clock is behind ours; "
            "a longer `delay` avoids this"
        )
    for bucket_end in range(start + BUCKET, end + 1, BUCKET):
        if bucket_end * 1000 not in seen:
            raise ProviderError(
                f"engactivity response: no interval ends at {isoformat_z(bucket_end)}, inside the span asked for "
                "(the vendor's clock may be ahead of ours)"
            )
    return buckets


def read_metrics(raw: bytes | msgspec.Raw, selection: Selection, path: str = "$") -> dict[Labels, dict[str, float]]:
    """One `metricsData` (or a whole-timeframe reply), found at JSON path `path` -> values per label set at
    the selection's grain. Only the blocks the selection needs are read.

    A cell whose every figure is zero is left out, as the vendor leaves out skills and agents without data.
    """
    data = _decode(_DATA, raw, path)
    out: dict[Labels, dict[str, float]] = {}
    if selection.by_skill:
        path = f"{path}.skillsMetricsPerAgent"
        skills = _read(_BLOCK, data.skillsMetricsPerAgent, path)
        if not selection.group_by and not selection.per_agent:
            _add(out, selection.labels(), skills.metricsTotals, f"{path}.metricsTotals")
            return out
        for skill, entry in _ids(skills.metricsPerSkill, f"{path}.metricsPerSkill").items():
            if not selection.wants(skill, None):
                continue
            spath = f'{path}.metricsPerSkill["{skill}"]'
            cell = _read(_BLOCK, entry, spath)
            if not selection.per_agent:
                _add(out, selection.labels(skill), cell.metricsTotals, f"{spath}.metricsTotals")
                continue
            for agent, metrics in _ids(cell.metricsPerAgent, f"{spath}.metricsPerAgent").items():
                if selection.wants(skill, agent):
                    _add(out, selection.labels(skill, agent), metrics, f'{spath}.metricsPerAgent["{agent}"]')
    elif selection.per_agent:
        path = f"{path}.agentsMetrics"
        agents = _read(_BLOCK, data.agentsMetrics, path)
        if "agent" not in selection.group_by:
            _add(out, selection.labels(), agents.metricsTotals, f"{path}.metricsTotals")
            return out
        for agent, metrics in _ids(agents.metricsPerAgent, f"{path}.metricsPerAgent").items():
            if selection.wants(None, agent):
                _add(out, selection.labels(agent=agent), metrics, f'{path}.metricsPerAgent["{agent}"]')
    else:
        _add(out, selection.labels(), data.metricsTotals, f"{path}.metricsTotals")
    return out


_LAST_STAMP = 253402300799999  # 9999-12-31T23:59:59.999Z in ms: the last instant a date can show


def _add(out: dict[Labels, dict[str, float]], labels: Labels, raw: msgspec.Raw | UnsetType, path: str) -> None:
    cell = _read(_CELL, raw, path)
    # [doc] totalHandlingTime in seconds and totalInteractiveChats, our two fields, each within its bound (model.py).
    handle = _figure(cell.totalHandlingTime, MAX_SECONDS, "s", path, "totalHandlingTime")
    chats = _figure(cell.totalInteractiveChats, MAX_COUNT, "contacts", path, "totalInteractiveChats")
    if not handle and not chats and not _other_figures(cell):
        return  # nothing happened here
    totals = out.setdefault(labels, {})
    totals[Field.HANDLE_TIME] = totals.get(Field.HANDLE_TIME, 0.0) + handle
    totals[Field.CONTACTS_HANDLED] = totals.get(Field.CONTACTS_HANDLED, 0.0) + chats


def _figure(value: int | float, limit: float, unit: str, path: str, name: str) -> float:
    """A figure as a float, or a ProviderError if it cannot be one. JSON holds no NaN or infinity, and msgspec
    refuses a number no double holds, so the one comparison is the common case's whole check."""
    if 0 <= value <= limit:
        return float(value)
    problem = out_of_range(value, limit, unit) or "is not a figure"  # negative or absurd: a vendor's bug
    raise ProviderError(f"engactivity response: {path}.{name}: {figure(value)} {problem}")


def _other_figures(cell: _Cell) -> bool:
    """Whether a figure we do not export is a number other than 0."""
    others = (cell.totalNonInteractiveChats, cell.nonInteractiveTotalHandlingTime, cell.connectedEngagements)
    return any(isinstance(v, int | float) and not isinstance(v, bool) and v for v in others)


def _decode(decoder: msgspec.json.Decoder[_T], raw: bytes | msgspec.Raw, path: str) -> _T:
    """`raw`, found at JSON path `path` in the reply, as the decoder's type, or a ProviderError naming the path."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:  # before DecodeError, its base class
        raise ProviderError(f"engactivity response: {_at(str(exc), path)}") from None
    except msgspec.DecodeError:  # only for bytes a caller passed: a Raw is a part of JSON already decoded
        raise ProviderError(f"engactivity response: {path} is not JSON") from None
    except RecursionError:
        raise ProviderError(f"engactivity response: {path} is {_TOO_DEEP}") from None


def _at(message: str, path: str) -> str:
    """msgspec's error for a value decoded on its own, with its path in the reply: msgspec counts from that
    value (`- at `$.metricsPerAgent``), or says no path at all when the value itself is wrong."""
    head, found, tail = message.rpartition(" - at `$")
    return f"{head} - at `{path}{tail}" if found else f"{message} - at `{path}`"


def _read(decoder: msgspec.json.Decoder[_T], raw: msgspec.Raw | UnsetType, path: str) -> _T:
    """A value the selection reads, found at JSON path `path`, or a ProviderError naming it."""
    if raw is UNSET:
        raise ProviderError(f"engactivity response: {path} is missing")
    return _decode(decoder, raw, path)


def _ids(raw: msgspec.Raw | UnsetType, path: str) -> dict[str, msgspec.Raw]:
    """An id-keyed map; `{}` when there is no data [doc]. A key that is not an id (ids are longs [doc])
    cannot be a skill or an agent: it is a field LivePerson added, and is left alone."""
    return {key: entry for key, entry in _read(_MAP, raw, path).items() if _WIRE_ID.fullmatch(key)}


# An id as the reply writes it: a long [doc], so at most 19 ASCII digits; "12\n" or "١٢" is no id.
_WIRE_ID = re.compile(r"-?[0-9]{1,19}")


def vendor_message(body: Mapping[str, Any]) -> str | None:
    """The vendor's own words from an error body, in the shapes LivePerson's APIs use [unverified]."""
    error = body.get("error")
    if isinstance(error, dict):
        body = error
        error = body.get("error")
    message = body.get("message") or body.get("error_description") or body.get("description")
    code = body.get("internalCode") or body.get("code") or (error if isinstance(error, str) else None)
    parts = [str(p) for p in (code, message) if p not in (None, "")]
    return ": ".join(parts) if parts else None


# --- the provider: I/O ---------------------------------------------------------------------------------


class LivePersonProvider(BucketProvider[LivePersonConfig]):
    name = "liveperson"
    config_model = LivePersonConfig
    data_age = DataAge(bucket=300, delay=60)  # 5-minute buckets, the default delay
    history = MAX_TIMEFRAME * 60  # `timeframe` counts back from now, 1440 minutes at most (providers/liveperson.md)

    def __init__(self, config: LivePersonConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        self.selection = Selection.of(config)
        self._domains: dict[str, tuple[str, float]] = {}  # service -> (base URL, looked up again after)
        self._lookup_lock = asyncio.Lock()

    def client_needs(self) -> ClientNeeds:
        cfg = self.config
        auth: httpx.Auth
        if cfg.auth == "oauth1":
            assert cfg.consumer_key and cfg.consumer_secret and cfg.token and cfg.token_secret  # the model's check
            auth = OAuth1Auth(cfg.consumer_key, cfg.consumer_secret, cfg.token, cfg.token_secret)
        else:
            # Each token counted (aht_exporter_tokens_issued_total): a refusing engactivity shows as one a poll.
            auth = ClientCredentialsAuth(
                self._token_request,
                error_text=partial(vendor_error_text, message=vendor_message),
                default_lifetime=TOKEN_LIFETIME,
                on_token=self.health.count_token_issued,
            )
        return ClientNeeds(error_message=vendor_message, auth=auth)

    def _token_request(self) -> httpx.Request:
        cfg = self.config
        sentinel = cfg.sentinel_url or self._cached(SENTINEL_SERVICE)
        if sentinel is None or cfg.client_id is None or cfg.client_secret is None:
            raise ProviderError("sentinel token: the sentinel domain is not known yet")  # fetch resolves it first
        return sentinel_token_request(sentinel, cfg.account_id, cfg.client_id, cfg.client_secret, cfg.token_version)

    @property
    def fields(self) -> frozenset[Field]:
        return FIELDS

    async def fetch(self, start: int, end: int) -> list[Bucket]:
        cfg = self.config
        api = await self._api_url()
        if cfg.auth == "oauth2" and cfg.sentinel_url is None:
            await self._lookup(SENTINEL_SERVICE)
        timeframe = timeframe_minutes(self.clock.now(), start)
        url = f"{api}{ENGACTIVITY_PATH.format(account=cfg.account_id)}?{query_string(timeframe, self.selection)}"
        try:
            response = await self.client.request("GET", url, endpoint="engactivity")
        except ProviderError as exc:
            if exc.status in (None, 404) and self._domains:
                self._domains.clear()  # maybe the account moved: look the domains up again next poll
            if cfg.auth == "oauth2" and self._refused_by_engactivity(exc, url):
                # Sentinel issued the token (its own refusals name the token step), the auth flow has already
                # fetched a new one once on a 401, and engactivity still says no: no token will do.
                raise ProviderError(f"{exc}: {refused_token_advice(cfg.token_version)}", status=exc.status) from None
            raise
        at = where(response.request)
        try:
            # In a worker thread, as Genesys does: a big account's reply is a second of CPU that would keep the
            # event loop (and every scrape) waiting. It touches nothing shared.
            return await asyncio.to_thread(
                parse_engactivity, response.content, self.selection, start, end, status=response.status_code
            )
        except ProviderError as exc:  # the reply's fault: say which request's, and which host answered it
            raise ProviderError(f"{at}: {exc}", status=exc.status) from None

    @staticmethod
    def _refused_by_engactivity(exc: ProviderError, url: str) -> bool:
        """A 401 or 403 answered by engactivity itself, not by sentinel to a token request made on its way."""
        asked = where(httpx.Request("GET", url, extensions=step_extensions("data", "engactivity")))
        return exc.status in (401, 403) and str(exc).startswith(f"{asked}: HTTP {exc.status}: ")

    async def _api_url(self) -> str:
        cfg = self.config
        if cfg.base_url is not None:
            return cfg.base_url.rstrip("/")
        if cfg.domain is not None:
            return f"https://{cfg.domain}"
        return await self._lookup(DATA_SERVICE)

    def _cached(self, service: str) -> str | None:
        entry = self._domains.get(service)
        return entry[0] if entry is not None and self.clock.now() < entry[1] else None

    async def _lookup(self, service: str) -> str:
        """[doc] `GET {csds}/api/account/{account}/service/{service}/baseURI.json?version=1.0` -> `baseURI`.

        Counted as the `domain` endpoint, in the step it serves: the token's for sentinel, else the data's.
        """
        async with self._lookup_lock:
            cached = self._cached(service)
            if cached is not None:
                return cached
            csds = self.config.csds_url.rstrip("/")
            what = f"domain lookup ({service})"
            try:
                response = await self.client.request(
                    "GET",
                    csds + CSDS_PATH.format(account=self.config.account_id, service=service),
                    endpoint="domain",
                    step="token" if service == SENTINEL_SERVICE else "data",
                    params={"version": "1.0"},
                    auth=None,  # the Domain API is public; the sentinel token may not even exist yet
                )
            except ProviderError as exc:
                raise type(exc)(f"{what}: {exc}", status=exc.status) from None
            what = f"{what}: {where(response.request)}"
            try:
                host = msgspec.convert(json_body(response, what), _Domain).baseURI
            except (msgspec.ValidationError, RecursionError) as exc:
                raise ProviderError(f"{what}: not a domain reply: {exc}") from None
            if not _HOST_RE.match(host):
                raise ProviderError(f"{what}: baseURI is not a host name")
            url = f"{_scheme_for(host, csds)}://{host}"
            self._domains[service] = (url, self.clock.now() + DOMAIN_TTL)
            log.debug("domain looked up", extra={"source": self.config.name, "service": service, "host": host})
            return url


class _Domain(msgspec.Struct, gc=False):
    """[doc] The Domain API's reply: `{"service": ..., "account": ..., "baseURI": "va.data.liveperson.net"}`."""

    baseURI: str  # the vendor's spelling


def _scheme_for(host: str, csds_url: str) -> str:
    """https, always, for a real domain. A loopback host (a simulator) takes the Domain API's own scheme."""
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return urlsplit(csds_url).scheme if is_loopback(hostname) else "https"
