"""LivePerson's two ways in: OAuth 1.0a app keys (signed by oauthlib) and the OAuth 2.0 sentinel token request.

- [doc] OAuth 1.0a "API key" apps sign every request with HMAC-SHA1 over the method, the URL and every
  query parameter (RFC 5849); LivePerson ends these keys on 31 May 2026 (providers.md).
- [doc] The replacement is OAuth 2.0 client credentials at the `sentinel` service (LivePerson "Connector
  API: Get AppJWT"): `POST /sentinel/api/account/{account}/app/token?v=1.0&grant_type=client_credentials`,
  reply `{access_token, token_type: Bearer[, expires_in]}`. That page puts `client_id` and `client_secret`
  in the query string too; we send them in the form body instead, because a secret never goes in a URL
  (URLs end up in proxy and access logs). LivePerson's own Functions client does the same
  (LivePersonInc/faas-client-node-, src/helper/appJwtAuthentication.ts: simple-oauth2 with
  `authorizationMethod: 'body'`). [unverified] that sentinel accepts it for every account, and that
  engactivity accepts the AppJWT at all (providers.md).
"""

from __future__ import annotations

from collections.abc import Generator

import httpx
from oauthlib import oauth1
from pydantic import SecretStr

TOKEN_PATH = "/sentinel/api/account/{account}/app/token"
# [doc sample] The AppJWT in LivePerson's example lives an hour (exp - iat = 3600 s); the v1 reply has no
# `expires_in`, so this is the lifetime assumed when none is given.
TOKEN_LIFETIME = 3600.0


class OAuth1Auth(httpx.Auth):
    """Signs each request with OAuth 1.0a HMAC-SHA1 in the Authorization header, by oauthlib.

    The signature covers the full URL, query included, so the request must be final when it is signed;
    httpx calls this once per attempt, and each retry gets a fresh nonce and timestamp. Only body-less
    requests (GET) are signed: engactivity is the only call made with this auth.
    """

    def __init__(self, consumer_key: SecretStr, consumer_secret: SecretStr, token: SecretStr, token_secret: SecretStr):
        self._client = oauth1.Client(
            consumer_key.get_secret_value(),
            client_secret=consumer_secret.get_secret_value(),
            resource_owner_key=token.get_secret_value(),
            resource_owner_secret=token_secret.get_secret_value(),
            signature_method=oauth1.SIGNATURE_HMAC_SHA1,
            signature_type=oauth1.SIGNATURE_TYPE_AUTH_HEADER,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.content:
            raise ValueError("OAuth1Auth signs body-less requests only")
        _, headers, _ = self._client.sign(str(request.url), http_method=request.method)
        request.headers["Authorization"] = str(headers["Authorization"])
        yield request


def sentinel_token_request(
    sentinel_url: str, account_id: str, client_id: str, client_secret: SecretStr
) -> httpx.Request:
    """The client-credentials token request: the secret travels in the form body, never in the URL."""
    return httpx.Request(
        "POST",
        sentinel_url.rstrip("/") + TOKEN_PATH.format(account=account_id),
        params={"v": "1.0", "grant_type": "client_credentials"},
        data={"client_id": client_id, "client_secret": client_secret.get_secret_value()},
    )
