"""Amazon Connect against its machine-readable contract: botocore's service model for `connect` (issue 17).

The provider's builders and parser and the simulator were written from one reading; botocore is an independent
one, generated from the API's own model. Here:
- every request body and query the provider builds validates against the operation's input shape with botocore's
  ParamValidator, and is what botocore's own rest-json serializer makes of the same parameters;
- the units the provider assumes are the units the model's documentation of `Metrics` states;
- every fixture and every reply of a started simulator (real loopback HTTP, SigV4-signed requests) parses with
  botocore's rest-json response parser for the operation's output shape, and with ours, to the workload's truth;
- the simulator refuses what AWS refuses: a bad signature (403, recomputed with botocore's signer), a body
  botocore's validator refuses (400), and says "slow down" as a 429 ThrottlingException.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.loaders import Loader
from botocore.model import OperationModel, ServiceModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator

from aht_exporter.clock import FakeClock
from aht_exporter.model import Bucket, Field, ProviderError
from aht_exporter.providers.amazon_connect_api import (
    METRIC_DATA_PATH,
    METRICS,
    QUEUE_SCOPED,
    SIGNING_NAME,
    fields_for,
    list_request,
    merge,
    metric_data_body,
    metric_names,
    parse_list_page,
    parse_metric_data,
    query_spans,
    queue_chunks,
)
from aht_exporter.providers.aws import error_text, signed_request
from aht_exporter.simulator.amazon_connect import (
    CHANNELS,
    DEMO_ACCESS_KEY,
    DEMO_SECRET_KEY,
    AmazonConnectSimulator,
)
from aht_exporter.simulator.faults import Fault
from aht_exporter.simulator.workload import Totals, Workload
from tests.helpers import fixture

MODEL = ServiceModel(Loader().load_service_model("connect", "service-2"), "connect")
ARN = "arn:aws:connect:eu-west-2:123456789012:instance/11111111-2222-4333-8444-555555555555"
T = 1772445600  # 2026-03-02 10:00 UTC
NOW = T + 12 * 3600
DEMO = Credentials(DEMO_ACCESS_KEY, DEMO_SECRET_KEY)
GROUP_BYS = [
    list(p) for n in range(4) for c in itertools.combinations(("media_type", "queue", "agent"), n) for p in [c]
]


def operation(name: str) -> OperationModel:
    return MODEL.operation_model(name)


def validation_errors(params: dict[str, Any], name: str) -> str:
    report = ParamValidator().validate(params, operation(name).input_shape)
    return report.generate_report() if report.has_errors() else ""


def botocore_body(params: dict[str, Any], name: str) -> Any:
    """What botocore's rest-json serializer sends for `params`."""
    request = create_serializer("rest-json").serialize_to_request(params, operation(name))
    return json.loads(request["body"])


def botocore_parse(response: httpx.Response, name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = create_parser("rest-json").parse(
        {"status_code": response.status_code, "headers": dict(response.headers), "body": response.content},
        operation(name).output_shape,
    )
    return parsed


# --- requests -----------------------------------------------------------------------------------------------


def all_bodies() -> Iterator[tuple[str, dict[str, Any]]]:
    for group_by, bucket, queues, token in itertools.product(
        GROUP_BYS, (900, 1800), (["q1"], [f"q{i}" for i in range(100)], [f"{ARN}/queue/q1"]), (None, "t" * 2500)
    ):
        yield (
            f"{group_by}-{bucket}-{len(queues)}-{token is not None}",
            metric_data_body(ARN, T, T + 3 * 86400 - bucket, bucket, group_by, queues, token),
        )


@pytest.mark.parametrize(("name", "body"), list(all_bodies()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_metric_data_body_is_what_botocore_validates_and_sends(name: str, body: dict[str, Any]) -> None:
    assert validation_errors(body, "GetMetricDataV2") == ""
    # The body uses the wire names, and the wire names of this operation are its member names [model].
    assert botocore_body(body, "GetMetricDataV2") == body


def max_problems(value: Any, shape: Any, path: str = "$") -> list[str]:
    """The model's upper bounds (`max` of lists, strings and integers), which botocore's ParamValidator leaves to
    the service: it checks only the lower ones."""
    problems: list[str] = []
    limit = shape.metadata.get("max")
    size = len(value) if isinstance(value, list | str) else value if isinstance(value, int) else None
    if limit is not None and size is not None and size > limit:
        problems.append(f"{path}: {size} > {limit}")
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            problems += max_problems(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            problems += max_problems(item, shape.member, f"{path}[{i}]")
    return problems


def test_the_model_s_upper_bounds_are_kept() -> None:
    shape = operation("GetMetricDataV2").input_shape
    for _, body in all_bodies():
        assert max_problems(body, shape) == []
    # The check is real: one queue more than a chunk holds is over the model's bound.
    body = metric_data_body(ARN, T, T + 900, 900, ["queue"], [f"q{i}" for i in range(101)])
    assert max_problems(body, shape) == ["$.Filters[0].FilterValues: 101 > 100"]
    assert max_problems({**body, "Groupings": ["QUEUE"] * 5}, shape)[-1] == "$.Groupings: 5 > 4"


def test_queue_chunks_hold_at_most_100_values_and_every_queue_once() -> None:
    queues = [f"q{i}" for i in range(250)]
    chunks = queue_chunks(queues)
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert list(itertools.chain.from_iterable(chunks)) == queues
    assert queue_chunks([]) == []


@pytest.mark.parametrize("bucket", [900, 1800])
def test_spans_are_whole_buckets_shorter_than_3_days(bucket: int) -> None:
    spans = query_spans(T, T + 7 * 86400, bucket)
    assert spans[0][0] == T and spans[-1][1] == T + 7 * 86400
    assert all(s % bucket == 0 and e - s < 3 * 86400 for s, e in spans)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert len(spans) == 3  # the longest window, 7d, in three requests


@pytest.mark.parametrize(("kind", "op"), [("queues", "ListQueues"), ("users", "ListUsers")])
@pytest.mark.parametrize("token", [None, "a+b/c=="])
def test_list_requests_are_what_botocore_validates_and_sends(kind: Any, op: str, token: str | None) -> None:
    path, query = list_request(kind, "11111111-2222-4333-8444-555555555555", token)
    # The query's wire names back to the model's member names (their `locationName`), to validate them.
    members = {m.serialization.get("name", n): (n, m) for n, m in operation(op).input_shape.members.items()}
    params: dict[str, Any] = {"InstanceId": "11111111-2222-4333-8444-555555555555"}
    for wire, value in query:
        name, shape = members[wire]
        params[name] = [value] if shape.type_name == "list" else int(value) if shape.type_name == "integer" else value
    assert validation_errors(params, op) == ""
    request = create_serializer("rest-json").serialize_to_request(params, operation(op))
    assert request["url_path"] == path
    assert {k: v if isinstance(v, list) else str(v) for k, v in request["query_string"].items()} == {
        k: [v] if members[k][1].type_name == "list" else v for k, v in query
    }


# --- units --------------------------------------------------------------------------------------------------


def model_metric_docs() -> dict[str, str]:
    """GetMetricDataV2's `Metrics` documentation, metric name -> its text [model]."""
    doc = operation("GetMetricDataV2").input_shape.members["Metrics"].documentation
    return {
        re.sub("<[^>]+>", "", name).strip(): html.unescape(re.sub("<[^>]+>", " ", text))
        for name, text in re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", doc, re.S)
    }


def test_units_are_exactly_as_the_model_documents_them() -> None:
    docs = model_metric_docs()
    for name, field, unit in METRICS:
        found = re.search(r"Unit:\s*(\w+)", docs[name])
        assert found is not None and found.group(1) == unit, (name, found)
        # Times are read as seconds (our fields' unit), counts as contacts: the model says so for every one...
        if field.endswith("_seconds") and name != "SUM_HOLD_TIME":
            assert unit == "Seconds", name
        elif not field.endswith("_seconds"):
            assert unit == "Count", name
    # ...but for SUM_HOLD_TIME, whose "Unit: Count" is the model's erratum: its UI name is a time, as the admin
    # guide's "Customer hold time" (hh:mm:ss) is. If AWS corrects the model, this fails: update METRICS then.
    assert re.search(r"Unit:\s*Count", docs["SUM_HOLD_TIME"]) and "Customer hold time" in docs["SUM_HOLD_TIME"]


def test_every_metric_asked_for_is_valid_for_the_groupings_asked() -> None:
    docs = model_metric_docs()
    for group_by in GROUP_BYS:
        for name in metric_names(group_by):
            valid = re.search(r"Valid groupings and filters:(.*?)(UI name|$)", docs[name], re.S)
            assert valid is not None, name
            wanted = {"Queue"} | {"Channel" for _ in group_by if "media_type" in group_by}
            wanted |= {"Agent"} if "agent" in group_by else set()
            assert wanted <= {v.strip() for v in valid.group(1).split(",")}, (name, group_by)
    assert all(name not in metric_names(["agent"]) for name in QUEUE_SCOPED)
    assert fields_for(["queue"]) == frozenset(f for _, f, _ in METRICS)


def test_the_model_facts_the_code_relies_on() -> None:
    assert MODEL.signing_name == "connect" and MODEL.protocol == "rest-json"
    op = operation("GetMetricDataV2")
    assert (op.http["method"], op.http["requestUri"]) == ("POST", METRIC_DATA_PATH)
    assert op.input_shape.members["Filters"].member.members["FilterValues"].metadata["max"] == 100
    assert op.input_shape.members["MaxResults"].metadata["max"] == 100
    interval = op.input_shape.members["Interval"].documentation
    assert "FIFTEEN_MIN: The difference between StartTime and EndTime must be less than 3 days" in html.unescape(
        re.sub("<[^>]+>", "", interval)
    )
    assert "Historical metrics are available for 3 months" in op.input_shape.members["StartTime"].documentation
    assert {e.name: e.metadata["error"]["httpStatusCode"] for e in op.error_shapes}["ThrottlingException"] == 429
    assert "does not support agent queues" in op.documentation
    for name, path in (("ListQueues", "/queues-summary/{InstanceId}"), ("ListUsers", "/users-summary/{InstanceId}")):
        assert operation(name).http["requestUri"] == path


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["amazon_connect_metric_data_queue_channel.json", "amazon_connect_metric_data_agent.json"]
)
def test_metric_data_fixtures_parse_with_botocore_as_with_ours(name: str) -> None:
    case = fixture(name)
    response = httpx.Response(200, json=case["reply"])
    parsed = botocore_parse(response, "GetMetricDataV2")
    buckets, token = parse_metric_data(response.content, case["group_by"])
    assert token == parsed.get("NextToken")
    assert len(buckets) == len(parsed["MetricResults"])
    for bucket, result in zip(buckets, parsed["MetricResults"], strict=True):
        assert bucket.start == result["MetricInterval"]["StartTime"].timestamp()
        assert bucket.end == result["MetricInterval"]["EndTime"].timestamp()
        assert bucket.values == _our_view(result)


def _our_view(result: dict[str, Any]) -> dict[Field, float]:
    """botocore's parse of one MetricResult, read with the provider's table: what our parser must give."""
    fields = {name: field for name, field, _ in METRICS}
    return {
        fields[c["Metric"]["Name"]]: c["Value"]
        for c in result["Collections"]
        if c["Metric"]["Name"] in fields and c.get("Value") is not None
    }


def test_list_fixtures_parse_with_botocore_as_with_ours() -> None:
    pages = fixture("amazon_connect_list_pages.json")
    for kind, op, key, name in (
        ("queues", "ListQueues", "QueueSummaryList", "Name"),
        ("users", "ListUsers", "UserSummaryList", "Username"),
    ):
        response = httpx.Response(200, json=pages[kind])
        parsed = botocore_parse(response, op)
        ours, token = parse_list_page(response.content, kind)  # type: ignore[arg-type]
        assert token == parsed.get("NextToken")
        standard = [e for e in parsed[key] if e.get("QueueType", "STANDARD") == "STANDARD"]
        assert [(s.id, s.arn, s.name) for s in ours] == [(e["Id"], e["Arn"], e.get(name, "")) for e in standard]


@pytest.mark.parametrize("case", fixture("amazon_connect_errors.json")["cases"], ids=lambda c: str(c["code"]))
def test_error_fixtures_give_botocore_s_code(case: dict[str, Any]) -> None:
    response = httpx.Response(case["status"], headers=case["headers"], json=case["body"])
    parsed = botocore_parse(response, "GetMetricDataV2")
    assert parsed["Error"]["Code"] == case["code"]
    assert error_text(response) == f"{case['code']}: {parsed['Error']['Message']}"


# --- the simulator, over loopback HTTP -----------------------------------------------------------------------------


class Session:
    """A started simulator and a client that signs as the provider will (signed_request)."""

    def __init__(self, sim: AmazonConnectSimulator, client: httpx.AsyncClient) -> None:
        self.sim, self.client = sim, client

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        credentials: Credentials = DEMO,
        region: str | None = None,
        tamper: bytes | None = None,
    ) -> httpx.Response:
        content = json.dumps(body).encode() if body is not None else b""
        url, headers = signed_request(
            method,
            self.sim.base_url + path,
            params or [],
            content,
            credentials,
            region or self.sim.region,
            SIGNING_NAME,
        )
        return await self.client.request(method, url, content=tamper or content, headers=headers)

    async def metric_pages(self, body: dict[str, Any]) -> list[httpx.Response]:
        pages = [await self.send("POST", METRIC_DATA_PATH, body=body)]
        while pages[-1].status_code == 200 and "NextToken" in pages[-1].json():
            assert len(pages) < 1000
            pages.append(
                await self.send("POST", METRIC_DATA_PATH, body={**body, "NextToken": pages[-1].json()["NextToken"]})
            )
        return pages


@pytest_asyncio.fixture
async def session() -> AsyncIterator[Session]:
    workload = Workload(seed=17, queues=3, agents=6, media_types=CHANNELS, contacts_per_slot=8.0)
    sim = AmazonConnectSimulator(workload, FakeClock(NOW), region="eu-west-2", instance_id=ARN.rsplit("/", 1)[1])
    await sim.start()
    async with httpx.AsyncClient(timeout=10) as client:
        yield Session(sim, client)
    await sim.stop()


def truth_buckets(
    sim: AmazonConnectSimulator, start: int, end: int, bucket: int, group_by: list[str]
) -> dict[Any, Totals]:
    return {
        (s, labels): totals
        for s in range(start, end, bucket)
        for labels, totals in sim.truth(s, s + bucket, group_by).items()
    }


def expected_values(t: Totals, group_by: list[str]) -> dict[Field, float]:
    values = {
        Field.HANDLE_TIME: t.handle_seconds,
        Field.CONTACTS_HANDLED: float(t.contacts_handled),
        Field.TALK_TIME: t.talk_seconds,
        Field.HOLD_TIME: t.hold_seconds,
        Field.ACW_TIME: t.acw_seconds,
    }
    if "agent" not in group_by:
        values |= {
            Field.CONTACTS_ABANDONED: float(t.contacts_abandoned),
            Field.CONTACTS_OFFERED: float(t.contacts_offered),
        }
    return values


@pytest.mark.asyncio
@pytest.mark.parametrize("group_by", GROUP_BYS, ids=lambda g: "+".join(g) or "none")
@pytest.mark.parametrize("bucket", [900, 1800])
async def test_simulator_replies_parse_with_botocore_and_ours_to_the_workload_truth(
    session: Session, group_by: list[str], bucket: int
) -> None:
    sim = session.sim
    start, end = T, T + 8 * 3600
    queues = [q for q, _ in sim._workload.queues]
    # Two queue chunks (one queue given as its ARN), to prove the merge.
    chunks = [[queues[0]], [sim.queue_arn(q) for q in queues[1:]]]
    buckets: list[Bucket] = []
    pages = 0
    for chunk in chunks:
        for response in await session.metric_pages(
            metric_data_body(sim.instance_arn, start, end, bucket, group_by, chunk)
        ):
            assert response.status_code == 200, response.text
            parsed = botocore_parse(response, "GetMetricDataV2")
            page, token = parse_metric_data(response.content, group_by)
            assert token == parsed.get("NextToken")
            assert [b.values for b in page] == [_our_view(r) for r in parsed["MetricResults"]]
            assert [b.start for b in page] == [
                r["MetricInterval"]["StartTime"].timestamp() for r in parsed["MetricResults"]
            ]
            buckets.extend(page)
            pages += 1
    got = {(b.start, b.labels): b.values for b in merge(buckets)}
    want = {key: expected_values(t, group_by) for key, t in truth_buckets(sim, start, end, bucket, group_by).items()}
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    if len(group_by) >= 2:
        assert pages > len(chunks)  # more than 100 results: NextToken paging was exercised


@pytest.mark.asyncio
async def test_list_pages_parse_with_botocore_and_ours(session: Session) -> None:
    sim = session.sim
    path, query = list_request("queues", sim.instance_id, None)
    response = await session.send("GET", path, params=query)
    parsed = botocore_parse(response, "ListQueues")
    queues, token = parse_list_page(response.content, "queues")
    assert token is None and parsed.get("NextToken") is None
    assert [(q.id, q.name) for q in queues] == list(sim._workload.queues)
    assert {e["QueueType"] for e in parsed["QueueSummaryList"]} == {"STANDARD"}
    # Without queueTypes, agent queues come too [model], and page (maxResults 2): the builder asks STANDARD only.
    pages, token = 0, None
    everything: list[str] = []
    while True:
        params = [("maxResults", "2")] + ([("nextToken", token)] if token else [])
        response = await session.send("GET", path, params=params)
        assert response.status_code == 200, response.text
        entries = botocore_parse(response, "ListQueues")["QueueSummaryList"]
        everything += [e["QueueType"] for e in entries]
        token = response.json().get("NextToken")
        pages += 1
        if token is None:
            break
    assert pages == 5 and everything.count("AGENT") == 6
    path, query = list_request("users", sim.instance_id, None)
    response = await session.send("GET", path, params=query)
    users, token = parse_list_page(response.content, "users")
    assert [u.id for u in users] == [a for a, _ in sim._workload.agents] and token is None
    assert [u.name for u in users] == [e["Username"] for e in botocore_parse(response, "ListUsers")["UserSummaryList"]]


@pytest.mark.asyncio
async def test_list_users_pages_with_next_token() -> None:
    workload = Workload(seed=3, queues=1, agents=1500, media_types=CHANNELS)
    sim = AmazonConnectSimulator(workload, FakeClock(NOW))
    await sim.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            s = Session(sim, client)
            ids: list[str] = []
            token: str | None = None
            for _ in range(10):
                path, query = list_request("users", sim.instance_id, token)
                response = await s.send("GET", path, params=query)
                page, token = parse_list_page(response.content, "users")
                ids += [u.id for u in page]
                if token is None:
                    break
            assert ids == [a for a, _ in workload.agents]
            assert sim.requests[path] == 2  # 1000 + 500
    finally:
        await sim.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"credentials": Credentials(DEMO_ACCESS_KEY, "wrong-secret")}, "InvalidSignatureException"),
        ({"credentials": Credentials("AKIDUNKNOWN000000000", DEMO_SECRET_KEY)}, "UnrecognizedClientException"),
        ({"region": "us-west-2"}, "InvalidSignatureException"),
        ({"tamper": b'{"ResourceArn": "x"}'}, "InvalidSignatureException"),
    ],
    ids=["wrong-secret", "unknown-key", "wrong-region", "body-changed-after-signing"],
)
async def test_a_request_not_signed_right_is_refused_with_403(
    session: Session, change: dict[str, Any], code: str
) -> None:
    body = metric_data_body(session.sim.instance_arn, T, T + 900, 900, ["queue"], ["q"])
    response = await session.send("POST", METRIC_DATA_PATH, body=body, **change)
    assert response.status_code == 403
    assert botocore_parse(response, "GetMetricDataV2")["Error"]["Code"] == code
    assert error_text(response).startswith(f"{code}: ")
    assert session.sim.denied[code] == 1


@pytest.mark.asyncio
async def test_unsigned_wrong_service_and_stale_signatures_are_refused(session: Session) -> None:
    sim, client = session.sim, session.client
    body = json.dumps(metric_data_body(sim.instance_arn, T, T + 900, 900, [], ["q"])).encode()
    unsigned = await client.post(sim.base_url + METRIC_DATA_PATH, content=body)
    assert unsigned.status_code == 403
    assert error_text(unsigned) == "MissingAuthenticationTokenException: Missing Authentication Token"
    # Signed for another service: the scope names it, and the key derived from it differs.
    request = AWSRequest(method="POST", url=sim.base_url + METRIC_DATA_PATH, data=body)
    SigV4Auth(DEMO, "execute-api", sim.region).add_auth(request)
    other = await client.post(sim.base_url + METRIC_DATA_PATH, content=body, headers=dict(request.headers.items()))
    assert other.status_code == 403 and error_text(other).startswith(
        "InvalidSignatureException: Credential should be scoped"
    )
    # A signature made 16 minutes ago (the wall clock moved on): expired.
    url, headers = signed_request("POST", sim.base_url + METRIC_DATA_PATH, [], body, DEMO, sim.region, SIGNING_NAME)
    sim._wall = lambda: time.time() + 16 * 60
    stale = await client.post(url, content=body, headers=headers)
    assert stale.status_code == 403 and "Signature expired" in error_text(stale)
    assert dict(sim.denied) == {
        "MissingAuthenticationTokenException": 1,
        "InvalidSignatureException": 2,
    }


@pytest.mark.asyncio
async def test_temporary_credentials_need_their_session_token(session: Session) -> None:
    workload = Workload(seed=2, queues=1, agents=1, media_types=CHANNELS)
    sim = AmazonConnectSimulator(workload, FakeClock(NOW), session_token="FwoGZXIvYXdzEXAMPLE")
    await sim.start()
    try:
        s = Session(sim, session.client)
        body = metric_data_body(sim.instance_arn, T, T + 900, 900, [], [workload.queues[0][0]])
        good = await s.send(
            "POST",
            METRIC_DATA_PATH,
            body=body,
            credentials=Credentials(DEMO_ACCESS_KEY, DEMO_SECRET_KEY, "FwoGZXIvYXdzEXAMPLE"),
        )
        assert good.status_code == 200, good.text
        missing = await s.send("POST", METRIC_DATA_PATH, body=body)
        assert missing.status_code == 403
    finally:
        await sim.stop()


@pytest.mark.asyncio
async def test_throttling_is_a_429_throttling_exception(session: Session) -> None:
    sim = session.sim
    sim.faults.inject(Fault.RATE_LIMITED, count=1)
    body = metric_data_body(sim.instance_arn, T, T + 900, 900, ["queue"], [sim._workload.queues[0][0]])
    throttled = await session.send("POST", METRIC_DATA_PATH, body=body)
    assert throttled.status_code == 429
    assert botocore_parse(throttled, "GetMetricDataV2")["Error"] == {
        "Code": "ThrottlingException",
        "Message": "Rate exceeded",
    }
    assert error_text(throttled) == "ThrottlingException: Rate exceeded"
    again = await session.send("POST", METRIC_DATA_PATH, body=body)
    assert again.status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "fault", [Fault.MISSING_FIELD, Fault.WRONG_TYPE, Fault.NEGATIVE_NUMBER, Fault.HUGE_NUMBER, Fault.ERROR_IN_200]
)
async def test_a_damaged_reply_fails_the_parse(session: Session, fault: Fault) -> None:
    sim = session.sim
    sim.faults.inject(fault, count=1)
    body = metric_data_body(sim.instance_arn, T, T + 3600, 900, ["queue"], [q for q, _ in sim._workload.queues])
    response = await session.send("POST", METRIC_DATA_PATH, body=body)
    with pytest.raises(ProviderError):
        parse_metric_data(response.content, ["queue"], status=response.status_code)


@pytest.mark.asyncio
async def test_fields_nobody_asked_for_are_survived(session: Session) -> None:
    sim = session.sim
    body = metric_data_body(sim.instance_arn, T, T + 3600, 900, ["queue"], [q for q, _ in sim._workload.queues])
    plain = await session.send("POST", METRIC_DATA_PATH, body=body)
    sim.faults.inject(Fault.EXTRA_FIELDS, count=1)
    extra = await session.send("POST", METRIC_DATA_PATH, body=body)
    assert b"addedInV2" in extra.content
    assert parse_metric_data(extra.content, ["queue"]) == parse_metric_data(plain.content, ["queue"])
    assert parse_metric_data(plain.content, ["queue"])[0]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"StartTime": T, "EndTime": T + 3 * 86400}, 400, "InvalidRequestException"),
        ({"EndTime": NOW + 900}, 400, "InvalidRequestException"),
        ({"StartTime": NOW - 100 * 86400, "EndTime": NOW - 99 * 86400}, 400, "InvalidRequestException"),
        (
            {"Filters": [{"FilterKey": "QUEUE", "FilterValues": [f"q{i}" for i in range(101)]}]},
            400,
            "InvalidRequestException",
        ),
        ({"Filters": [{"FilterKey": "CHANNEL", "FilterValues": ["VOICE"]}]}, 400, "InvalidRequestException"),
        ({"ResourceArn": ARN.replace("1111", "9999")}, 404, "ResourceNotFoundException"),
        ({"NextToken": "bm90IGEgdG9rZW4="}, 400, "InvalidRequestException"),
        ({"MaxResults": 0}, 400, "InvalidParameterException"),
    ],
    ids=[
        "3-days",
        "future",
        "older-than-3-months",
        "101-queues",
        "no-queue-filter",
        "other-instance",
        "bad-token",
        "max-results-0",
    ],
)
async def test_the_simulator_refuses_what_aws_refuses(
    session: Session, change: dict[str, Any], status: int, code: str
) -> None:
    sim = session.sim
    body = {**metric_data_body(sim.instance_arn, T, T + 900, 900, ["queue"], [sim._workload.queues[0][0]]), **change}
    response = await session.send("POST", METRIC_DATA_PATH, body=body)
    assert response.status_code == status, response.text
    assert botocore_parse(response, "GetMetricDataV2")["Error"]["Code"] == code


@pytest.mark.asyncio
async def test_a_token_of_another_query_is_refused(session: Session) -> None:
    sim = session.sim
    queues = [q for q, _ in sim._workload.queues]
    body = metric_data_body(sim.instance_arn, T, T + 6 * 3600, 900, ["media_type", "queue", "agent"], queues)
    first = await session.send("POST", METRIC_DATA_PATH, body=body)
    token = first.json()["NextToken"]
    other = {**body, "StartTime": T + 900, "NextToken": token}
    response = await session.send("POST", METRIC_DATA_PATH, body=other)
    assert response.status_code == 400
    assert error_text(response) == "InvalidRequestException: The NextToken is not valid for this request"


def test_the_simulator_refuses_a_workload_with_media_types_connect_has_not() -> None:
    with pytest.raises(ValueError, match=r"media types \['callback', 'message'\] are no Connect channels"):
        AmazonConnectSimulator(Workload(), FakeClock(NOW))
