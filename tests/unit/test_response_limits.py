"""No vendor reply is read past `max_response_size`, on the wire or decompressed, whoever reads it (issue 12).

The fakes make their bodies as they are read and count what they made: an endless body, a gzip bomb
(4 GiB of zeros, a few MB on the wire), a reply that lies about its length. What the reader took before
stopping is that count, not a guess from memory use. Replies nested 100,000 levels deep, and other
bodies no decoder can read, fail the poll with a ProviderError naming the endpoint.
"""

from __future__ import annotations

import gc
import gzip
import weakref
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from aht_exporter.clock import FakeClock
from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient, json_body
from aht_exporter.model import ProviderError
from aht_exporter.providers.genesys import GenesysProvider
from aht_exporter.providers.koreai import KoreAIProvider
from aht_exporter.providers.liveperson import LivePersonProvider
from aht_exporter.providers.ozonetel import OzonetelConfig, OzonetelProvider
from aht_exporter.registry import build_config
from aht_exporter.timebuckets import parse_iso
from tests.helpers import RecordingSleep
from tests.unit.genesys_config import API, LOGIN, genesys_config
from tests.unit.test_koreai_config import CALLVOLUME, koreai_config
from tests.unit.test_liveperson_config import liveperson_config

URL = "https://api.example.com/v1/data"
LIMIT = 1 << 20  # 1 MiB: the bound these tests set, so that each reads a few MiB at most
CHUNK = 64 << 10  # what a socket read hands over at a time (httpcore reads 64 KiB)
MIB = 1 << 20
INFLATE_STEP = MIB  # the most the client inflates per decompressor call
# A fake that has handed over this much knows the reader ignored the bound: it fails the test rather
# than feed a reader that would go on until the host's memory is gone.
CEILING = 16 * MIB
DEEP = b"[" * 100_000 + b"]" * 100_000

NINE = int(parse_iso("2026-03-02T09:00:00Z"))
GENESYS_TOKEN = f"{LOGIN}/oauth/token"
GENESYS_QUERY = f"{API}/api/v2/analytics/conversations/aggregates/query"


def too_large(where: str, how: str, limit: str = "1MiB") -> str:
    return (
        f"{where}: response larger than max_response_size {limit} ({how}); raise it in the config if this is expected"
    )


class Endless(httpx.AsyncByteStream):
    """A 200 body that never ends, made as it is read: `sent` is every byte handed to the reader."""

    def __init__(self, chunk: bytes = b"x" * CHUNK) -> None:
        self.chunk = chunk
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self.sent > CEILING:
                raise AssertionError(f"the reader went on past {self.sent} bytes")
            self.sent += len(self.chunk)
            yield self.chunk

    async def aclose(self) -> None:
        self.closed = True


class Bomb(httpx.AsyncByteStream):
    """`total` zero bytes compressed as they are read (gzip, deflate, or gzip inside gzip), 1 MiB per
    chunk: `fed` counts the zeros compressed so far, so what the reader inflated is at most that."""

    def __init__(self, coding: str = "gzip", total: int = 4 << 30) -> None:
        wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15, "gzip, gzip": 31}[coding]
        self.layers = [zlib.compressobj(9, zlib.DEFLATED, wbits)]
        if coding == "gzip, gzip":
            self.layers.append(zlib.compressobj(9, zlib.DEFLATED, 31))
        self.total = total
        self.fed = 0
        self.sent = 0
        self.closed = False

    def _through(self, data: bytes, flush: int) -> bytes:
        for layer in self.layers:
            data = layer.compress(data) + layer.flush(flush)
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        block = bytes(MIB)
        while self.fed < self.total:
            if self.fed > CEILING:
                raise AssertionError(f"the reader inflated {self.fed} bytes and went on")
            self.fed += len(block)
            out = self._through(block, zlib.Z_SYNC_FLUSH)  # a chunk now, not when the compressor's buffer fills
            self.sent += len(out)
            yield out
        yield self._through(b"", zlib.Z_FINISH)

    async def aclose(self) -> None:
        self.closed = True


class Chunks(httpx.AsyncByteStream):
    """A finite body handed over in `size`-byte pieces, as a socket would."""

    def __init__(self, body: bytes, size: int = 1000) -> None:
        self.body = body
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.size):
            yield self.body[i : i + self.size]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


def client(limit: int = LIMIT) -> ApiClient:
    api = ApiClient(counter=SourceHealth("s", "genesys", 3), timeout=5)
    api.max_response_bytes = limit  # as Provider sets it from the source's max_response_size
    return api


def assert_plain_get(route: respx.Route) -> None:
    """The request as sent: one GET, asking only for the codings the client can bound."""
    assert route.call_count == 1
    request = route.calls[0].request
    assert (request.method, str(request.url)) == ("GET", URL)
    assert request.headers["Accept-Encoding"] == "gzip, deflate"
    assert request.content == b""


# --- the bound, at the HTTP client ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_endless_body_stops_just_past_max_response_size_and_names_it(mock: respx.MockRouter) -> None:
    body = Endless()
    route = mock.get(URL).mock(return_value=httpx.Response(200, stream=body))
    api = client()

    with pytest.raises(ProviderError) as info:
        await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert str(info.value) == too_large("data request to api.example.com GET /v1/data", "on the wire")
    assert LIMIT < body.sent <= LIMIT + CHUNK  # stopped at the first chunk past the bound
    assert body.closed  # and the connection given up, not drained
    assert_plain_get(route)


@pytest.mark.asyncio
@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "gzip, gzip"])
async def test_a_compression_bomb_stops_just_past_max_response_size_decompressed(
    mock: respx.MockRouter, coding: str
) -> None:
    bomb = Bomb(coding)
    encoding = "deflate" if coding == "raw-deflate" else coding
    route = mock.get(URL).mock(return_value=httpx.Response(200, headers={"Content-Encoding": encoding}, stream=bomb))
    api = client()

    with pytest.raises(ProviderError) as info:
        await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert str(info.value) == too_large("data request to api.example.com GET /v1/data", "decompressed")
    # 4 GiB on offer; the reader inflated one 1 MiB chunk past the bound, a step at a time.
    assert bomb.fed <= LIMIT + MIB + INFLATE_STEP
    assert bomb.sent < 64 << 10 and bomb.closed
    assert_plain_get(route)


@pytest.mark.asyncio
async def test_a_declared_length_over_the_bound_fails_before_a_byte_is_read(mock: respx.MockRouter) -> None:
    body = Endless()
    headers = {"Content-Length": str(200 * MIB)}
    route = mock.get(URL).mock(return_value=httpx.Response(200, headers=headers, stream=body))
    api = client()

    with pytest.raises(ProviderError) as info:
        await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert str(info.value) == too_large("data request to api.example.com GET /v1/data", f"Content-Length {200 * MIB}")
    assert body.sent == 0 and body.closed
    assert_plain_get(route)


@pytest.mark.asyncio
async def test_an_error_reply_is_bounded_too(mock: respx.MockRouter) -> None:
    body = Endless()
    route = mock.get(URL).mock(return_value=httpx.Response(500, stream=body))
    api = client()

    with pytest.raises(ProviderError) as info:
        await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert str(info.value) == too_large("data request to api.example.com GET /v1/data", "on the wire")
    assert body.sent <= LIMIT + CHUNK
    assert_plain_get(route)  # a reply too large is not retried: the next one would be as large


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # raw deflate, which some servers send
        ("gzip, gzip", lambda b: gzip.compress(gzip.compress(b))),
        ("identity", lambda b: b),
    ],
)
async def test_a_compressed_reply_within_the_bound_reads_whole(
    mock: respx.MockRouter, coding: str, encode: Any
) -> None:
    payload = b'{"entities": [' + b",".join(b'{"id": "q%d"}' % i for i in range(20_000)) + b"]}"
    assert len(payload) > 256 << 10  # decoded in many steps, from many chunks
    headers = {"Content-Encoding": coding}
    route = mock.get(URL).mock(return_value=httpx.Response(200, headers=headers, stream=Chunks(encode(payload))))
    api = client()

    response = await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert response.content == payload
    assert json_body(response, "entities")["entities"][-1] == {"id": "q19999"}
    assert_plain_get(route)


@pytest.mark.asyncio
async def test_a_reply_exactly_at_the_bound_is_read(mock: respx.MockRouter) -> None:
    route = mock.get(URL).mock(return_value=httpx.Response(200, stream=Chunks(b"7" * LIMIT, CHUNK)))
    api = client()

    response = await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert len(response.content) == LIMIT
    assert_plain_get(route)


@pytest.mark.asyncio
async def test_a_read_response_is_freed_as_soon_as_it_is_dropped(mock: respx.MockRouter) -> None:
    """No reference cycle keeps a response, and the reply it read, until a full garbage collection: at
    100,000 agents that was several 30 MB replies freed by one collection, with the GIL held. With the
    collector off, the response goes the moment the last reference to it does."""
    mock.get(URL).mock(return_value=httpx.Response(200, stream=Chunks(b"7" * (3 * CHUNK), CHUNK)))
    api = client()
    gc.collect()
    gc.disable()
    try:
        response = await api.request("GET", URL, endpoint="data")
        assert len(response.content) == 3 * CHUNK and response.is_closed
        gone = weakref.ref(response)
        del response
        assert gone() is None
    finally:
        gc.enable()
    await api.aclose()


class UnboundedDecoder:
    """What httpx would use for `br` or `zstd` with their packages installed: a decoder with no bound."""

    def decode(self, data: bytes) -> bytes:
        raise AssertionError("httpx decoded the body itself")

    def flush(self) -> bytes:
        return b""


@pytest.mark.asyncio
@pytest.mark.parametrize("coding", ["br", "zstd"])
async def test_a_coding_the_client_cannot_bound_is_never_handed_to_httpx(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, coding: str
) -> None:
    """Never asked for (Accept-Encoding), and if sent anyway, read as it came, within the bound."""
    monkeypatch.setitem(httpx._decoders.SUPPORTED_DECODERS, coding, UnboundedDecoder)
    body = Endless()
    route = mock.get(URL).mock(return_value=httpx.Response(200, headers={"Content-Encoding": coding}, stream=body))
    api = client()

    with pytest.raises(ProviderError) as info:
        await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert str(info.value) == too_large("data request to api.example.com GET /v1/data", "on the wire")
    assert body.sent <= LIMIT + CHUNK
    assert_plain_get(route)


@pytest.mark.asyncio
async def test_a_body_that_is_not_the_gzip_it_claims_fails_the_request(mock: respx.MockRouter) -> None:
    headers = {"Content-Encoding": "gzip"}
    route = mock.get(URL).mock(return_value=httpx.Response(200, headers=headers, stream=Chunks(b"not gzip at all")))
    api = client()

    with pytest.raises(
        ProviderError,
        match=r"^data request to api\.example\.com GET /v1/data: response body is not valid gzip \(Error -3",
    ):
        await api.request("GET", URL, endpoint="data")
    await api.aclose()
    assert_plain_get(route)


@pytest.mark.asyncio
async def test_the_default_bound_is_64_mib_from_the_config_into_the_client() -> None:
    provider = GenesysProvider(genesys_config(), SourceHealth("g", "genesys", 3), sleep=RecordingSleep())
    assert provider.client.max_response_bytes == 64 * MIB
    assert ApiClient(counter=SourceHealth("s", "genesys", 3), timeout=5).max_response_bytes == 64 * MIB
    await provider.aclose()


# --- the bound, from the config, in every provider and its token requests ----------------------------------------


@pytest.mark.asyncio
async def test_a_genesys_token_endpoint_cannot_send_an_endless_body(mock: respx.MockRouter) -> None:
    body = Endless()
    token = mock.post(GENESYS_TOKEN).mock(return_value=httpx.Response(200, stream=body))
    query = mock.post(GENESYS_QUERY)
    provider = GenesysProvider(
        genesys_config(max_response_size="64KiB"), SourceHealth("g", "genesys", 3), sleep=RecordingSleep()
    )
    assert provider.client.max_response_bytes == 64 << 10

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, NINE + 3600)
    await provider.aclose()

    assert str(info.value) == too_large(
        "token request to login.mypurecloud.ie POST /oauth/token", "on the wire", "64KiB"
    )
    assert body.sent <= (64 << 10) + CHUNK and body.closed
    assert token.call_count == 1 and token.calls[0].request.content == b"grant_type=client_credentials"
    assert token.calls[0].request.headers["Authorization"].startswith("Basic ")
    assert not query.called


@pytest.mark.asyncio
async def test_a_401_the_auth_flow_reads_itself_is_bounded(mock: respx.MockRouter) -> None:
    """The OAuth flow reads a 401's body before asking for a new token: that read is bounded too."""
    mock.post(GENESYS_TOKEN).mock(return_value=httpx.Response(200, json={"access_token": "t" * 20}))
    bomb = Bomb("gzip")
    query = mock.post(GENESYS_QUERY).mock(
        return_value=httpx.Response(401, headers={"Content-Encoding": "gzip"}, stream=bomb)
    )
    provider = GenesysProvider(
        genesys_config(max_response_size="1MiB"), SourceHealth("g", "genesys", 3), sleep=RecordingSleep()
    )

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, NINE + 3600)
    await provider.aclose()

    assert str(info.value) == too_large(
        "data request to api.mypurecloud.ie POST /api/v2/analytics/conversations/aggregates/query", "decompressed"
    )
    assert bomb.fed <= LIMIT + MIB + INFLATE_STEP and bomb.closed
    assert query.call_count == 1 and query.calls[0].request.headers["Authorization"] == "Bearer " + "t" * 20


@pytest.mark.asyncio
async def test_a_liveperson_sentinel_token_endpoint_cannot_send_an_endless_body(mock: respx.MockRouter) -> None:
    sentinel = "https://va.sentinel.liveperson.net"
    token_url = sentinel + "/sentinel/api/v2/account/12345678/app/token"
    body = Endless()
    token = mock.post(token_url).mock(return_value=httpx.Response(200, stream=body))
    config = liveperson_config(sentinel_url=sentinel, base_url="https://va.data.liveperson.net")
    provider = LivePersonProvider(
        config, SourceHealth("lp", "liveperson", 3), clock=FakeClock(NINE), sleep=RecordingSleep()
    )
    provider.client.max_response_bytes = LIMIT

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE - 600, NINE)
    await provider.aclose()

    assert str(info.value) == too_large(
        "token request to va.sentinel.liveperson.net POST /sentinel/api/v2/account/12345678/app/token", "on the wire"
    )
    assert body.sent <= LIMIT + CHUNK and body.closed
    assert token.call_count == 1
    assert "grant_type=client_credentials" in token.calls[0].request.content.decode()  # v2: in the form body


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_ozonetel_token_endpoint_cannot_send_an_endless_body(mock: respx.MockRouter) -> None:
    base = "https://in1-ccaas-api.ozonetel.com"
    body = Endless()
    token = mock.post(f"{base}/ca_apis/CAToken/generateToken").mock(return_value=httpx.Response(200, stream=body))
    aht = mock.post(f"{base}/ca_apis/aht")
    raw = {"name": "oz", "provider": "ozonetel", "user_name": "acme", "api_key": "oz-key-Q7w9e2Lm", "agents": ["a1"]}
    config = build_config({"sources": [raw | {"max_response_size": "64KiB"}]}, "t.yaml", {}).sources[0]
    assert isinstance(config, OzonetelConfig)
    provider = OzonetelProvider(config, SourceHealth("oz", "ozonetel", 3), sleep=RecordingSleep())

    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    await provider.aclose()

    assert str(info.value) == too_large(
        "token request to in1-ccaas-api.ozonetel.com POST /ca_apis/CAToken/generateToken", "on the wire", "64KiB"
    )
    assert body.sent <= (64 << 10) + CHUNK and body.closed
    assert token.call_count == 1 and token.calls[0].request.headers["apiKey"] == "oz-key-Q7w9e2Lm"
    assert not aht.called


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_koreai_reply_is_bounded_by_its_config(mock: respx.MockRouter) -> None:
    bomb = Bomb("gzip")
    route = mock.post(CALLVOLUME).mock(
        return_value=httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=bomb)
    )
    provider = KoreAIProvider(
        koreai_config(max_response_size="1MiB"),
        SourceHealth("k", "koreai", 3),
        clock=FakeClock(parse_iso("2023-06-01T10:07:00Z")),
        sleep=RecordingSleep(),
    )

    with pytest.raises(ProviderError) as info:
        await provider.fetch(int(parse_iso("2023-06-01T09:45:00Z")), int(parse_iso("2023-06-01T10:00:00Z")))
    await provider.aclose()

    assert str(info.value) == too_large(
        f"data request to platform.kore.ai POST {httpx.URL(CALLVOLUME).path}", "decompressed"
    )
    assert bomb.fed <= LIMIT + MIB + INFLATE_STEP and bomb.closed
    assert route.call_count == 1 and route.calls[0].request.headers["auth"].startswith("eyJ")


# --- replies no decoder can read ----------------------------------------------------------------------------


def test_json_nested_100000_levels_deep_is_a_provider_error_naming_the_endpoint() -> None:
    response = httpx.Response(200, content=DEEP, request=httpx.Request("GET", URL))
    with pytest.raises(ProviderError) as info:
        json_body(response, "/api/v2/routing/queues")
    assert str(info.value) == "/api/v2/routing/queues: response is nested too deeply to be JSON we read (HTTP 200)"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\xff\xfe\x00\xd8", "response is not JSON (HTTP 200, '\ufffd\ufffd\\x00\ufffd')"),  # not UTF-anything
        (b"", "response is not JSON (HTTP 200, '')"),
        (b'{"a": NaN', "response is not JSON (HTTP 200, '{\"a\": NaN')"),
    ],
)
def test_any_other_undecodable_reply_is_a_provider_error(content: bytes, expected: str) -> None:
    response = httpx.Response(200, content=content, request=httpx.Request("GET", URL))
    with pytest.raises(ProviderError) as info:
        json_body(response, "names")
    assert str(info.value) == f"names: {expected}"


@pytest.mark.asyncio
async def test_an_error_reply_nested_too_deeply_for_the_vendor_reader_still_gives_its_start(
    mock: respx.MockRouter,
) -> None:
    """Genesys' error reader parses the body: a RecursionError there must not replace the HTTP error."""
    route = mock.post(GENESYS_QUERY).mock(return_value=httpx.Response(400, content=DEEP))
    mock.post(GENESYS_TOKEN).mock(return_value=httpx.Response(200, json={"access_token": "t" * 20}))
    provider = GenesysProvider(genesys_config(), SourceHealth("g", "genesys", 3), sleep=RecordingSleep())

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, NINE + 3600)
    await provider.aclose()

    assert str(info.value).startswith(
        "data request to api.mypurecloud.ie POST /api/v2/analytics/conversations/aggregates/query: HTTP 400: [[[["
    )
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_a_token_reply_nested_too_deeply_is_a_provider_error(mock: respx.MockRouter) -> None:
    mock.post(GENESYS_TOKEN).mock(return_value=httpx.Response(200, content=DEEP))
    provider = GenesysProvider(genesys_config(), SourceHealth("g", "genesys", 3), sleep=RecordingSleep())

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE, NINE + 3600)
    await provider.aclose()

    assert str(info.value) == (
        "token request to login.mypurecloud.ie POST /oauth/token: token response has no usable access_token/expires_in"
    )


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_a_koreai_reply_nested_too_deeply_around_the_slow_down_text_is_a_provider_error(
    mock: respx.MockRouter,
) -> None:
    """Kore's "slow down" check parses any reply that mentions the text: nesting must not crash it."""
    text = b'"You\'ve exceeded the per-minute rate limit. Please wait for sometime before retrying."'
    route = mock.post(CALLVOLUME).mock(return_value=httpx.Response(200, content=b"[" * 100_000 + text))
    provider = KoreAIProvider(
        koreai_config(), SourceHealth("k", "koreai", 3), clock=FakeClock(NINE), sleep=RecordingSleep()
    )

    with pytest.raises(ProviderError) as info:
        await provider.fetch(NINE - 900, NINE)
    await provider.aclose()

    assert str(info.value) == (
        f"data request to platform.kore.ai POST {httpx.URL(CALLVOLUME).path}: "
        "callvolume response: Expected `object`, got `array`"  # msgspec reads no further than the first `[`
    )
    assert route.call_count == 1


@pytest.mark.asyncio
@pytest.mark.looptime
async def test_an_ozonetel_reply_nested_too_deeply_is_a_provider_error(mock: respx.MockRouter) -> None:
    base = "https://in1-ccaas-api.ozonetel.com"
    mock.post(f"{base}/ca_apis/CAToken/generateToken").mock(
        return_value=httpx.Response(200, json={"token": "tok-abcdef-123456", "message": ""})
    )
    aht = mock.post(f"{base}/ca_apis/aht").mock(return_value=httpx.Response(200, content=DEEP))
    raw = {"name": "oz", "provider": "ozonetel", "user_name": "acme", "api_key": "oz-key-Q7w9e2Lm", "agents": ["a1"]}
    config = build_config({"sources": [raw]}, "t.yaml", {}).sources[0]
    assert isinstance(config, OzonetelConfig)
    provider = OzonetelProvider(config, SourceHealth("oz", "ozonetel", 3), sleep=RecordingSleep())

    with pytest.raises(ProviderError) as info:
        await provider.fetch_averages()
    await provider.aclose()

    assert (
        str(info.value) == "data request to in1-ccaas-api.ozonetel.com "
        "POST /ca_apis/aht for agent 'a1': response is nested too deeply to be JSON we read (HTTP 200)"
    )
    assert aht.call_count == 1


@pytest.mark.asyncio
async def test_an_error_reply_in_a_charset_python_lacks_still_gives_its_text(mock: respx.MockRouter) -> None:
    headers = {"Content-Type": "text/plain; charset=no-such-charset"}
    route = mock.get(URL).mock(return_value=httpx.Response(403, headers=headers, content=b"forbidden here"))
    api = client()

    with pytest.raises(ProviderError) as info:
        await api.request("GET", URL, endpoint="data")
    await api.aclose()

    assert str(info.value) == "data request to api.example.com GET /v1/data: HTTP 403: forbidden here"
    assert_plain_get(route)
