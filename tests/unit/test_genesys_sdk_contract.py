"""The Genesys provider, its fixtures and its simulator against Genesys's own Python SDK (issue 13).

The provider, the fixtures and the simulator were all written from one reading of the vendor's pages, so a
wrong reading cannot show between them. `PureCloudPlatformClientV2` is generated from the API's own schema:
it is an independent reading. Here every query body the provider can build is checked against the SDK's
`ConversationAggregationQuery` (field names, types, and every enum the SDK carries), and every reply we parse
(fixtures and simulator) is deserialized by the SDK's own client into its response models, field by field.

What the SDK checks, and what it does not (PureCloudPlatformClientV2 269):
- Its deserializer silently drops keys a model does not know, and a scalar enum setter replaces an unknown
  value with "outdated_sdk_version" (no raise, no print). So "the SDK accepts it" means: deserialize, serialize
  back (`sanitize_for_serialization`) and get the same JSON. `schema_problems` also walks the JSON itself
  and names any key or type the model does not have.
- Its list setters (`metrics`, `groupBy`) check nothing. The metric enum is taken from the SDK's other
  conversation-aggregate metric fields (`ConversationAggregationView.target`, `ConversationAggregationSort.name`),
  the dimension enum from `ConversationAggregateQueryPredicate.dimension` (Genesys's iOS SDK types
  `ConversationAggregationQuery.groupBy` with the same dimension list, give or take a release's additions),
  media types from `AnalyticsSession.media_type`.

Importing the SDK creates its `Configuration` singleton, which reads `~/.genesyscloudpython/config` and
starts a watchdog thread over the home directory; it is imported with HOME pointing at a config that turns
live reload off, so neither the developer's file nor a thread gets in. No test here touches the network:
the SDK's HTTP client is replaced by a stub that records requests and hands back canned JSON.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import combinations, permutations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.model import ConfigError
from aht_exporter.providers import genesys as provider_module
from aht_exporter.providers.genesys import (
    AGGREGATES_PATH,
    DIMENSIONS,
    GenesysConfig,
    GenesysProvider,
    metric_names,
    query_body,
)
from aht_exporter.registry import load_config
from aht_exporter.simulator.genesys import QUEUES_PATH, TOKEN_PATH, USERS_PATH, GenesysSimulator
from aht_exporter.simulator.workload import Workload
from aht_exporter.timebuckets import chunks, floor_to, parse_iso
from tests.helpers import FIXTURES, RecordingSleep, fixture, parse_aggregates
from tests.unit.genesys_config import API, LOGIN, SECRET, genesys_config


def _import_sdk() -> Any:
    home = os.environ.get("HOME")
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp, ".genesyscloudpython")
        config_dir.mkdir()
        (config_dir / "config").write_text("[general]\nlive_reload_config = false\n")
        os.environ["HOME"] = tmp
        try:
            return importlib.import_module("PureCloudPlatformClientV2")
        finally:
            if home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = home


SDK = _import_sdk()
MODELS = SDK.models
if TYPE_CHECKING:
    from PureCloudPlatformClientV2.abstract_http_client import AbstractHttpClient
else:  # imported only now, after _import_sdk() has loaded the package under a throwaway HOME
    AbstractHttpClient = importlib.import_module("PureCloudPlatformClientV2.abstract_http_client").AbstractHttpClient


# --- the SDK's own client, over a stub transport ---------------------------------------------------------


class _Reply:
    """What the SDK's client reads from an HTTP response: status, data, Content-Type."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.status, self.reason, self.data = status, "OK", json.dumps(body)

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return "application/json" if name.lower() == "content-type" else default

    def getheaders(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}


class _StubHttp(AbstractHttpClient):  # type: ignore[misc]  # the SDK is untyped: its base class is Any
    """The SDK's HTTP client interface: records every request, answers with `body`."""

    def __init__(self, body: Any = None) -> None:
        super().__init__()
        self.body = {} if body is None else body
        self.requests: list[Any] = []  # the SDK's HttpRequestOptions

    def request(self, http_request_options: Any) -> _Reply:
        self.requests.append(http_request_options)
        return _Reply(self.body)


def sdk_client(body: Any = None) -> tuple[Any, _StubHttp]:
    client = SDK.ApiClient(host=API)
    stub = _StubHttp(body)
    client.set_http_client(stub)
    client.access_token = "sdk-token"
    return client, stub


_CLIENT, _ = sdk_client()


def to_sdk(payload: Any, type_name: str) -> Any:
    """JSON -> SDK model, through the SDK client's own response deserializer."""
    return _CLIENT.deserialize(_Reply(payload), type_name)


def from_sdk(obj: Any) -> Any:
    """SDK model -> JSON, as the SDK serializes a request body."""
    return _CLIENT.sanitize_for_serialization(obj)


# --- what the SDK's models allow -------------------------------------------------------------------------


@functools.cache
def allowed_values(model: type, attribute: str) -> tuple[str, ...] | None:
    """The enum a model's setter enforces (its `allowed_values` literal), or None when it checks nothing."""
    source = inspect.getsource(getattr(model, attribute).fset)
    found = re.search(r"allowed_values = (\[.*?\])", source, re.DOTALL)
    return None if found is None else tuple(ast.literal_eval(found.group(1)))


def _enum(model: type, attribute: str) -> tuple[str, ...]:
    values = allowed_values(model, attribute)
    assert values, f"the SDK's {model.__name__}.{attribute} no longer carries an enum: find another source"
    return values


METRIC_ENUMS = {
    "ConversationAggregationView.target": _enum(MODELS.ConversationAggregationView, "target"),
    "ConversationAggregationSort.name": _enum(MODELS.ConversationAggregationSort, "name"),
}
DIMENSION_ENUM = _enum(MODELS.ConversationAggregateQueryPredicate, "dimension")
MEDIA_TYPE_ENUM = _enum(MODELS.AnalyticsSession, "media_type")

_NATIVE: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


@functools.cache
def kind_of(type_name: str) -> tuple[str, str]:
    """A swagger type name as (kind, inner): list, dict, native, datetime, object or model."""
    if m := re.fullmatch(r"list\[(.+)\]", type_name):
        return "list", m.group(1)
    if m := re.fullmatch(r"dict\(([^,]*), (.+)\)", type_name):
        return "dict", m.group(2)
    if type_name in _NATIVE or type_name in ("datetime", "object"):
        return type_name if type_name in ("datetime", "object") else "native", type_name
    return "model", type_name


@functools.cache
def fields_of(type_name: str) -> dict[str, tuple[str, str]]:
    """A model's JSON keys -> (its Python attribute, its swagger type)."""
    instance = getattr(MODELS, type_name)()
    return {key: (attr, instance.swagger_types[attr]) for attr, key in instance.attribute_map.items()}


def schema_problems(value: Any, type_name: str, path: str = "$") -> list[str]:
    """Every key the SDK's `type_name` does not have, every value of the wrong JSON type and every value
    outside the enum of a setter (compared case-insensitively, as the SDK's setters compare)."""
    if value is None:
        return []
    kind, inner = kind_of(type_name)
    wrong = [f"{path}: {type(value).__name__} {value!r:.60}, the SDK says {type_name}"]
    if kind == "list":
        if not isinstance(value, list):
            return wrong
        return [p for i, v in enumerate(value) for p in schema_problems(v, inner, f"{path}[{i}]")]
    if kind == "dict":
        if not isinstance(value, dict):
            return wrong
        return [p for k, v in value.items() for p in schema_problems(v, inner, f"{path}.{k}")]
    if kind == "native":
        ok = isinstance(value, _NATIVE[type_name]) and not (isinstance(value, bool) and type_name != "bool")
        return [] if ok else wrong
    if kind == "datetime":
        try:
            datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return wrong
        return []
    if kind == "object":
        return []
    if not isinstance(value, dict):
        return wrong
    fields = fields_of(type_name)
    problems: list[str] = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: the SDK's {type_name} has no such field ({', '.join(fields)})")
            continue
        attr, item_type = fields[key]
        problems += schema_problems(item, item_type, f"{path}.{key}")
        enum = allowed_values(getattr(MODELS, type_name), attr) if isinstance(item, str) else None
        if enum is not None and item.lower() not in (e.lower() for e in enum):
            problems.append(f"{path}.{key}: {item!r} is not one of the SDK's {type_name}.{attr} values {enum}")
    return problems


def comparable(value: Any, type_name: str) -> Any:
    """`value` with every field the SDK types as a date-time parsed: the SDK writes them back in another
    ISO-8601 spelling (2024-05-14T08:12:31+00:00 for 2024-05-14T08:12:31.000Z)."""
    kind, inner = kind_of(type_name)
    if value is None or kind in ("native", "object"):
        return value
    if kind == "list":
        return [comparable(v, inner) for v in value]
    if kind == "dict":
        return {k: comparable(v, inner) for k, v in value.items()}
    if kind == "datetime":
        return datetime.fromisoformat(value)
    fields = fields_of(type_name)
    return {k: comparable(v, fields[k][1]) for k, v in value.items()}


def assert_sdk_agrees(payload: Any, type_name: str, where: str) -> Any:
    """`payload` has only fields and values the SDK knows, and survives SDK deserialization unchanged."""
    problems = schema_problems(payload, type_name)
    assert not problems, f"{where}: " + "; ".join(problems)
    model = to_sdk(payload, type_name)
    back = comparable(from_sdk(model), type_name)
    assert back == comparable(payload, type_name), (
        f"{where}: the SDK's {type_name} does not give back what it was given"
    )
    return model


# --- every query body the provider can send --------------------------------------------------------------

LABELS = ("media_type", "queue", "agent")
GROUP_BYS = [list(p) for n in range(len(LABELS) + 1) for c in combinations(LABELS, n) for p in permutations(c)]
QUEUE_1, QUEUE_2 = "1a2b3c4d-0000-4000-8000-000000000001", "1a2b3c4d-0000-4000-8000-000000000002"
MEDIA_FILTERS: list[list[str]] = [[], ["voice"], ["chat", "email", "message", "callback", "voice"]]
QUEUE_FILTERS: list[list[str]] = [[], [QUEUE_1], [QUEUE_1, QUEUE_2]]
NINE = int(parse_iso("2026-03-02T09:00:00Z"))
SPAN = (NINE - 30 * 3600, NINE)  # 30 hours: two chunks of the default 1d, three of 12h


def all_configs() -> Iterator[GenesysConfig]:
    for group_by in GROUP_BYS:
        for bucket in ("15m", "30m"):
            for media_types in MEDIA_FILTERS:
                for queues in QUEUE_FILTERS:
                    yield genesys_config(group_by=group_by, bucket=bucket, media_types=media_types, queues=queues)


def describe(config: GenesysConfig) -> str:
    return (
        f"group_by={config.group_by} bucket={config.bucket} media_types={config.media_types} "
        f"queues={config.queues} max_query_span={config.max_query_span}"
    )


@functools.cache
def all_bodies() -> list[tuple[str, dict[str, Any]]]:
    """(where, body): one body for every config; and for each bucket and chunk size, every chunk of SPAN
    and both halves the provider splits it into after a "too large" 400 (only `interval` differs)."""
    bodies = [(describe(c), query_body(NINE - 3600, NINE, c)) for c in all_configs()]
    for bucket in ("15m", "30m"):
        for span in ("1d", "12h", "2h"):
            config = genesys_config(bucket=bucket, max_query_span=span, media_types=["voice"], queues=[QUEUE_1])
            step = config.bucket_seconds
            for start, end in chunks(*SPAN, config.max_query_span.seconds):
                mid = start + max(step, floor_to((end - start) // 2, step))  # as GenesysProvider._fetch_span
                for s, e in ((start, end), (start, mid), (mid, end)):
                    bodies.append((f"{describe(config)} {s}..{e}", query_body(s, e, config)))
    return bodies


def predicates(body: dict[str, Any]) -> list[dict[str, Any]]:
    spec = body.get("filter")
    if spec is None:
        return []
    return [*spec.get("predicates", []), *(p for clause in spec.get("clauses", []) for p in clause["predicates"])]


def test_the_combinations_cover_every_shape_of_body() -> None:
    bodies = [body for _, body in all_bodies()]
    shapes = {"none" if "filter" not in b else b["filter"]["type"] for b in bodies}
    assert shapes == {"none", "or", "and"}  # no filter, one `or` clause, an `and` of two `or` clauses
    assert {tuple(b["groupBy"]) for b in bodies} == {tuple(DIMENSIONS[g] for g in gb) for gb in GROUP_BYS}
    assert {b["granularity"] for b in bodies} == {"PT15M", "PT30M"}
    assert {tuple(b["metrics"]) for b in bodies} == {tuple(metric_names(gb)) for gb in GROUP_BYS}


def test_every_query_body_has_only_fields_and_values_the_sdk_knows() -> None:
    for where, body in all_bodies():
        assert_sdk_agrees(body, "ConversationAggregationQuery", where)


def test_the_sdk_would_send_every_body_as_we_do() -> None:
    """Through AnalyticsApi.post_analytics_conversations_aggregates_query: same method, path and JSON."""
    client, stub = sdk_client({"results": []})
    api = SDK.AnalyticsApi(client)
    for where, body in all_bodies():
        reply = api.post_analytics_conversations_aggregates_query(to_sdk(body, "ConversationAggregationQuery"))
        sent = stub.requests[-1]
        assert (sent.method, sent.url, sent.query_params) == ("POST", API + AGGREGATES_PATH, {}), where
        assert sent.body == body, where
        assert type(reply).__name__ == "ConversationAggregateQueryResponse"


def test_every_metric_is_in_the_sdks_metric_enums() -> None:
    sent = {m for _, body in all_bodies() for m in body["metrics"]}
    assert sent == set(metric_names(["media_type", "queue"])) | set(metric_names(["agent"]))
    read = set(provider_module._STATS)  # every metric the parser reads
    for enum_name, enum in METRIC_ENUMS.items():
        assert sent | read <= set(enum), f"not in the SDK's {enum_name}: {sorted((sent | read) - set(enum))}"
        assert "tHold" not in enum  # docs/providers/genesys.md: seed 004's tHold does not exist; tHeldComplete does


def test_every_group_by_and_filter_dimension_is_in_the_sdks_dimension_enum() -> None:
    assert set(DIMENSIONS.values()) <= set(DIMENSION_ENUM)
    filter_types = _enum(MODELS.ConversationAggregateQueryFilter, "type")
    clause_types = _enum(MODELS.ConversationAggregateQueryClause, "type")
    predicate_types = _enum(MODELS.ConversationAggregateQueryPredicate, "type")
    operators = _enum(MODELS.ConversationAggregateQueryPredicate, "operator")
    for where, body in all_bodies():
        assert set(body["groupBy"]) <= set(DIMENSION_ENUM), where
        spec = body.get("filter")
        if spec is not None:
            assert spec["type"] in filter_types, where
            assert all(c["type"] in clause_types for c in spec.get("clauses", [])), where
        for p in predicates(body):
            assert p["dimension"] in DIMENSION_ENUM, where
            assert p["type"] in predicate_types and p["operator"] in operators, where


def test_media_types_and_queues_are_sent_as_configured() -> None:
    """The filter values are the configured ones, untouched; the media types used here are the SDK's."""
    assert all(m in MEDIA_TYPE_ENUM for f in MEDIA_FILTERS for m in f)
    for config in all_configs():
        body = query_body(*SPAN, config)
        sent = [(p["dimension"], p["value"]) for p in predicates(body)]
        wanted = [("mediaType", m) for m in config.media_types] + [("queueId", q) for q in config.queues]
        assert sent == wanted, describe(config)


def test_a_media_type_the_sdk_does_not_know_is_a_config_error(tmp_path: Path) -> None:
    """`call` (the Genesys UI's word for voice) is not in the SDK's mediaType enum (AnalyticsSession.media_type);
    sent as a filter, the API would answer a 400 or silently no data (which, unverified). The config accepts
    exactly the SDK's values, and says which they are."""
    assert "call" not in MEDIA_TYPE_ENUM
    assert set(provider_module.MEDIA_TYPES) == set(MEDIA_TYPE_ENUM)
    path = tmp_path / "aht.yaml"
    path.write_text(
        "sources:\n  - {name: g, provider: genesys, region: mypurecloud.ie, client_id: i, client_secret: s,"
        " media_types: [call]}\n"
    )
    with pytest.raises(ConfigError, match="media_types") as caught:
        load_config(path)
    assert str(caught.value).endswith(
        f"sources[0].media_types[0]: 'call' is not a Genesys media type (use {', '.join(MEDIA_TYPE_ENUM)})"
    )


_PERIOD = re.compile(r"^P(?:\d+[YMWD])*(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")


def test_interval_and_granularity_are_the_iso_8601_forms_the_sdk_documents() -> None:
    """The SDK: interval "YYYY-MM-DDThh:mm:ss/YYYY-MM-DDThh:mm:ss", granularity a period "P1D or P1DT12H"."""
    docs = MODELS.ConversationAggregationQuery
    assert "ISO-8601" in (docs.interval.__doc__ or "") and "ISO-8601" in (docs.granularity.__doc__ or "")
    for where, body in all_bodies():
        start, end = body["interval"].split("/")
        first, last = datetime.fromisoformat(start), datetime.fromisoformat(end)
        assert start.endswith("Z") and end.endswith("Z") and first < last, where
        assert _PERIOD.match(body["granularity"]), where
        bucket_minutes = int(body["granularity"][2:-1])
        assert body["granularity"] == f"PT{bucket_minutes}M" and bucket_minutes in (15, 30), where


# --- the HTTP path sends exactly those bodies, chunked and halved ----------------------------------------

QUERY_URL = API + AGGREGATES_PATH


def _too_large_over(hours: int) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        start, end = (parse_iso(t) for t in json.loads(request.content)["interval"].split("/"))
        if end - start > hours * 3600:
            error = {"message": "Query interval is too large", "code": "bad.request", "status": 400}
            return httpx.Response(400, json={**error, "contextId": "ctx-1", "details": [], "errors": []})
        return httpx.Response(200, json=fixture("genesys_aggregates_queue_media.json"))

    return answer


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"group_by": ["agent"], "bucket": "15m", "media_types": ["voice", "chat"], "queues": [QUEUE_1]},
        {"group_by": ["queue", "agent", "media_type"], "queues": [QUEUE_1, QUEUE_2], "max_query_span": "12h"},
    ],
    ids=["default", "agent-15m-filtered", "all-labels-12h"],
)
async def test_fetch_sends_the_built_bodies_chunked_and_halved(overrides: dict[str, Any]) -> None:
    config = genesys_config(**overrides)
    provider = GenesysProvider(config, SourceHealth("genesys-eu", "genesys", 3), sleep=RecordingSleep())
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(f"{LOGIN}/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 86400})
        )
        query = mock.post(QUERY_URL).mock(side_effect=_too_large_over(hours=5))
        await provider.fetch(*SPAN)
    await provider.aclose()
    sent = [json.loads(call.request.content) for call in query.calls]
    assert len(sent) > len(chunks(*SPAN, config.max_query_span.seconds))  # some were halved
    for body in sent:
        start, end = (round(parse_iso(t)) for t in body["interval"].split("/"))
        assert body == query_body(start, end, config)
        assert_sdk_agrees(body, "ConversationAggregationQuery", f"{describe(config)} {body['interval']}")


# --- every reply we parse, through the SDK's deserializer ------------------------------------------------


def _model_for(name: str, payload: Any) -> str:
    """The SDK model a Genesys fixture is an instance of, from its shape."""
    if isinstance(payload, dict) and "results" in payload:
        return "ConversationAggregateQueryResponse"
    if isinstance(payload, dict) and "interval" in payload and "metrics" in payload:
        return "ConversationAggregationQuery"
    if isinstance(payload, dict) and "entities" in payload and ("queue" in name or "user" in name):
        return "QueueEntityListing" if "queue" in name else "UserEntityListing"
    if isinstance(payload, dict) and {"code", "message"} & set(payload):
        return "ErrorBody"
    raise AssertionError(f"{name}: which SDK model is this? Teach _model_for, so the fixture is checked too")


GENESYS_FIXTURES = sorted(p.name for p in FIXTURES.glob("genesys_*.json"))
AGGREGATE_FIXTURES = [n for n in GENESYS_FIXTURES if "results" in fixture(n)]


def test_the_fixture_sets_are_found() -> None:
    assert {"genesys_aggregates_queue_media.json", "genesys_seed000_response.json"} <= set(AGGREGATE_FIXTURES)
    assert {"genesys_sdk_routing_queues_page.json", "genesys_sdk_users_page.json"} <= set(GENESYS_FIXTURES)


@pytest.mark.parametrize("name", GENESYS_FIXTURES)
def test_every_genesys_fixture_deserializes_into_its_sdk_model_without_losing_a_key(name: str) -> None:
    payload = fixture(name)
    assert_sdk_agrees(payload, _model_for(name, payload), name)


@pytest.mark.parametrize("name", AGGREGATE_FIXTURES)
def test_sdk_round_tripped_replies_parse_to_the_same_buckets(name: str) -> None:
    payload = fixture(name)
    client, _ = sdk_client(payload)
    # The reply as an SDK user would get it from the API call, serialized back to JSON.
    reply = SDK.AnalyticsApi(client).post_analytics_conversations_aggregates_query(
        to_sdk(
            {"interval": "2026-03-02T09:00:00Z/2026-03-02T10:00:00Z", "metrics": ["tHandle"]},
            "ConversationAggregationQuery",
        )
    )
    through_sdk = from_sdk(reply)
    for group_by in GROUP_BYS:
        assert parse_aggregates(through_sdk, group_by) == parse_aggregates(payload, group_by), (name, group_by)
    assert parse_aggregates(through_sdk, ["media_type", "queue"])  # not trivially empty


def _encoded_fields(struct: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def _json_keys(type_name: str) -> set[str]:
    return set(getattr(MODELS, type_name)().attribute_map.values())


def test_every_reply_field_the_parser_reads_is_in_the_sdks_models() -> None:
    reads = {
        "ConversationAggregateQueryResponse": _encoded_fields(provider_module._Reply)
        - {"code", "message", "contextId"},
        "ErrorBody": {"code", "message", "contextId"},  # _Reply's error fields, and error_text()'s
        "ConversationAggregateDataContainer": _encoded_fields(provider_module._Result),
        "StatisticalResponse": _encoded_fields(provider_module._Data),
        "AggregateMetricData": _encoded_fields(provider_module._Metric),
        "StatisticalSummary": _encoded_fields(provider_module._Stats),
        # _entity_names(): entities[].id/name and pageCount
        "QueueEntityListing": {"entities", "pageCount"},
        "UserEntityListing": {"entities", "pageCount"},
        "Queue": {"id", "name"},
        "User": {"id", "name"},
    }
    assert _encoded_fields(provider_module._Reply) >= {"results", "code", "message", "contextId"}
    for type_name, keys in reads.items():
        assert keys <= _json_keys(type_name), f"{type_name} has no {sorted(keys - _json_keys(type_name))}"
    # The group is dict(str, str): the parser's "a dimension must be a string" is the SDK's type.
    assert MODELS.ConversationAggregateDataContainer().swagger_types["group"] == "dict(str, str)"


# --- the names endpoints ---------------------------------------------------------------------------------


def _sdk_query_parameters(method: Callable[..., Any]) -> dict[str, str]:
    """The SDK method's keyword -> the query parameter it sends."""
    found = re.findall(r"query_params\['(\w+)'\] = params\['(\w+)'\]", inspect.getsource(method))
    return {snake: camel for camel, snake in found}


def test_the_sdk_lists_the_names_endpoints_query_parameters() -> None:
    """Recorded from the SDK; what the provider sends (pageSize, pageNumber) is a subset of each."""
    queues = _sdk_query_parameters(SDK.RoutingApi.get_routing_queues)
    users = _sdk_query_parameters(SDK.UsersApi.get_users)
    assert {"page_size": "pageSize", "page_number": "pageNumber"}.items() <= queues.items()
    assert {"page_size": "pageSize", "page_number": "pageNumber"}.items() <= users.items()
    # GET /api/v2/users also takes `state` ("Only list users of this state"); the provider does not send it,
    # so it relies on the API's default for which users (and so which agents' names) are listed.
    assert users["state"] == "state"
    assert {"name", "id", "division_id"} <= set(queues)


@pytest.mark.asyncio
async def test_names_requests_are_the_ones_the_sdk_sends() -> None:
    queues_page, users_page = fixture("genesys_sdk_routing_queues_page.json"), fixture("genesys_sdk_users_page.json")
    queues_page = {**queues_page, "pageCount": 2}  # two pages, so pageNumber moves
    provider = GenesysProvider(
        genesys_config(group_by=["queue", "agent"]), SourceHealth("genesys-eu", "genesys", 3), sleep=RecordingSleep()
    )
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(f"{LOGIN}/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 86400})
        )
        queues = mock.get(f"{API}/api/v2/routing/queues").mock(return_value=httpx.Response(200, json=queues_page))
        users = mock.get(f"{API}/api/v2/users").mock(return_value=httpx.Response(200, json=users_page))
        names = await provider.names()
    await provider.aclose()
    assert names.queues == {e["id"]: e["name"] for e in queues_page["entities"]}
    assert names.agents == {e["id"]: e["name"] for e in users_page["entities"]}

    client, stub = sdk_client(queues_page)
    for call in queues.calls:
        page = int(call.request.url.params["pageNumber"])
        listing = SDK.RoutingApi(client).get_routing_queues(page_size=100, page_number=page)
        sdk_request = stub.requests[-1]
        assert sdk_request.method == call.request.method == "GET"
        assert sdk_request.url == str(call.request.url.copy_with(query=None))
        assert {k: str(v) for k, v in sdk_request.query_params.items()} == dict(call.request.url.params)
        assert {e.id: e.name for e in listing.entities} == names.queues
    client, stub = sdk_client(users_page)
    for call in users.calls:
        listing = SDK.UsersApi(client).get_users(page_size=100, page_number=int(call.request.url.params["pageNumber"]))
        assert stub.requests[-1].url == str(call.request.url.copy_with(query=None))
        assert {k: str(v) for k, v in stub.requests[-1].query_params.items()} == dict(call.request.url.params)
        assert {e.id: e.name for e in listing.entities} == names.agents


@pytest.mark.asyncio
async def test_the_token_request_is_the_one_the_sdk_sends() -> None:
    provider = GenesysProvider(genesys_config(), SourceHealth("genesys-eu", "genesys", 3), sleep=RecordingSleep())
    with respx.mock(assert_all_mocked=True) as mock:
        token = mock.post(f"{LOGIN}/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": 86400})
        )
        mock.post(QUERY_URL).mock(return_value=httpx.Response(200, json={}))
        await provider.fetch(NINE - 3600, NINE)
    await provider.aclose()
    ours = token.calls[0].request

    client, stub = sdk_client({"access_token": "sdk-issued", "token_type": "bearer", "expires_in": 86400})
    client.get_client_credentials_token("client-123", SECRET)
    theirs = stub.requests[-1]
    assert client.access_token == "sdk-issued"  # the SDK reads `access_token`, as ClientCredentialsAuth does
    assert (theirs.method, theirs.url) == (ours.method, str(ours.url))
    assert theirs.headers["Authorization"] == ours.headers["Authorization"]
    assert theirs.headers["Content-Type"] == ours.headers["Content-Type"]
    assert httpx.QueryParams(ours.content.decode()) == httpx.QueryParams(theirs.post_params)


# --- the simulator's replies -----------------------------------------------------------------------------

SIM_NOW = 1767268800  # 2026-01-01T12:00:00Z


@pytest.mark.asyncio
async def test_the_simulators_replies_are_what_the_sdk_deserializes() -> None:
    workload = Workload(seed=11, queues=4, agents=12)
    simulator = GenesysSimulator(workload, FakeClock(SIM_NOW), rate_limit_per_minute=100_000)
    await simulator.start()
    try:
        async with httpx.AsyncClient(base_url=simulator.base_url) as http:
            login = await http.post(
                TOKEN_PATH, auth=("demo-client", "demo-secret"), data={"grant_type": "client_credentials"}
            )
            assert {"access_token", "expires_in"} <= set(login.json())
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            queue_ids = [q for q, _ in workload.queues]
            # Every grouping (each in one order: the order only orders the group's keys), bucket and filter shape.
            for group_by in (list(c) for n in range(len(LABELS) + 1) for c in combinations(LABELS, n)):
                for bucket in ("15m", "30m"):
                    for media_types, queues in (([], []), (["voice"], []), (["voice", "chat"], queue_ids[:2])):
                        config = genesys_config(
                            group_by=group_by, bucket=bucket, media_types=media_types, queues=queues
                        )
                        body = query_body(SIM_NOW - 3600, SIM_NOW, config)
                        reply = await http.post(AGGREGATES_PATH, json=body, headers=auth)
                        assert reply.status_code == 200, (describe(config), reply.text)
                        payload = reply.json()
                        assert payload["results"], describe(config)
                        model = assert_sdk_agrees(payload, "ConversationAggregateQueryResponse", describe(config))
                        assert parse_aggregates(from_sdk(model), group_by) == parse_aggregates(payload, group_by)
            for path, listing in ((QUEUES_PATH, "QueueEntityListing"), (USERS_PATH, "UserEntityListing")):
                page = await http.get(path, params={"pageSize": 100, "pageNumber": 1}, headers=auth)
                assert_sdk_agrees(page.json(), listing, path)
            errors = [
                await http.post(AGGREGATES_PATH, json={"interval": "2026-01-01T00:00:00Z/2026-01-01T01:00:00Z"}),
                await http.post(AGGREGATES_PATH, json={"metrics": ["tHandle"]}, headers=auth),
                await http.get("/api/v2/nowhere", headers=auth),
            ]
            assert [e.status_code for e in errors] == [401, 400, 404]
            for error in errors:
                assert_sdk_agrees(error.json(), "ErrorBody", f"{error.request.method} {error.request.url.path}")
    finally:
        await simulator.stop()
