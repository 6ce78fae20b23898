"""OAuth 2.0 client-credentials tokens as an httpx auth flow: cached, refreshed before expiry and once on 401.

httpx's own `Auth` hook is the maintained mechanism for this (it yields the token request through the
same client, so token calls are counted, bounded in size and retried like any other). The lock makes
sure two polls never refresh at once.

A token endpoint's reply is made to carry a credential: its error texts are scrubbed of what the request
sent (the Basic header, the form body's secret) and of anything that looks like a token, and a token,
once issued, is known to the runtime-secrets registry before it is first sent.

Each token issued is reported to `on_token` (the source's `SourceHealth.count_token_issued`), so that
`aht_exporter_tokens_issued_total` shows how often a source asks for a new one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

import httpx

from aht_exporter.httpclient import (
    ErrorText,
    Retryable,
    generic_error_text,
    retry_after_seconds,
    step_extensions,
    vendor_words,
    where,
)
from aht_exporter.model import ProviderError
from aht_exporter.redact import RUNTIME, RuntimeSecrets

TokenRequest = Callable[[], httpx.Request]


class ClientCredentialsAuth(httpx.Auth):
    def __init__(
        self,
        token_request: TokenRequest,
        *,
        error_text: ErrorText = generic_error_text,
        default_lifetime: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        runtime_secrets: RuntimeSecrets = RUNTIME,
        on_token: Callable[[], None] | None = None,
    ) -> None:
        self._token_request = token_request
        self._on_token = on_token
        self._runtime_secrets = runtime_secrets
        self._error_text = error_text
        self._default_lifetime = default_lifetime
        self._monotonic = monotonic
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    def _valid(self) -> bool:
        return self._token is not None and self._monotonic() < self._refresh_at

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._valid():
            async with self._lock:
                if not self._valid():  # another task may have refreshed while we waited
                    await self._accept((yield self._token_request_for_step()))
        used = self._token
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()
        # The token was revoked or expired early: fetch a new one, once, and replay.
        async with self._lock:
            if self._token == used:
                await self._accept((yield self._token_request_for_step()))
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def _token_request_for_step(self) -> httpx.Request:
        request = self._token_request()
        # Counted as the `token` endpoint; a failure names the token step and the login host.
        request.extensions = {**request.extensions, **step_extensions("token", "token")}
        return request

    async def _accept(self, response: httpx.Response) -> None:
        # Overriding async_auth_flow means reading the token response ourselves (within the client's bound:
        # its response hook has limited this body already).
        await response.aread()
        at = where(response.request)  # `token request to login.example.com POST /oauth/token`
        status = response.status_code
        if status == 429 or status >= 500:
            raise Retryable(
                f"{at}: HTTP {status}: {self._words(response)}",
                status=status,
                retry_after=retry_after_seconds(response),
            )
        if status != 200:
            raise ProviderError(f"{at}: HTTP {status}: {self._words(response)}", status=status)
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", self._default_lifetime))
        except (ValueError, KeyError, TypeError, RecursionError):
            # Never the body: a reply cut short may hold most of a token.
            raise ProviderError(f"{at}: token response has no usable access_token/expires_in") from None
        if not isinstance(token, str) or not token:
            raise ProviderError(f"{at}: token response has no usable access_token")
        self._runtime_secrets.add(token)
        self._token = token
        if self._on_token is not None:  # once per token issued: a refused or unusable reply issued none
            self._on_token()
        # Refresh a little before expiry: a tenth of the lifetime, at most five minutes.
        self._refresh_at = self._monotonic() + lifetime - min(300.0, lifetime / 10)

    def _words(self, response: httpx.Response) -> str:
        return vendor_words(self._error_text, response, token_endpoint=True)
