"""LivePerson's two ways in: OAuth 1.0a app keys (signed by oauthlib) and the OAuth 2.0 sentinel token request.

Facts, tags and sources: docs/providers/liveperson.md, "Authentication".
- [doc] OAuth 1.0a "API key" apps sign every request with HMAC-SHA1 over the method, the URL and every
  query parameter (RFC 5849); LivePerson ended these keys on 31 May 2026.
- [doc] The replacement is OAuth 2.0 client credentials at the `sentinel` service, reply
  `{access_token, token_type: Bearer[, expires_in]}`. Sentinel has two token APIs, V1 and V2
  (https://developers.liveperson.com/oauth-2-0-client-credentials.html), and the page restricts V1 to the
  Connector API, so V2 is what a data API such as engactivity should be given: `token_version` picks the
  request, see `TOKEN_REQUESTS`.
- [doc] `client_id` and `client_secret` travel in the form body, as the OAuth 2.0 page shows for both versions
  (only the Connector API's "Get AppJWT" table puts them in the query): a secret never goes in a URL, which
  ends up in proxy and access logs. LivePerson's own Functions client does the same
  (LivePersonInc/faas-client-node, src/helper/appJwtAuthentication.ts: simple-oauth2 with
  `authorizationMethod: 'body'`).
- [unverified] Whether engactivity accepts a sentinel token of either version: the provider says what to try
  next when it refuses one (`refused_token_advice`).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx
from oauthlib import oauth1
from pydantic import SecretStr

TokenVersion = Literal["v2", "v2-query", "v1"]


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One form of the sentinel token request: its path, its query, and whether `grant_type` is in the body."""

    path: str
    query: Mapping[str, str]
    grant_type_in_body: bool


# The token requests LivePerson documents, by `token_version` (docs/providers/liveperson.md, "Authentication"):
TOKEN_REQUESTS: Mapping[TokenVersion, TokenRequest] = {
    # [doc] API V2 exactly as the OAuth 2.0 client-credentials page writes it, and as the delegated token
    # request page does too: the default, because that page is where LivePerson defines the two versions
    # and says V1 "can only be used for Connector API".
    "v2": TokenRequest("/sentinel/api/v2/account/{account}/app/token", {}, grant_type_in_body=True),
    # [doc] V2 the way LivePerson's own Functions client asks for it (faas-client-node,
    # appJwtAuthentication.ts: `/sentinel/api/account/{accountId}/app/token?v=2.0`, the rest in the body),
    # as does the OAuth 2.0 page's Postman step. Kept for a tenant whose sentinel refuses the `/v2/` path.
    "v2-query": TokenRequest("/sentinel/api/account/{account}/app/token", {"v": "2.0"}, grant_type_in_body=True),
    # [doc] V1, the Connector API's "Get AppJWT" request: `v=1.0` and `grant_type` in the query.
    "v1": TokenRequest(
        "/sentinel/api/account/{account}/app/token",
        {"v": "1.0", "grant_type": "client_credentials"},
        grant_type_in_body=False,
    ),
}
DEFAULT_TOKEN_VERSION: TokenVersion = "v2"
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
    sentinel_url: str,
    account_id: str,
    client_id: str,
    client_secret: SecretStr,
    token_version: TokenVersion = DEFAULT_TOKEN_VERSION,
) -> httpx.Request:
    """The client-credentials token request: the secret travels in the form body, never in the URL."""
    form = TOKEN_REQUESTS[token_version]
    data = {"client_id": client_id, "client_secret": client_secret.get_secret_value()}
    if form.grant_type_in_body:
        data["grant_type"] = "client_credentials"
    return httpx.Request(
        "POST",
        sentinel_url.rstrip("/") + form.path.format(account=account_id),
        params=dict(form.query),
        data=data,
    )


def refused_token_advice(token_version: TokenVersion) -> str:
    """What to try when engactivity refuses a token sentinel issued: the other requests, then OAuth 1.0."""
    others = [version for version in TOKEN_REQUESTS if version != token_version]
    return (
        f"engactivity refused the OAuth 2.0 token from sentinel (token_version {token_version}): "
        f"try token_version: {' or '.join(others)}, or OAuth 1.0 keys (auth: oauth1) if your account still has "
        "them; see docs/providers/liveperson.md"
    )
