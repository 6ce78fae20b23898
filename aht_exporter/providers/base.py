"""The provider seam: what a vendor module declares and implements. No Prometheus, no scheduling in here.

A provider is a config model plus a small object that

- declares what its HTTP client needs (`ClientNeeds`: auth, the vendor's error words, its "slow down"
  sign and budget headers, the retry policy, the account's pacer); the base builds the one client;
- turns a span of time into one result: `BucketProvider` returns the buckets of the span (sums and
  counts, the common case), `AverageProvider` the vendor's own averages over its fixed span (Ozonetel);
- declares how old its data is when healthy (`DataAge`), which the shipped alert rules derive from.

The result kind also names the store that keeps it (`store.Store`), so the scheduler never asks which
kind it holds. docs/adding-a-provider.md walks through a new vendor.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import SourceConfig
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import (
    ApiClient,
    ErrorText,
    QuotaReader,
    RateLimitSign,
    RetryPolicy,
    Sleep,
    vendor_error_text,
)
from aht_exporter.model import AverageUpdate, Bucket, Field, Names
from aht_exporter.pacing import Accounts, Pacer
from aht_exporter.store import AverageStore, SourceStore, Store

C = TypeVar("C", bound=SourceConfig)
R = TypeVar("R")

# Vendor words from a JSON error body (a dict), or None when the body holds none: the client then shows
# the body's start. One line, cut to length, whatever the vendor sent (httpclient.vendor_error_text).
ErrorMessage = Callable[[Mapping[str, Any]], "str | None"]


def _no_words(body: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class ClientNeeds:
    """What a provider's one HTTP client needs; `Provider.client` builds it (httpclient.ApiClient).

    `pacer`: every request (retries, token calls and 401 re-sends included) waits its turn there first,
    then `sign` (if any) signs it: a signature minted before a minute's wait would be a minute old.
    An error's text is the vendor's words that `error_message` finds in a JSON body (or, where they are not
    all in the body, what `error_text` makes of the whole reply), else the body's start.
    """

    error_message: ErrorMessage | None = None
    error_text: ErrorText | None = None
    auth: httpx.Auth | None = None
    sign: Callable[[httpx.Request], None] | None = None
    rate_limit_sign: RateLimitSign | None = None
    quota_reader: QuotaReader | None = None
    policy: RetryPolicy | None = None
    pacer: Pacer | None = None


@dataclass(frozen=True)
class DataAge:
    """How old a healthy source's newest data is, by default: the alert rules' DataStale threshold is two
    buckets plus the delay (grafana/aht_mixin/rules.py), one whole bucket of margin. `bucket`: the default
    bucket, or for a provider without buckets, the default poll interval (its data ends at the poll)."""

    bucket: int
    delay: int

    @property
    def stale_after(self) -> int:
        return 2 * self.bucket + self.delay


class Provider(ABC, Generic[C, R]):
    """One source's vendor API. Generic over its config model `C` and its result `R`."""

    name: ClassVar[str]
    config_model: ClassVar[type[SourceConfig]]
    data_age: ClassVar[DataAge]
    # How often names() is worth calling. Hourly where it costs requests (docs/providers/genesys.md, Request); providers
    # that learn names from the data itself return them every poll (0).
    names_every: ClassVar[float] = 3600.0
    # How far back from now the vendor's API serves data, in seconds (None: as far as anyone asks). What a
    # backfill may ask for (aht_exporter/backfill.py); docs/providers/<vendor>.md says where it comes from.
    history: ClassVar[int | None] = None

    def __init__(
        self,
        config: C,
        health: SourceHealth,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.clock: Clock = clock or SystemClock()
        # What sources of one vendor account share (a pacer, a token): the exporter hands in its one set.
        self.accounts = accounts if accounts is not None else Accounts()
        self._sleep = sleep
        self._transport = transport
        # A provider that gathers its result piece by piece hands each piece here as it arrives (Ozonetel:
        # one target a request, a paced round taking minutes): the runner stores and shows it at once.
        self.publish: Callable[[R], None] = lambda _: None

    @classmethod
    def check_sources(cls, sources: Sequence[C]) -> None:
        """At start, warn about what shows only across this provider's sources (e.g. a shared budget)."""
        return  # most providers have nothing to say

    @abstractmethod
    def client_needs(self) -> ClientNeeds:
        """What the source's one HTTP client needs; called once, when the client is first used."""

    @cached_property
    def client(self) -> ApiClient:
        """The source's one HTTP client, built from `client_needs()`. Made on first use, after the subclass's
        own `__init__` has set whatever its needs refer to."""
        needs = self.client_needs()
        client = ApiClient(
            counter=self.health,
            timeout=self.config.timeout.total_seconds,
            auth=needs.auth,
            error_text=needs.error_text or partial(vendor_error_text, message=needs.error_message or _no_words),
            rate_limit_sign=needs.rate_limit_sign,
            quota_reader=needs.quota_reader,
            policy=needs.policy,
            sleep=self._sleep,
            transport=self._transport,
            # Here, not in each provider: none can forget the bound (issue 12, an endless reply).
            max_response_bytes=self.config.max_response_bytes,
            pacer=needs.pacer,
            sign=needs.sign,
        )
        # The Unix time a vendor's rate-limit window resets is counted on the source's clock.
        client.wall = self.clock.now
        return client

    @property
    @abstractmethod
    def fields(self) -> frozenset[Field]:
        """The fields this source reports as sums and counts; one absent from a bucket means zero."""

    @abstractmethod
    def new_store(self) -> Store[R]:
        """An empty store for this provider's results."""

    @abstractmethod
    async def fetch(self, start: int, end: int) -> R:
        """The result for the span [start, end) the store asked for; raise ProviderError on failure."""

    async def names(self) -> Names:
        """Display names of queues and agents; called at most hourly, and its failure never fails a poll."""
        return Names()

    async def aclose(self) -> None:
        # Made here if it never was: a closed provider's client is closed, whoever looks at it later.
        await self.client.aclose()


class BucketProvider(Provider[C, list[Bucket]]):
    """A vendor that reports sums and counts per time bucket: every provider but Ozonetel."""

    def new_store(self) -> SourceStore:
        cfg = self.config
        return SourceStore(
            bucket=cfg.bucket_seconds,
            windows=cfg.windows,
            fields=self.fields,
            every=cfg.every.seconds,
            delay=cfg.delay.seconds,
            refresh=cfg.refresh_seconds,
        )

    @abstractmethod
    async def fetch(self, start: int, end: int) -> list[Bucket]:
        """Every bucket with data in [start, end) (both bucket-aligned); raise ProviderError on failure."""


class AverageProvider(Provider[C, AverageUpdate]):
    """A vendor that reports only its own average over a fixed span ending now (Ozonetel): it exports
    `aht_seconds` for that one span, and no sums or counts (`fields` is empty)."""

    @property
    def fields(self) -> frozenset[Field]:
        return frozenset()

    def new_store(self) -> AverageStore:
        return AverageStore(max(self.config.windows))

    @abstractmethod
    async def fetch(self, start: int, end: int) -> AverageUpdate:
        """The averages this poll refreshed, over the vendor's own span ending about `end` (now); raise
        ProviderError when the poll failed as a whole. Parts may be handed to `publish` as they arrive."""


AnyProvider = Provider[Any, Any]
