"""A loopback Amazon Connect: GetMetricDataV2, ListQueues and ListUsers, SigV4-checked, serving a `Workload`.

Where each shape comes from (docs/providers/amazon-connect.md): botocore's service model for `connect`
(botocore/data/connect/2017-08-08/service-2.json.gz): operations, paths, member names, bounds, the 3-day span
of FIFTEEN_MIN and THIRTY_MIN, the 3 months of history, the error shapes and their statuses. Requests are
validated with botocore's own ParamValidator against the operation's input shape, so a body botocore would
refuse is refused here too, as the service would (400). Every request must carry a SigV4 signature for
service `connect` in this simulator's region, made with the demo credentials: it is recomputed with botocore's
signer from what arrived and compared, and anything else answers 403 the way AWS's front door does.

Contacts map to Connect as Connect defines its metrics (admin guide, historical metrics definitions): handle
time = interaction + hold + after-contact work of handled contacts; CONTACTS_QUEUED counts every contact (each
was queued), CONTACTS_ABANDONED the abandoned ones; channels are the workload's media types in upper case,
which must be Connect's channels. A contact counts in the interval its after-contact work ends in (`ended_at`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ParamValidationError
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.validate import ParamValidator

from aht_exporter.clock import Clock
from aht_exporter.model import Labels
from aht_exporter.providers.amazon_connect_api import LIST_PATHS, METRIC_DATA_PATH, SIGNING_NAME
from aht_exporter.simulator import ServedSimulator
from aht_exporter.simulator.faults import FaultInjector, VendorForms
from aht_exporter.simulator.workload import Contact, Totals, Workload

# AWS's documented example credentials (IAM user guide): plainly not real ones.
DEMO_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
DEMO_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DEMO_ACCOUNT = "123456789012"
DEMO_INSTANCE_ID = "11111111-2222-4333-8444-555555555555"
CHANNELS = ("voice", "chat", "task", "email")  # [model] the CHANNEL filter's values, lower-cased
MAX_SKEW = 15 * 60  # [doc] AWS common errors, RequestExpired: "more than 15 minutes after the date stamp"
HISTORY = 93 * 86400  # [model] "Historical metrics are available for 3 months"

FORMS = VendorForms(
    data_paths=(METRIC_DATA_PATH,),
    token_paths=(),  # SigV4 has no token request: an injected 401 is served once (faults.FaultInjector._take)
    essential_field="MetricInterval",  # without it a result has no time: the poll must fail
    numeric_field="Value",
    error_in_200={"message": "Internal server error"},  # what an AWS front end says in a gateway's error page
    unauthorized={"message": "The security token included in the request is expired"},
    rate_limited={"Message": "Rate exceeded"},  # ThrottlingException [model]; its code goes in the header
)
# The error code of a fault's reply, in the header where AWS puts it (the faults know no headers).
_FAULT_CODES = {429: "ThrottlingException", 401: "ExpiredTokenException"}

# Per contact: each metric's value, or None when the contact does not count towards it (integer ms or 1).
_MEASURES: dict[str, Callable[[Contact], int | None]] = {
    "SUM_HANDLE_TIME": lambda c: None if c.abandoned else c.handle_ms,
    "CONTACTS_HANDLED": lambda c: None if c.abandoned else 1,
    "SUM_INTERACTION_TIME": lambda c: None if c.abandoned else c.talk_ms,
    "SUM_HOLD_TIME": lambda c: None if c.abandoned else c.hold_ms,
    "SUM_AFTER_CONTACT_WORK_TIME": lambda c: None if c.abandoned else c.acw_ms,
    "CONTACTS_ABANDONED": lambda c: 1 if c.abandoned else None,
    "CONTACTS_QUEUED": lambda c: 1,
}
_TIMES = frozenset(m for m in _MEASURES if m.startswith("SUM_"))  # ms in the tally, seconds on the wire
_PERIODS = {"FIFTEEN_MIN": 900, "THIRTY_MIN": 1800}
_GROUPS: dict[str, Callable[[Contact], str | None]] = {
    "QUEUE": lambda c: c.queue_id,
    "CHANNEL": lambda c: c.media_type.upper(),
    "AGENT": lambda c: c.agent_id,
}


class _Reply(Exception):
    """An AWS error reply: its status, the `x-amzn-ErrorType` code and the JSON body."""

    def __init__(self, status: int, code: str, message: str, *, key: str = "Message") -> None:
        super().__init__(message)
        self.status, self.code, self.body = status, code, {key: message}


def _invalid(message: str) -> _Reply:
    return _Reply(400, "InvalidRequestException", message)


def _denied(code: str, message: str) -> _Reply:
    """The front door's 403s answer `{"message"}` in lower case (AWS common errors) [unverified: the text]."""
    return _Reply(403, code, message, key="message")


_MODEL: ServiceModel | None = None


def service_model() -> ServiceModel:
    """botocore's model of `connect`, loaded once."""
    global _MODEL
    if _MODEL is None:
        _MODEL = ServiceModel(Loader().load_service_model("connect", "service-2"), "connect")
    return _MODEL


def validate(operation: str, params: Mapping[str, Any]) -> None:
    """Refuse params botocore's validator refuses for `operation`'s input shape: a 400, as the service answers."""
    try:
        report = ParamValidator().validate(params, service_model().operation_model(operation).input_shape)
    except ParamValidationError as exc:  # pragma: no cover - validate() reports, it does not raise
        raise _invalid(str(exc)) from None
    if report.has_errors():
        raise _Reply(400, "InvalidParameterException", report.generate_report().replace("\n", " ")[:1000])


class AmazonConnectSimulator(ServedSimulator):
    """The Amazon Connect endpoints the exporter calls, on a loopback port, serving `workload`."""

    def __init__(
        self,
        workload: Workload,
        clock: Clock,
        *,
        region: str = "us-east-1",
        instance_id: str = DEMO_INSTANCE_ID,
        access_key: str = DEMO_ACCESS_KEY,
        secret_key: str = DEMO_SECRET_KEY,
        session_token: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`clock` decides which contacts are visible; `wall` is what SigV4's 15-minute freshness is judged by
        (signatures are made with the real time, whatever the workload's clock says)."""
        unknown = sorted(set(workload.media_types) - set(CHANNELS))
        if unknown:
            raise ValueError(f"media types {unknown} are no Connect channels (use {', '.join(CHANNELS)})")
        self._workload, self._clock, self._wall = workload, clock, wall
        self.region, self.instance_id = region, instance_id
        self.instance_arn = f"arn:aws:connect:{region}:{DEMO_ACCOUNT}:instance/{instance_id}"
        self._credentials = Credentials(access_key, secret_key, session_token)
        self.requests: Counter[str] = Counter()
        self.denied: Counter[str] = Counter()  # 403s by error code
        self.faults = FaultInjector(FORMS)

    def queue_arn(self, queue_id: str) -> str:
        return f"{self.instance_arn}/queue/{queue_id}"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(METRIC_DATA_PATH, self._metric_data)
        router.add_get(LIST_PATHS["queues"].format("{instance}"), self._queues)
        router.add_get(LIST_PATHS["users"].format("{instance}"), self._users)

    def truth(
        self, start: float, end: float, group_by: Sequence[str], as_of: float | None = None
    ) -> dict[Labels, Totals]:
        return self._workload.truth(start, end, group_by, self._clock.now() if as_of is None else as_of)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        try:
            response = await handler(request)
        except _Reply as reply:
            if reply.status == 403:
                self.denied[reply.code] += 1
            response = web.json_response(reply.body, status=reply.status, headers={"x-amzn-ErrorType": reply.code})
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            # [unverified] API Gateway-fronted AWS APIs answer an unknown path as unsigned: 403 with this text.
            response = web.json_response(
                {"message": "Missing Authentication Token"},
                status=403 if exc.status == 404 else exc.status,
                headers={"x-amzn-ErrorType": "MissingAuthenticationTokenException"},
            )
        if response.status in _FAULT_CODES and "x-amzn-ErrorType" not in response.headers:
            response.headers["x-amzn-ErrorType"] = _FAULT_CODES[response.status]
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        return response

    # --- SigV4 ----------------------------------------------------------------------------------------------

    async def _check_signature(self, request: web.Request) -> bytes:
        """The body of a request whose SigV4 signature botocore's signer reproduces, or a 403 like AWS's."""
        body = await request.read()
        header = request.headers.get("Authorization")
        if header is None:
            raise _denied("MissingAuthenticationTokenException", "Missing Authentication Token")
        fields = dict(
            part.strip().split("=", 1) for part in header.removeprefix("AWS4-HMAC-SHA256 ").split(",") if "=" in part
        )
        scope = fields.get("Credential", "").split("/")
        stamp = request.headers.get("X-Amz-Date", "")
        if (
            not header.startswith("AWS4-HMAC-SHA256 ")
            or len(scope) != 5
            or not {"SignedHeaders", "Signature"} <= set(fields)
        ):
            raise _denied(
                "IncompleteSignatureException",
                f"Authorization header requires Credential, SignedHeaders and Signature: {header[:40]}...",
            )
        try:
            signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise _denied(
                "IncompleteSignatureException", "Authorization header requires existence of a valid X-Amz-Date header"
            ) from None
        if abs(self._wall() - signed_at) > MAX_SKEW:
            raise _denied(
                "InvalidSignatureException",
                f"Signature expired: {stamp} is now more than 15 minutes away from the server's time",
            )
        key, date, region, service, terminator = scope
        if not hmac.compare_digest(key, self._credentials.access_key):
            raise _denied("UnrecognizedClientException", "The security token included in the request is invalid.")
        if (date, region, service, terminator) != (stamp[:8], self.region, SIGNING_NAME, "aws4_request"):
            raise _denied(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region and service: {'/'.join(scope[1:])}",
            )
        names = fields["SignedHeaders"].split(";")
        token = self._credentials.token
        if (
            "host" not in names
            or "x-amz-date" not in names
            or (token is not None and "x-amz-security-token" not in names)
        ):
            raise _denied(
                "InvalidSignatureException", "The request signature must sign host, x-amz-date (and a session token)"
            )
        if token is not None and not hmac.compare_digest(request.headers.get("X-Amz-Security-Token", ""), token):
            raise _denied("UnrecognizedClientException", "The security token included in the request is invalid.")
        if (
            "X-Amz-Content-SHA256" in request.headers
            and request.headers["X-Amz-Content-SHA256"] != hashlib.sha256(body).hexdigest()
        ):
            raise _denied(
                "InvalidSignatureException",
                "The provided x-amz-content-sha256 header does not match what was computed.",
            )
        # What arrived, as the service canonicalises it: the query decoded and re-encoded (botocore's params path).
        headers = {name: request.headers.get(name, "") for name in names if name != "host"}
        headers["host"] = request.host
        aws = AWSRequest(
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.rel_url.raw_path}",
            data=body,
            params=parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True),
            headers=headers,
        )
        aws.context["timestamp"] = stamp
        signer = SigV4Auth(self._credentials, SIGNING_NAME, self.region)
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise _denied(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.",
            )
        return body

    # --- GetMetricDataV2 --------------------------------------------------------------------------------------

    async def _metric_data(self, request: web.Request) -> web.Response:
        raw = await self._check_signature(request)
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Reply(400, "SerializationException", "Start of structure or map found where not expected.") from None
        if not isinstance(body, dict):
            raise _Reply(400, "SerializationException", "Start of list found where not expected.")
        validate("GetMetricDataV2", body)
        if body["ResourceArn"] != self.instance_arn:
            raise _Reply(404, "ResourceNotFoundException", f"Instance not found: {str(body['ResourceArn'])[:120]}")
        start, end, now = body["StartTime"], body["EndTime"], self._clock.now()
        interval = body.get("Interval", {})
        period = _PERIODS.get(interval.get("IntervalPeriod", "TOTAL"))
        if period is None or interval.get("TimeZone", "UTC") != "UTC":
            raise _invalid("this simulator serves IntervalPeriod FIFTEEN_MIN or THIRTY_MIN in TimeZone UTC only")
        if not start < end <= now:
            raise _invalid("StartTime must be before EndTime, and EndTime not later than the current time")
        if end - start >= 3 * 86400:
            raise _invalid(
                "The difference between StartTime and EndTime must be less than 3 days for this IntervalPeriod"
            )
        if start < now - HISTORY or start % period:
            raise _invalid("StartTime must be within the last 3 months and on an interval boundary")
        queues, channels = self._filters(body["Filters"])
        groupings = body.get("Groupings", [])
        metrics = [m.get("Name") for m in body["Metrics"]]
        unknown = [g for g in groupings if g not in _GROUPS] + [m for m in metrics if m not in _MEASURES]
        if unknown:
            raise _invalid(f"this simulator does not serve {unknown}")
        as_of, offset = now, 0
        query = _digest(body)
        if "NextToken" in body:
            as_of, offset = _read_token(body["NextToken"], query)
        contacts = [
            c
            for c in self._workload.contacts(start, end, as_of)
            if c.queue_id in queues and (channels is None or c.media_type.upper() in channels)
        ]
        results = _results(contacts, start, period, groupings, metrics)
        size = body.get("MaxResults", 100)
        reply: dict[str, Any] = {"MetricResults": results[offset : offset + size]}
        if offset + size < len(results):
            reply["NextToken"] = _token({"t": as_of, "o": offset + size, "q": query})
        return web.json_response(reply)

    def _filters(self, filters: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[str] | None]:
        """The queue ids and channels the filters select. [model] a QUEUE (or AGENT, ROUTING_PROFILE...) filter
        is required, and at most 100 values over all keys but CHANNEL; this simulator serves QUEUE and CHANNEL."""
        queues: set[str] | None = None
        channels: set[str] | None = None
        for f in filters:
            values = f.get("FilterValues", [])
            if f["FilterKey"] == "QUEUE":
                queues = (queues or set()) | {v.rsplit("/", 1)[-1] for v in values}
            elif f["FilterKey"] == "CHANNEL":
                channels = (channels or set()) | set(values)
            else:
                raise _invalid(f"this simulator does not serve the filter key {f['FilterKey']}")
        if queues is None:
            raise _invalid("At least one of QUEUE, ROUTING_PROFILE, AGENT, ... filters is required")
        if sum(len(f.get("FilterValues", [])) for f in filters if f["FilterKey"] != "CHANNEL") > 100:
            raise _invalid("up to 100 filter values across all filter keys are allowed")
        return queues, channels

    # --- ListQueues, ListUsers --------------------------------------------------------------------------------

    async def _queues(self, request: web.Request) -> web.Response:
        await self._check_signature(request)
        types = request.query.getall("queueTypes", [])
        validate(
            "ListQueues",
            {
                "InstanceId": request.match_info["instance"],
                **_list_params(request),
                **({"QueueTypes": types} if types else {}),
            },
        )
        entries = [
            {"Id": q, "Arn": self.queue_arn(q), "Name": name, "QueueType": "STANDARD"}
            for q, name in self._workload.queues
        ]
        # [model] "If you do not specify a QueueTypes parameter, both standard and agent queues are returned."
        entries += [
            {"Id": _agent_queue(a), "Arn": self.queue_arn(_agent_queue(a)), "QueueType": "AGENT"}
            for a, _ in self._workload.agents
        ]
        return self._page(request, [e for e in entries if not types or e["QueueType"] in types], "QueueSummaryList")

    async def _users(self, request: web.Request) -> web.Response:
        await self._check_signature(request)
        validate("ListUsers", {"InstanceId": request.match_info["instance"], **_list_params(request)})
        entries = [
            {"Id": a, "Arn": f"{self.instance_arn}/agent/{a}", "Username": name.lower().replace(" ", ".")}
            for a, name in self._workload.agents
        ]
        return self._page(request, entries, "UserSummaryList")

    def _page(self, request: web.Request, entries: list[dict[str, Any]], key: str) -> web.Response:
        if request.match_info["instance"] not in (self.instance_id, self.instance_arn):
            raise _Reply(404, "ResourceNotFoundException", "Instance not found")
        modified = {"LastModifiedTime": 1_767_225_600.0, "LastModifiedRegion": self.region}
        size = int(request.query.get("maxResults", "100"))  # [model] "The default MaxResult size is 100."
        offset = 0
        if "nextToken" in request.query:
            _, offset = _read_token(request.query["nextToken"], key)
        reply: dict[str, Any] = {key: [{**e, **modified} for e in entries[offset : offset + size]]}
        if offset + size < len(entries):
            reply["NextToken"] = _token({"t": 0, "o": offset + size, "q": key})
        return web.json_response(reply)


def _list_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if "maxResults" in request.query:
        try:
            params["MaxResults"] = int(request.query["maxResults"])
        except ValueError:
            raise _invalid("maxResults must be an integer") from None
    if "nextToken" in request.query:
        params["NextToken"] = request.query["nextToken"]
    return params


def _agent_queue(agent_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"agent-queue:{agent_id}"))


def _results(
    contacts: Iterable[Contact], start: int, period: int, groupings: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """One MetricResult per group and interval with contacts, every requested metric in it [model: "Each item in
    MetricResult must include all requested metrics"]. Grouped by AGENT, contacts without one are in no group."""
    tallies: dict[tuple[tuple[str | None, ...], int], dict[str, int]] = {}
    for c in contacts:
        key = tuple(_GROUPS[g](c) for g in groupings)
        if None in key:
            continue
        tally = tallies.setdefault((key, int((c.ended_at - start) // period)), dict.fromkeys(metrics, 0))
        for m in metrics:
            value = _MEASURES[m](c)
            if value is not None:
                tally[m] += value
    return [
        {
            "Dimensions": dict(zip(groupings, key, strict=True)),
            "MetricInterval": {
                "Interval": next(name for name, p in _PERIODS.items() if p == period),
                "StartTime": float(start + k * period),
                "EndTime": float(start + (k + 1) * period),
            },
            "Collections": [
                {"Metric": {"Name": m}, "Value": tally[m] / 1000 if m in _TIMES else float(tally[m])} for m in metrics
            ],
        }
        for (key, k), tally in sorted(tallies.items())
    ]


def _digest(body: Mapping[str, Any]) -> str:
    """What a page token is bound to: the query without its paging keys."""
    query = {k: v for k, v in body.items() if k not in ("NextToken", "MaxResults")}
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def _token(state: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def _read_token(token: str, query: str) -> tuple[float, int]:
    """(as_of, offset) of a token made for this query: pages of one query are one snapshot of the data."""
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
        if state["q"] == query and isinstance(state["o"], int) and state["o"] >= 0:
            return float(state["t"]), state["o"]
    except (ValueError, binascii.Error, KeyError, TypeError):
        pass
    raise _invalid("The NextToken is not valid for this request")  # [unverified] the text


def demo_source(base_url: str) -> dict[str, Any]:
    """The demo's Amazon Connect source, as raw config, for a simulator made by `demo_simulator`: AWS's
    documented example keys, which the simulator checks every signature against."""
    return {
        "name": "demo-amazon-connect",
        "provider": "amazon_connect",
        "base_url": base_url,
        "instance_arn": f"arn:aws:connect:us-east-1:{DEMO_ACCOUNT}:instance/{DEMO_INSTANCE_ID}",
        "access_key_id": DEMO_ACCESS_KEY,
        "secret_access_key": DEMO_SECRET_KEY,
        "group_by": ["media_type", "queue"],
        "windows": ["15m", "1h", "1d"],
    }


def demo_simulator(workload: Workload, clock: Clock) -> AmazonConnectSimulator:
    """The shared workload's queues, agents and pace, its contacts on Connect's channels (the demo's
    message and callback contacts are no Connect channel)."""
    connect = Workload(
        seed=workload.seed,
        queues=len(workload.queues),
        agents=len(workload.agents),
        media_types=CHANNELS,
        contacts_per_slot=workload.contacts_per_slot,
        report_lag=workload.report_lag,
    )
    return AmazonConnectSimulator(connect, clock, instance_id=DEMO_INSTANCE_ID)
