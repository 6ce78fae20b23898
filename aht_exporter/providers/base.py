"""What every provider is: a vendor API turned into `Bucket` records. No Prometheus in here."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import httpx

from aht_exporter.clock import Clock, SystemClock
from aht_exporter.config import SourceConfig
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient, Sleep
from aht_exporter.model import AverageUpdate, Bucket, Field, Names


class Provider(ABC):
    name: ClassVar[str]
    config_model: ClassVar[type[SourceConfig]]
    # How often names() is worth calling. Hourly where it costs requests (docs/providers/genesys.md, Request); providers
    # that learn names from the data itself return them every poll (0).
    names_every: ClassVar[float] = 3600.0
    # How far back from now the vendor's API serves data, in seconds (None: as far as anyone asks). What a
    # backfill may ask for (aht_exporter/backfill.py); docs/providers/<vendor>.md says where it comes from.
    history: ClassVar[int | None] = None

    def __init__(
        self,
        config: SourceConfig,
        health: SourceHealth,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.clock: Clock = clock or SystemClock()
        self.client = self.make_client(config, health, sleep=sleep, transport=transport)
        # Here, not in each make_client: no provider can forget the bound (issue 12, an endless reply).
        self.client.max_response_bytes = config.max_response_bytes
        # The Unix time a vendor's rate-limit window resets is counted on the source's clock.
        self.client.wall = self.clock.now

    @classmethod
    def check_sources(cls, sources: Sequence[SourceConfig]) -> None:
        """At start, warn about what shows only across this provider's sources (e.g. a shared budget)."""
        return  # most providers have nothing to say

    @abstractmethod
    def make_client(
        self,
        config: SourceConfig,
        health: SourceHealth,
        *,
        sleep: Sleep,
        transport: httpx.AsyncBaseTransport | None,
    ) -> ApiClient:
        """The source's one HTTP client, with the vendor's auth and error format."""

    @property
    @abstractmethod
    def fields(self) -> frozenset[Field]:
        """The fields this source reports; one absent from a bucket means zero."""

    @abstractmethod
    async def fetch(self, start: int, end: int) -> list[Bucket]:
        """Every bucket with data in [start, end) (both bucket-aligned); raise ProviderError on failure."""

    async def names(self) -> Names:
        """Display names of queues and agents; called at most hourly, and its failure never fails a poll."""
        return Names()

    async def aclose(self) -> None:
        await self.client.aclose()


Publish = Callable[[AverageUpdate], None]


class AverageProvider(Provider):
    """A provider that reports only a ready-made average over a fixed span ending now (Ozonetel).

    It exports `aht_seconds` for that one span and no sums or counts: `fields` is empty and
    `fetch` is never called; the runner calls `fetch_averages` instead.
    """

    @property
    def fields(self) -> frozenset[Field]:
        return frozenset()

    async def fetch(self, start: int, end: int) -> list[Bucket]:
        raise NotImplementedError("an AverageProvider reports averages, not buckets")

    @abstractmethod
    async def fetch_averages(self, publish: Publish | None = None) -> AverageUpdate:
        """The averages refreshed by this poll; raise ProviderError when the poll failed as a whole.

        A provider that gathers them one request at a time hands each part to `publish` as it arrives,
        so that the runner can show it before the poll ends (a paced round can take minutes).
        """
