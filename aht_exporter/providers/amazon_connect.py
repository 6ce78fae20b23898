"""Amazon Connect: GetMetricDataV2 sums and counts per 15- or 30-minute interval, signed with SigV4.

The config and the provider; the wire format (requests, replies, units) is in amazon_connect_api.py, AWS's
signing, credentials and errors in aws.py; the vendor's facts, with sources, in docs/providers/amazon-connect.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field as PydanticField
from pydantic import SecretStr

from aht_exporter.config import DurationField, SourceConfig
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ResendOn401, Step, where
from aht_exporter.model import MAX_NAMES, Bucket, Field, Names, ProviderError
from aht_exporter.providers.amazon_connect_api import (
    ARN,
    DEFAULT_GROUP_BY,
    INTERVALS,
    MAX_HISTORY,
    MAX_PAGES,
    METRIC_DATA_PATH,
    REGION,
    SIGNING_NAME,
    GroupLabel,
    Summary,
    fields_for,
    instance_arn_of_queue,
    list_request,
    merge,
    metric_data_body,
    parse_list_page,
    parse_metric_data,
    query_spans,
    queue_chunks,
    resource_id,
)
from aht_exporter.providers.aws import Signer, canonical_url, error_text, rate_limit_sign
from aht_exporter.providers.base import BucketProvider, ClientNeeds, DataAge
from aht_exporter.timebuckets import Duration

log = logging.getLogger(__name__)


class AmazonConnectConfig(SourceConfig):
    default_bucket: ClassVar[int] = 900
    default_refresh: ClassVar[str] = "2h"

    provider: Literal["amazon_connect"]
    instance_arn: str | None = None
    instance_id: str | None = PydanticField(default=None, pattern=r"^[0-9a-f-]{36}$")
    region: str | None = PydanticField(default=None, pattern=REGION)
    bucket: DurationField = Duration.parse("15m")
    group_by: list[GroupLabel] = PydanticField(default_factory=lambda: list(DEFAULT_GROUP_BY))
    queues: list[str] = PydanticField(default_factory=list, max_length=10_000)  # ids or ARNs; empty: all
    # Without these, botocore's standard chain (environment, `profile` in the shared files, web identity,
    # container and instance roles): docs/providers/amazon-connect.md, Authentication.
    access_key_id: str | None = PydanticField(default=None, min_length=16, max_length=128)
    secret_access_key: SecretStr | None = None
    profile: str | None = PydanticField(default=None, min_length=1, max_length=64)

    @property
    def bucket_seconds(self) -> int:
        return self.bucket.seconds

    @property
    def arn_parts(self) -> tuple[str, str, str | None, str]:
        """(partition, region, account or None, instance id), from the ARN or from instance_id + region."""
        m = ARN.match(self.instance_arn or "")
        if m is not None:
            return m.group(1), m.group(2), m.group(3), m.group(4)
        region = self.region or ""
        return ("aws-cn" if region.startswith("cn-") else "aws"), region, None, self.instance_id or ""

    @property
    def api_url(self) -> str:
        partition, region, _, _ = self.arn_parts
        return (self.base_url or f"https://connect.{region}.amazonaws.com{'.cn' * (partition == 'aws-cn')}").rstrip("/")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.bucket.seconds not in INTERVALS:
            yield "bucket", f"{self.bucket} is not supported (use 15m or 30m: FIFTEEN_MIN or THIRTY_MIN)"
            return
        yield from super().problems()
        if (self.instance_arn is None) == (self.instance_id is None):
            yield "instance_arn", "set either instance_arn, or instance_id + region"
        elif self.instance_arn is not None and ARN.match(self.instance_arn) is None:
            yield "instance_arn", "is not an instance ARN (arn:aws:connect:REGION:ACCOUNT:instance/ID)"
        elif self.instance_arn is not None and self.region not in (None, self.arn_parts[1]):
            yield "region", f"{self.region} is not the region of instance_arn ({self.arn_parts[1]})"
        elif self.instance_id is not None and self.region is None:
            yield "region", "is required with instance_id"
        if (self.access_key_id is None) != (self.secret_access_key is None):
            yield "access_key_id", "set both access_key_id and secret_access_key, or neither (the AWS chain)"
        elif self.access_key_id is not None and self.profile is not None:
            yield "profile", "is for the AWS chain: not with access_key_id"
        if len(set(self.group_by)) != len(self.group_by):
            yield "group_by", "lists a label twice"
        seen: set[str] = set()
        for i, queue in enumerate(self.queues):
            if not 1 <= len(queue) <= 250 or not queue.isprintable():  # [model] ResourceArnOrId
                yield f"queues[{i}]", "is not a queue id or ARN (1 to 250 printable characters)"
            elif resource_id(queue) in seen:
                yield f"queues[{i}]", f"{queue} is listed twice"
            seen.add(resource_id(queue))


class AmazonConnectProvider(BucketProvider[AmazonConnectConfig]):
    name = "amazon_connect"
    config_model = AmazonConnectConfig
    data_age = DataAge(bucket=900, delay=60)  # 15-minute intervals by default, the default delay
    history = MAX_HISTORY  # [model] "data for the past 3 months"

    def __init__(self, config: AmazonConnectConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        _, region, _, instance = config.arn_parts
        self.instance_id = instance
        self._instance_arn = config.instance_arn  # with instance_id + region: learned from ListQueues
        keys = None
        if config.access_key_id is not None and config.secret_access_key is not None:
            keys = (config.access_key_id, config.secret_access_key.get_secret_value())
        self.signer = Signer(SIGNING_NAME, region, keys, config.profile)
        self._queues: list[str] = [resource_id(q) for q in config.queues]
        self._listed_at: float | None = None  # when all queues were last listed (`queues` empty)
        self._names = Names()

    def client_needs(self) -> ClientNeeds:
        # Each request is signed as it leaves (SigV4 covers the time it is sent); AWS's code is in a header.
        # A 401 (temporary credentials expired: ExpiredTokenException) resolves them again and resends once.
        async def refresh() -> None:
            await asyncio.to_thread(self.signer.refresh, again=True)

        return ClientNeeds(
            error_text=error_text, auth=ResendOn401(refresh), sign=self.signer, rate_limit_sign=rate_limit_sign
        )

    @property
    def fields(self) -> frozenset[Field]:
        return fields_for(self.config.group_by)

    async def fetch(self, start: int, end: int) -> list[Bucket]:
        await asyncio.to_thread(self.signer.refresh)
        await self._list_queues_if_due()
        if not self._queues:
            return []  # an instance without a standard queue has no contact to count
        assert self._instance_arn is not None  # _list_queues_if_due learned it
        cfg, buckets = self.config, []
        for s, e in query_spans(start, end, cfg.bucket_seconds):
            for chunk in queue_chunks(self._queues):
                token: str | None = None
                for _ in range(MAX_PAGES):
                    body = metric_data_body(self._instance_arn, s, e, cfg.bucket_seconds, cfg.group_by, chunk, token)
                    response = await self.client.request(
                        "POST", cfg.api_url + METRIC_DATA_PATH, endpoint="metric_data", json=body
                    )
                    try:
                        page, token = parse_metric_data(response.content, cfg.group_by, status=response.status_code)
                    except ProviderError as exc:  # the reply's fault: say which request's, and which host answered
                        raise ProviderError(f"{where(response.request)}: {exc}", status=exc.status) from None
                    buckets.extend(page)
                    if token is None:
                        break
                else:
                    raise ProviderError(f"metric data: more than {MAX_PAGES} pages for one span")
        return merge(buckets)

    async def _list_queues_if_due(self) -> None:
        """Every standard queue of the instance, listed at start and hourly when `queues` is empty; with
        instance_id + region, the instance ARN the metric query needs comes from a queue's ARN."""
        now = self.clock.now()
        due = not self.config.queues and (self._listed_at is None or now - self._listed_at >= self.names_every)
        if not due and self._instance_arn is not None:
            return
        try:
            listed = await self._list("queues", "data")
        except ProviderError as exc:
            if self._listed_at is None or self._instance_arn is None:
                raise  # nothing to query without it: the poll fails
            # An hourly re-listing that fails (ListQueues throttled, say) leaves the last list in use: a queue
            # created since is counted once a listing succeeds (tried again next poll), the others stay whole.
            log.warning(
                "queue listing failed: the queues listed before are used",
                extra={"source": self.config.name, "error": str(exc)},
            )
            return
        self._names = Names(queues={q.id: q.name for q in listed}, agents=self._names.agents)
        if self._instance_arn is None:
            self._instance_arn = next(
                (arn for q in listed if (arn := instance_arn_of_queue(q.arn, self.instance_id))), None
            )
            if self._instance_arn is None:
                raise ProviderError("ListQueues: no queue ARN names the instance (set instance_arn instead)")
        if not self.config.queues:
            self._queues, self._listed_at = [q.id for q in listed], now

    async def _list(self, kind: Literal["queues", "users"], step: Step = "names") -> list[Summary]:
        """ListQueues or ListUsers, page by page, at most MAX_NAMES entries."""
        found: list[Summary] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            path, params = list_request(kind, self.instance_id, token)
            response = await self.client.request(
                "GET", canonical_url(self.config.api_url + path, params), endpoint=kind, step=step
            )
            page, token = parse_list_page(response.content, kind, status=response.status_code)
            found.extend(page)
            if token is None or len(found) >= MAX_NAMES:
                return found[:MAX_NAMES]
        return found

    async def names(self) -> Names:
        """Queue names from ListQueues (with the queues, hourly), agent names from ListUsers; bounded, and
        their failure never fails a poll (the runner's rule)."""
        await asyncio.to_thread(self.signer.refresh)
        if "queue" in self.config.group_by and self.config.queues:
            listed = await self._list("queues")
            self._names = Names(queues={q.id: q.name for q in listed}, agents=self._names.agents)
        if "agent" in self.config.group_by:
            self._names = Names(queues=self._names.queues, agents={u.id: u.name for u in await self._list("users")})
        return self._names
