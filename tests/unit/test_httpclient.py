"""The one HTTP client every provider uses: what it puts in an error when a vendor echoes a credential."""

import httpx
import pytest
import respx

from aht_exporter.health import SourceHealth
from aht_exporter.httpclient import ApiClient, scrub_credentials
from aht_exporter.model import ProviderError

URL = "https://api.example.com/v1/data"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.runtime-token.sig"


@pytest.mark.asyncio
async def test_a_vendor_echoing_the_refused_token_does_not_put_it_in_the_error() -> None:
    with respx.mock(assert_all_called=True) as mock:
        mock.get(URL).mock(return_value=httpx.Response(403, json={"message": f"token {TOKEN} lacks a permission"}))
        client = ApiClient(counter=SourceHealth("s", "genesys", 3), timeout=1)
        with pytest.raises(ProviderError) as info:
            await client.request(
                "GET", URL, endpoint="data", headers={"Authorization": f"Bearer {TOKEN}", "apiKey": "k3y-0f-the-api"}
            )
        await client.aclose()
    assert TOKEN not in str(info.value)
    assert (
        str(info.value)
        == 'data request to api.example.com GET /v1/data: HTTP 403: {"message":"token <redacted> lacks a permission"}'
    )


def test_every_credential_header_is_scrubbed_and_short_words_are_left_alone() -> None:
    request = httpx.Request(
        "POST", URL, headers={"auth": "kore.jwt.value", "apiKey": "oz-api-key-1", "Authorization": "Basic Zm9v"}
    )
    text = "auth kore.jwt.value, key oz-api-key-1, basic Zm9v"
    assert scrub_credentials(text, request) == "auth <redacted>, key <redacted>, basic Zm9v"
