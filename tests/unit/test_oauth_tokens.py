"""Client-credentials tokens, counted: `on_token` is called once for each token the token endpoint issues.

The count feeds `aht_exporter_tokens_issued_total`. A cached token, a refused token request and a reply
without a usable token issue none; a refresh before expiry and a new token after a 401 issue one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import respx

from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient
from aht_exporter.model import ProviderError
from aht_exporter.oauth import ClientCredentialsAuth
from aht_exporter.redact import RuntimeSecrets
from tests.helpers import RecordingSleep

TOKEN_URL = "https://login.example.com/oauth/token"
DATA_URL = "https://api.example.com/v1/data"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token_request() -> httpx.Request:
    return httpx.Request("POST", TOKEN_URL, data={"grant_type": "client_credentials"})


def issued(token: str, expires_in: int = 3600) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "token_type": "bearer", "expires_in": expires_in})


def client(health: SourceHealth, clock: Clock) -> tuple[ApiClient, ClientCredentialsAuth]:
    """A source's client as the providers build it, its token counted on `health`; retries never wait."""
    secrets = RuntimeSecrets()
    auth = ClientCredentialsAuth(
        token_request, monotonic=clock, runtime_secrets=secrets, on_token=health.count_token_issued
    )
    api = ApiClient(counter=health, timeout=5, auth=auth, sleep=RecordingSleep(), runtime_secrets=secrets)
    return api, auth


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as m:
        yield m


@pytest.fixture
def health() -> SourceHealth:
    return SourceHealth("genesys-eu", "genesys", 3)


@pytest.mark.asyncio
async def test_the_first_token_is_counted_once_and_the_cached_token_not_again(
    mock: respx.MockRouter, health: SourceHealth
) -> None:
    token = mock.post(TOKEN_URL).mock(return_value=issued("tok-1"))
    data = mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    api, _ = client(health, Clock())

    for _ in range(3):
        await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()

    assert token.call_count == 1 and data.call_count == 3
    assert health.tokens_issued == 1
    assert data.calls[-1].request.headers["Authorization"] == "Bearer tok-1"


@pytest.mark.asyncio
async def test_a_token_refreshed_before_it_expires_is_counted_again(
    mock: respx.MockRouter, health: SourceHealth
) -> None:
    mock.post(TOKEN_URL).mock(side_effect=[issued("tok-1"), issued("tok-2")])
    data = mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    clock = Clock()
    api, _ = client(health, clock)

    await api.request("GET", DATA_URL, endpoint="data")
    clock.now += 3600 - 300  # a tenth of the lifetime before expiry, at most five minutes: refresh due
    await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()

    assert health.tokens_issued == 2
    assert data.calls[-1].request.headers["Authorization"] == "Bearer tok-2"


@pytest.mark.asyncio
async def test_a_401_that_brings_a_new_token_counts_both_tokens(mock: respx.MockRouter, health: SourceHealth) -> None:
    token = mock.post(TOKEN_URL).mock(side_effect=[issued("tok-1"), issued("tok-2")])
    mock.get(DATA_URL).mock(
        side_effect=[httpx.Response(401, json={"message": "expired"}), httpx.Response(200, json={})]
    )
    api, _ = client(health, Clock())

    await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()

    assert token.call_count == 2 and health.tokens_issued == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(401, json={"error": "invalid_client"}),
        httpx.Response(400, json={"error": "invalid_grant"}),
        httpx.Response(200, json={"token_type": "bearer"}),
        httpx.Response(200, json={"access_token": "", "expires_in": 3600}),
        httpx.Response(200, json={"access_token": 42}),
        httpx.Response(200, text="<html>maintenance</html>"),
    ],
    ids=["401", "400", "no-access-token", "empty-token", "token-not-a-string", "not-json"],
)
async def test_a_token_reply_without_a_usable_token_counts_none(
    mock: respx.MockRouter, health: SourceHealth, reply: httpx.Response
) -> None:
    mock.post(TOKEN_URL).mock(return_value=reply)
    data = mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    api, _ = client(health, Clock())

    with pytest.raises(ProviderError):
        await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()

    assert not data.called
    assert health.tokens_issued == 0


@pytest.mark.asyncio
async def test_a_token_request_retried_after_a_5xx_counts_only_the_token_issued(
    mock: respx.MockRouter, health: SourceHealth
) -> None:
    token = mock.post(TOKEN_URL).mock(side_effect=[httpx.Response(503), httpx.Response(502), issued("tok-1")])
    mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    api, _ = client(health, Clock())

    await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()

    assert token.call_count == 3
    # Every request, the token calls included, each under its endpoint.
    assert health.api_requests == {("token", "503"): 1, ("token", "502"): 1, ("token", "200"): 1, ("data", "200"): 1}
    assert health.tokens_issued == 1


@pytest.mark.asyncio
async def test_requests_that_wait_for_one_refresh_count_one_token(mock: respx.MockRouter, health: SourceHealth) -> None:
    token = mock.post(TOKEN_URL).mock(return_value=issued("tok-1"))
    mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    api, _ = client(health, Clock())

    await asyncio.gather(*(api.request("GET", DATA_URL, endpoint="data") for _ in range(5)))
    await api.aclose()

    assert token.call_count == 1 and health.tokens_issued == 1


@pytest.mark.asyncio
async def test_without_on_token_tokens_are_still_issued_and_nothing_is_counted(mock: respx.MockRouter) -> None:
    health = SourceHealth("lp", "liveperson", 3)
    token = mock.post(TOKEN_URL).mock(return_value=issued("tok-1"))
    data = mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    auth = ClientCredentialsAuth(token_request, runtime_secrets=RuntimeSecrets())
    api = ApiClient(counter=health, timeout=5, auth=auth, sleep=RecordingSleep(), runtime_secrets=RuntimeSecrets())

    await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()

    assert token.call_count == 1 and data.calls.last.request.headers["Authorization"] == "Bearer tok-1"
    assert health.tokens_issued == 0


# --- a token request's failure names itself and its host (issue 15) -----------------------------------------


@pytest.mark.asyncio
async def test_an_unreachable_login_host_is_reported_against_the_token_request(mock: respx.MockRouter) -> None:
    mock.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("[Errno -2] Name or service not known"))
    data = mock.get(DATA_URL).mock(return_value=httpx.Response(200, json={}))
    api, _ = client(SourceHealth("s", "genesys", 3), Clock())
    with pytest.raises(ProviderError) as info:
        await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()
    assert str(info.value) == (
        "token request to login.example.com POST /oauth/token: ConnectError: [Errno -2] Name or service not known"
    )
    assert not data.called


@pytest.mark.asyncio
async def test_a_token_request_that_times_out_is_not_blamed_on_the_data_path(mock: respx.MockRouter) -> None:
    mock.post("https://login.example.com:8443/oauth/token").mock(side_effect=httpx.ConnectTimeout("slow"))
    auth = ClientCredentialsAuth(lambda: httpx.Request("POST", "https://login.example.com:8443/oauth/token"))
    api = ApiClient(counter=SourceHealth("s", "genesys", 3), timeout=5, auth=auth, sleep=RecordingSleep())
    with pytest.raises(ProviderError) as info:
        await api.request("GET", DATA_URL, endpoint="data")
    await api.aclose()
    assert str(info.value) == "token request to login.example.com:8443 POST /oauth/token: timed out"
