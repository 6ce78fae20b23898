"""Amazon Connect's wire format: GetMetricDataV2, sums in seconds and counts of contacts, per 15- or 30-minute interval.

Vendor facts (docs/providers/amazon-connect.md, with sources and tags). The API's contract ships machine-readable:
botocore's service model, botocore/data/connect/2017-08-08/service-2.json.gz ([model] below).
- `POST /metrics/data` (rest-json, SigV4 signing name `connect`) with ResourceArn (the instance ARN), StartTime
  and EndTime (Unix seconds), Interval {TimeZone, IntervalPeriod}, Filters (QUEUE, AGENT... : one is required;
  at most 100 values over all keys), Groupings (at most 4), Metrics; NextToken paging, MaxResults 1..100 [model].
- FIFTEEN_MIN and THIRTY_MIN spans must be shorter than 3 days; data goes back 3 months [model].
- SUM_HANDLE_TIME, SUM_INTERACTION_TIME, SUM_AFTER_CONTACT_WORK_TIME are in seconds, CONTACTS_* are counts
  [model]; the model says "Count" for SUM_HOLD_TIME, which the admin guide calls customer hold *time*: read as
  seconds (amazon-connect.md, Discrepancies). A Value is null when it "cannot be calculated" [model]: 0 here.
- ListQueues `GET /queues-summary/{InstanceId}`, ListUsers `GET /users-summary/{InstanceId}`: NextToken
  paging, maxResults 1..1000 [model]. GetMetricDataV2 "does not support agent queues" [model]: STANDARD only.
- Errors: JSON `{"message"}` or `{"Message"}`, the code in the `x-amzn-ErrorType` header (botocore's
  RestJSONParser reads both); throttling is a 429 (ThrottlingException [model], TooManyRequestsException).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import msgspec
from msgspec import UNSET, UnsetType

from aht_exporter.httpclient import not_json
from aht_exporter.model import MAX_COUNT, MAX_SECONDS, MISSING_LABEL, Bucket, Field, ProviderError, figure, out_of_range
from aht_exporter.timebuckets import chunks

METRIC_DATA_PATH = "/metrics/data"
LIST_PATHS = {"queues": "/queues-summary/{}", "users": "/users-summary/{}"}
SIGNING_NAME = "connect"  # [model] metadata.signingName
MAX_FILTER_VALUES = 100  # [model] "up to 100 filter values across all filter keys"
MAX_RESULTS = 100  # [model] MaxResult100
MAX_LIST_RESULTS = 1000  # [model] MaxResult1000
MAX_SPAN = 3 * 86400  # [model] FIFTEEN_MIN, THIRTY_MIN: "must be less than 3 days"
MAX_HISTORY = 89 * 86400  # [model] "the past 3 months": the shortest three months there are
MAX_PAGES = 10_000  # a hard bound on every paging loop: 10^6 results, far beyond a poll's span
INTERVALS = {900: "FIFTEEN_MIN", 1800: "THIRTY_MIN"}
DIMENSIONS = {"media_type": "CHANNEL", "queue": "QUEUE", "agent": "AGENT"}
# (metric, our field, its unit as the model's documentation of `Metrics` states it). Checked against the model
# by tests/unit/test_amazon_connect_contract.py; SUM_HOLD_TIME's "Count" is the model's erratum, read as seconds.
METRICS: tuple[tuple[str, Field, str], ...] = (
    ("SUM_HANDLE_TIME", Field.HANDLE_TIME, "Seconds"),
    ("CONTACTS_HANDLED", Field.CONTACTS_HANDLED, "Count"),
    ("SUM_INTERACTION_TIME", Field.TALK_TIME, "Seconds"),
    ("SUM_HOLD_TIME", Field.HOLD_TIME, "Count"),
    ("SUM_AFTER_CONTACT_WORK_TIME", Field.ACW_TIME, "Seconds"),
    ("CONTACTS_ABANDONED", Field.CONTACTS_ABANDONED, "Count"),
    ("CONTACTS_QUEUED", Field.CONTACTS_OFFERED, "Count"),
)
# Contacts with no agent (abandoned, or still queued): grouped by agent they would form a series without `agent`.
QUEUE_SCOPED = frozenset({"CONTACTS_ABANDONED", "CONTACTS_QUEUED"})
_FIELDS = {name: field for name, field, _ in METRICS}
ARN = re.compile(r"^arn:(aws[a-z-]*):connect:([a-z]{2}(?:-[a-z]+){1,2}-\d):(\d{12}):instance/([0-9a-f-]{36})$")
REGION = r"^[a-z]{2}(-[a-z]+){1,2}-\d$"  # [model] RegionName, its digit made required

GroupLabel = Literal["media_type", "queue", "agent"]
DEFAULT_GROUP_BY: tuple[GroupLabel, ...] = ("media_type", "queue")


def metric_names(group_by: Sequence[str]) -> list[str]:
    return [name for name, _, _ in METRICS if "agent" not in group_by or name not in QUEUE_SCOPED]


def fields_for(group_by: Sequence[str]) -> frozenset[Field]:
    return frozenset(_FIELDS[name] for name in metric_names(group_by))


def query_spans(start: int, end: int, bucket: int) -> list[tuple[int, int]]:
    """[start, end) in spans of whole buckets, each shorter than 3 days [model]."""
    return chunks(start, end, MAX_SPAN - bucket)


def queue_chunks(queues: Sequence[str]) -> list[list[str]]:
    """The queue filter's values, at most 100 a request [model]."""
    return [list(queues[i : i + MAX_FILTER_VALUES]) for i in range(0, len(queues), MAX_FILTER_VALUES)]


def metric_data_body(
    instance_arn: str,
    start: int,
    end: int,
    bucket: int,
    group_by: Sequence[str],
    queues: Sequence[str],
    next_token: str | None = None,
) -> dict[str, Any]:
    """One GetMetricDataV2 request: one span, one chunk of queues, one page. Timestamps are Unix seconds, as
    botocore's rest-json serializer writes them."""
    body: dict[str, Any] = {
        "ResourceArn": instance_arn,
        "StartTime": start,
        "EndTime": end,
        "Interval": {"TimeZone": "UTC", "IntervalPeriod": INTERVALS[bucket]},
        "Filters": [{"FilterKey": "QUEUE", "FilterValues": list(queues)}],
        "Metrics": [{"Name": name} for name in metric_names(group_by)],
        "MaxResults": MAX_RESULTS,
    }
    if group_by:
        body["Groupings"] = [DIMENSIONS[g] for g in group_by]
    if next_token is not None:
        body["NextToken"] = next_token
    return body


def list_request(
    kind: Literal["queues", "users"], instance_id: str, next_token: str | None
) -> tuple[str, list[tuple[str, str]]]:
    """ListQueues (STANDARD queues only) or ListUsers: the path and the query, in the model's wire names."""
    params = [("maxResults", str(MAX_LIST_RESULTS))]
    if kind == "queues":
        params.append(("queueTypes", "STANDARD"))
    if next_token is not None:
        params.append(("nextToken", next_token))
    return LIST_PATHS[kind].format(quote(instance_id, safe="")), params


def resource_id(value: str) -> str:
    """A queue's or agent's id from its id or its ARN (`arn:...:instance/I/queue/Q` -> Q)."""
    return value.rsplit("/", 1)[-1] if value.startswith("arn:") else value


def instance_arn_of_queue(queue_arn: str, instance_id: str) -> str | None:
    """The instance ARN that a queue ARN starts with [doc: Connect's ARN formats], if it is that instance's."""
    head, sep, _ = queue_arn.partition("/queue/")
    return head if sep and ARN.match(head) and head.endswith(f"/{instance_id}") else None


# GetMetricDataV2's reply [model], decoded by msgspec: a missing or mistyped field fails with its path.
class _Metric(msgspec.Struct, gc=False):
    Name: str | UnsetType = UNSET  # [model] Name or MetricId


class _Datum(msgspec.Struct, gc=False):
    Metric: _Metric
    Value: float | None = None  # [model] null: "cannot be performed ... insufficient data"


class _Interval(msgspec.Struct, gc=False):
    StartTime: float
    EndTime: float


class _Result(msgspec.Struct, gc=False):
    # [model] a map of strings; Any, so that a dimension we did not group by never fails the reply.
    Dimensions: dict[str, Any] = msgspec.field(default_factory=dict)
    MetricInterval: _Interval | UnsetType = UNSET
    Collections: list[_Datum] = msgspec.field(default_factory=list)


class _Reply(msgspec.Struct, gc=False):
    MetricResults: list[_Result] | UnsetType = UNSET
    NextToken: str | None = None
    message: Any = UNSET  # an error body: {"message"} or {"Message"} (botocore reads both), maybe `__type`
    Message: Any = UNSET
    type: Any = msgspec.field(default=UNSET, name="__type")


_DECODER = msgspec.json.Decoder(_Reply)
# The largest figure, by what our field measures (not the model's unit: see SUM_HOLD_TIME).
_LIMITS = {True: (MAX_SECONDS, "s"), False: (MAX_COUNT, "contacts")}
_MAX_TIME = 1 << 34  # year 2514: a timestamp beyond it is no interval


def parse_metric_data(raw: bytes, group_by: Sequence[str], *, status: int = 200) -> tuple[list[Bucket], str | None]:
    """A GetMetricDataV2 reply as received -> its buckets and the next page's token. Pure; raises ProviderError
    naming the bad field."""
    try:
        reply = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise ProviderError(f"metric data response: {exc}") from None
    except msgspec.DecodeError:
        raise not_json(raw, status, "metric data") from None
    except RecursionError:
        raise ProviderError("metric data response: nested too deeply to be a metric data reply") from None
    if reply.MetricResults is UNSET:
        text = next((str(v)[:300] for v in (reply.message, reply.Message) if v is not UNSET), None)
        if text is not None or reply.type is not UNSET:
            code = "?" if reply.type is UNSET else str(reply.type).rsplit("#", 1)[-1][:100]
            raise ProviderError(
                f"metric data response: the vendor answered {status} with an error: {code}: {text or ''}"
            )
        return [], reply.NextToken or None  # [model] "MetricResult list is empty: the request cannot find any data"
    units = {name: (_LIMITS[field.endswith("_seconds")], field) for name, field, _ in METRICS}
    buckets: list[Bucket] = []
    for i, result in enumerate(reply.MetricResults):
        where = f"MetricResults[{i}]"
        if result.MetricInterval is UNSET:
            raise ProviderError(f"metric data response: {where}.MetricInterval is missing")
        start, end = (
            _time(t, f"{where}.MetricInterval.{k}")
            for k, t in (("StartTime", result.MetricInterval.StartTime), ("EndTime", result.MetricInterval.EndTime))
        )
        if end <= start:
            raise ProviderError(f"metric data response: {where}.MetricInterval ends before it starts")
        values: dict[str, float] = {}
        for j, datum in enumerate(result.Collections):
            unit = units.get(datum.Metric.Name) if isinstance(datum.Metric.Name, str) else None
            if unit is None or datum.Value is None:  # not ours, or null: nothing was counted
                continue
            problem = out_of_range(datum.Value, *unit[0])
            if problem is not None:
                raise ProviderError(
                    f"metric data response: {where}.Collections[{j}].Value: {figure(datum.Value)} {problem}"
                )
            values[unit[1]] = values.get(unit[1], 0.0) + datum.Value
        labels = tuple(sorted((g, _label(g, result.Dimensions.get(DIMENSIONS[g]), where)) for g in group_by))
        buckets.append(Bucket(start=start, end=end, labels=labels, values=values))
    return buckets, reply.NextToken or None


def _time(value: float, where: str) -> int:
    if not 0 <= value < _MAX_TIME or value != int(value):
        raise ProviderError(f"metric data response: {where}: {figure(value)} is not a whole Unix time in seconds")
    return int(value)


def _label(label: str, value: object, where: str) -> str:
    """[model] "Each dimension in the metric response must contain a value": one that does not is MISSING_LABEL."""
    if value is None or value == "":
        return MISSING_LABEL
    if not isinstance(value, str):
        raise ProviderError(f"metric data response: {where}.Dimensions.{DIMENSIONS[label]} is not a string")
    return value.lower() if label == "media_type" else resource_id(value)


def merge(buckets: Sequence[Bucket]) -> list[Bucket]:
    """Buckets of one span fetched in several queue chunks, one per interval and label set: not grouped by
    queue, two chunks each report their part of the same group."""
    merged: dict[tuple[int, int, Any], dict[str, float]] = {}
    for b in buckets:
        values = merged.setdefault((b.start, b.end, b.labels), {})
        for field, value in b.values.items():
            values[field] = values.get(field, 0.0) + value
    return [Bucket(start=s, end=e, labels=labels, values=v) for (s, e, labels), v in merged.items()]


@dataclass(frozen=True, slots=True)
class Summary:
    """One entry of ListQueues (Name) or ListUsers (Username)."""

    id: str
    arn: str
    name: str


class _Entry(msgspec.Struct, gc=False):
    Id: str | None = None
    Arn: str = ""
    Name: str = ""
    Username: str = ""
    QueueType: str = "STANDARD"


class _Page(msgspec.Struct, gc=False):
    QueueSummaryList: list[_Entry] | UnsetType = UNSET
    UserSummaryList: list[_Entry] | UnsetType = UNSET
    NextToken: str | None = None


_PAGE_DECODER = msgspec.json.Decoder(_Page)


def parse_list_page(
    raw: bytes, kind: Literal["queues", "users"], *, status: int = 200
) -> tuple[list[Summary], str | None]:
    """A ListQueues or ListUsers page -> its entries (standard queues only; an entry without an id is skipped)
    and the next page's token. Pure; raises ProviderError naming the bad field."""
    try:
        page = _PAGE_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise ProviderError(f"{kind} response: {exc}") from None
    except msgspec.DecodeError:
        raise not_json(raw, status, f"{kind} list") from None
    except RecursionError:  # msgspec's own depth limit, in a field it skips or keeps as Any
        raise ProviderError(f"{kind} response: nested too deeply to be a {kind} list page") from None
    entries = page.QueueSummaryList if kind == "queues" else page.UserSummaryList
    key = "QueueSummaryList" if kind == "queues" else "UserSummaryList"
    if entries is UNSET:
        raise ProviderError(f"{kind} response: `{key}` is missing")
    return [
        Summary(e.Id, e.Arn, e.Name if kind == "queues" else e.Username)
        for e in entries
        if e.Id and e.QueueType == "STANDARD"
    ], page.NextToken or None
