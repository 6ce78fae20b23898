"""The one way providers talk HTTP: timeouts, one retry policy, request counting, vendor errors.

Retries follow providers.md "Common to all": 429, 5xx and connection errors are retried with
exponential backoff and jitter, honouring `Retry-After`, bounded in attempts and in total time, and
never past the poll's deadline. Everything else (400, 401 after the auth's own refresh, 403, 404)
fails at once with the vendor's own words.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from aht_exporter import __version__
from aht_exporter.model import ProviderError, RateLimited

log = logging.getLogger(__name__)

# httpx logs every request's full URL at INFO: keep it quiet so no URL ever reaches the log.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

Sleep = Callable[[float], Awaitable[None]]
ErrorText = Callable[[httpx.Response], str]
RateLimitSign = Callable[[httpx.Response], bool]


class RequestCounter(Protocol):
    def count_request(self, status: str) -> None: ...
    def count_rate_limited(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    initial_wait: float = 1.0
    max_wait: float = 30.0
    # A Retry-After beyond this is not waited out inside a poll: the next poll tries again.
    max_retry_after: float = 120.0
    # False: a "slow down" ends the request at once as RateLimited, for the provider to pause its whole
    # budget (Ozonetel: until the vendor's next minute) instead of retrying into the same minute.
    retry_rate_limited: bool = True


class Retryable(ProviderError):
    """A failure worth another try: 429, 5xx, or no response at all."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (RFC 9110 allows seconds or an HTTP date; vendors here send seconds)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def generic_error_text(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300] if text else response.reason_phrase


class ApiClient:
    """One per source: an `httpx.AsyncClient`, its counters and its retry policy."""

    def __init__(
        self,
        *,
        counter: RequestCounter,
        timeout: float,
        auth: httpx.Auth | None = None,
        error_text: ErrorText = generic_error_text,
        rate_limit_sign: RateLimitSign | None = None,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._counter = counter
        self._error_text = error_text
        self._rate_limit_sign = rate_limit_sign
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._deadline: float | None = None
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            auth=auth,
            transport=transport,
            headers={"User-Agent": f"aht-exporter/{__version__}"},
            event_hooks={"response": [self._on_response]},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def set_deadline(self, deadline: float | None) -> None:
        """A `time.monotonic()` instant after which no retry is started (the poll's own deadline)."""
        self._deadline = deadline

    async def _on_response(self, response: httpx.Response) -> None:
        # Sees every response, the auth flow's token requests included.
        self._counter.count_request(str(response.status_code))
        if response.status_code == 429:
            self._counter.count_rate_limited()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response whose body has been read, or raise ProviderError."""
        policy = self._policy
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Retryable),
            wait=self._wait,
            stop=stop_any(stop_after_attempt(policy.attempts), _StopPastDeadline(self)),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(method, url, **kwargs)
        except Retryable as exc:
            cls = RateLimited if exc.status == 429 else ProviderError
            raise cls(str(exc), status=exc.status) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity either returns or raises

    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        where = f"{method} {httpx.URL(url).path}"
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            self._counter.count_request("error")
            raise Retryable(f"{where}: timed out") from None
        except httpx.TransportError as exc:
            self._counter.count_request("error")
            raise Retryable(f"{where}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 429 or (self._rate_limit_sign is not None and self._rate_limit_sign(response)):
            if status != 429:
                self._counter.count_rate_limited()
            if not self._policy.retry_rate_limited:
                raise RateLimited(f"{where}: rate limited: {self._vendor_words(response)}", status=429)
            raise Retryable(
                f"{where}: rate limited: {self._vendor_words(response)}",
                status=429,
                retry_after=retry_after_seconds(response),
            )
        if status >= 500:
            raise Retryable(f"{where}: HTTP {status}: {self._vendor_words(response)}", status=status)
        if status >= 400:
            raise ProviderError(f"{where}: HTTP {status}: {self._vendor_words(response)}", status=status)
        return response

    def _vendor_words(self, response: httpx.Response) -> str:
        """The vendor's error text, with any credential this request carried cut out: a vendor that
        echoes the token it refused must not put it in our logs (the config's own secrets are redacted
        later; tokens are made at run time and known only here)."""
        return scrub_credentials(self._error_text(response), response.request)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return exc.retry_after
        backoff = wait_exponential_jitter(initial=self._policy.initial_wait, max=self._policy.max_wait)
        return float(backoff(state))

    def past_deadline(self, wait: float) -> bool:
        """Whether a retry after `wait` seconds would start too late to be worth it."""
        if wait > self._policy.max_retry_after:
            return True
        return self._deadline is not None and time.monotonic() + wait >= self._deadline


class _StopPastDeadline(stop_base):
    """Stop retrying when the next wait (already computed by tenacity) would overrun the poll."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._client.past_deadline(retry_state.upcoming_sleep)


# Headers that carry credentials: HTTP auth (Bearer, Basic, OAuth 1.0a), Kore.ai's `auth` JWT, Ozonetel's apiKey.
CREDENTIAL_HEADERS = ("authorization", "auth", "apikey")
_AUTH_SCHEME = re.compile(r"^(Bearer|Basic|OAuth)\s+", re.IGNORECASE)


def scrub_credentials(text: str, request: httpx.Request) -> str:
    """`text` with every credential `request` sent (whole header values, and their tokens) replaced."""
    for name in CREDENTIAL_HEADERS:
        value = request.headers.get(name)
        if not value:
            continue
        token = _AUTH_SCHEME.sub("", value)
        for secret in sorted({value, token}, key=len, reverse=True):
            if len(secret) >= 8:  # a fragment that short could be any word
                text = text.replace(secret, "<redacted>")
    return text


def json_body(response: httpx.Response, what: str) -> Any:
    """The parsed JSON body, or a ProviderError that says the vendor sent something else."""
    try:
        return response.json()
    except ValueError:
        raise not_json(response.content, response.status_code, what) from None


def not_json(raw: bytes, status: int, what: str) -> ProviderError:
    """The error for a body that is not JSON, with its first bytes (never a whole page in a log line)."""
    snippet = raw[:80].decode("utf-8", "replace").replace("\n", " ")
    return ProviderError(f"{what}: response is not JSON (HTTP {status}, {snippet!r})", status=status)
