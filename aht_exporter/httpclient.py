"""The one way providers talk HTTP: timeouts, one retry policy, request counting, vendor errors.

Retries follow docs/providers/README.md "Common to every provider": 429, 5xx and connection errors are retried with
exponential backoff and jitter, honouring `Retry-After`, bounded in attempts and in total time, and
never past the poll's deadline. Everything else (400, 401 after the auth's own refresh, 403, 404)
fails at once with the vendor's own words.

No response is read past `max_response_bytes`, neither on the wire nor once decompressed, whoever
reads it: the client, an auth flow, or httpx itself. Every credential header sent is handed to
the runtime-secrets registry, so that an echo of it is masked wherever it turns up (redact.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import importlib
import io
import logging
import math
import os
import re
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl

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
from aht_exporter.health import Quota
from aht_exporter.model import ConfigError, ProviderError, RateLimited
from aht_exporter.pacing import Pacer
from aht_exporter.redact import MASK, RUNTIME, Redactor, RuntimeSecrets

log = logging.getLogger(__name__)

# httpx logs every request's full URL at INFO: keep it quiet so no URL ever reaches the log.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

# The most one response may be, on the wire and once decompressed, unless the source's `max_response_size`
# says otherwise (config.py): a hundred times the largest page any vendor here sends.
DEFAULT_MAX_RESPONSE_BYTES = 64 << 20
# Bytes a decompressor may produce per call: a gzip bomb's 64 KiB chunk would otherwise expand to 64 MiB
# at once, before any count could stop it.
INFLATE_STEP = 1 << 20
# An error text is made from the body's first bytes only (it is cut at 300 characters anyway).
ERROR_TEXT_BYTES = 4096
# Only what we can decompress within the bound: httpx would also offer br and zstd when their packages are
# installed, and decode them without one.
ACCEPT_ENCODING = "gzip, deflate"

Sleep = Callable[[float], Awaitable[None]]
ErrorText = Callable[[httpx.Response], str]
RateLimitSign = Callable[[httpx.Response], bool]


Step = Literal["token", "data", "names"]
"""What a request is for: a credential, the data of a poll, or the display names of queues and agents."""

STEP_EXTENSION = "aht_step"
ENDPOINT_EXTENSION = "aht_endpoint"
"""Every request carries its step and its endpoint in these request extensions (httpx passes unknown ones
through, to the event hooks and into a TransportError's request), the requests an auth flow sends of its own
(a token request) included: so a failure is reported against the request that failed, not the data request
that set it off, and each request is counted under its endpoint, a fixed name per provider (`token`,
`aggregates`, `queues`, ...: never a URL or an id, which would make the label's values unbounded)."""

UNNAMED_ENDPOINT = "other"
"""The endpoint of a request sent without one: no provider does, but a count must never be lost."""


_TLS: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The one TLS context every API client verifies with, as httpx makes it by default (certifi's CA
    bundle, or SSL_CERT_FILE / SSL_CERT_DIR). Made once, not once per client: loading the bundle is about 35
    ms in one C call that holds the GIL, which kept the event loop (and every scrape) waiting when the first
    poll made its client (docs/performance.md, "Event-loop stalls"). An SSLContext is safe to share."""
    return _TLS if _TLS is not None else reload_tls_context()


def reload_tls_context() -> ssl.SSLContext:
    """Read the CA bundle again (at start, and at each config reload, in a worker thread: a rotated CA is
    taken up by the sources the reload restarts or adds; a kept source's client keeps its context). The new
    context replaces the old in one assignment: a client made meanwhile gets one or the other, whole. A
    bundle that cannot be read is a ConfigError (one line, exit code 2 at start; a refused reload), and the
    context there was stays."""
    global _TLS
    try:
        _TLS = httpx.create_ssl_context()
    except OSError as exc:  # ssl.SSLError is one too
        where = "SSL_CERT_FILE or SSL_CERT_DIR" if {"SSL_CERT_FILE", "SSL_CERT_DIR"} & set(os.environ) else "certifi"
        raise ConfigError(f"the CA bundle ({where}) cannot be read: {exc}") from None
    return _TLS


# What the first request of the first poll would otherwise import, on the event loop, while scrapes wait:
# httpcore's connection code and anyio's, which anyio loads on first use (the asyncio backend is the module
# anyio.get_async_backend() imports). A name a later version moved is skipped: only the warm-up is lost.
_FIRST_REQUEST_MODULES = (
    "httpcore",
    "h11",
    "anyio",
    "anyio.abc",
    "anyio.lowlevel",
    "anyio.streams.tls",
    "anyio.to_thread",
    "anyio._backends._asyncio",
)


def warm_up() -> None:
    """Do at start what the first poll would otherwise do while the event loop serves: load the CA bundle
    and import the HTTP stack's modules (`cli.serve`, before it freezes start-up objects)."""
    tls_context()
    for name in _FIRST_REQUEST_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def step_extensions(step: Step, endpoint: str) -> dict[str, str]:
    return {STEP_EXTENSION: step, ENDPOINT_EXTENSION: endpoint}


def endpoint_of(request: httpx.Request) -> str:
    return str(request.extensions.get(ENDPOINT_EXTENSION, UNNAMED_ENDPOINT))


def where(request: httpx.Request) -> str:
    """`token request to login.example.com POST /oauth/token`: the step, the host (and a port it names), the
    path. Never the query string, nor a `user:password@` (httpx's netloc leaves it out)."""
    step = request.extensions.get(STEP_EXTENSION, "data")
    return f"{step} request to {request.url.netloc.decode('ascii', 'replace')} {request.method} {request.url.path}"


class RequestCounter(Protocol):
    def count_request(self, endpoint: str, status: str) -> None: ...
    def count_rate_limited(self) -> None: ...
    def record_quota(self, endpoint: str, quota: Quota | None) -> None: ...


QuotaReader = Callable[[httpx.Response, float], Quota | None]
"""The budget a vendor reports in a reply's headers (its own names for them), given the Unix time now."""


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


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """`Retry-After` in seconds (RFC 9110 allows seconds or an HTTP date; vendors here send seconds).
    `now`: the Unix time an HTTP date is counted from (the wall clock's, unless given)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def reported_quota(
    response: httpx.Response, now: float, vendor: QuotaReader | None, *, limited: bool = False
) -> Quota | None:
    """The budget a reply reports: the vendor's own headers, and for a "slow down" (a 429, or `limited`:
    the vendor's own form of it) that nothing is left, and its `Retry-After` as the time the budget comes
    back, the later of the two where both say."""
    quota = None
    if vendor is not None:
        try:
            quota = vendor(response, now)
        except Exception:  # a header the reader cannot read reports nothing; the reply itself still counts
            quota = None
    if response.status_code != 429 and not limited:
        return quota
    quota = quota or Quota()
    wait = retry_after_seconds(response, now)
    reset_at = quota.reset_at
    if wait is not None:
        reset_at = now + wait if reset_at is None else max(reset_at, now + wait)
    return Quota(limit=quota.limit, remaining=0.0, reset_at=reset_at)


def generic_error_text(response: httpx.Response) -> str:
    """The body's start as text (never the whole of a large body), or the reason phrase."""
    head = response.content[:ERROR_TEXT_BYTES]
    text = head.decode(_codec(response.encoding), "replace").strip().replace("\n", " ")
    return text[:300] if text else response.reason_phrase


class ResendOn401(httpx.Auth):
    """A 401 is answered once by sending the request again, after `refresh` (if any) renewed what signs it, as
    every provider does with its tokens; a second 401 stands. For a request signed as it leaves (Kore.ai's JWT,
    AWS's SigV4: `ApiClient`'s `sign`), the resent request carries a new signature."""

    def __init__(self, refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self._refresh = refresh

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        response = yield request
        if response.status_code != 401:
            return
        await response.aread()
        if self._refresh is not None:
            await self._refresh()
        yield request


def vendor_error_text(response: httpx.Response, *, message: Callable[[Mapping[str, Any]], str | None]) -> str:
    """The vendor's words from a JSON error body, found by the provider's `message`, as one line of at most
    300 characters; the body's start when it is not JSON, holds no words `message` knows, or is too deep."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    words = message(body) if isinstance(body, dict) else None
    if words:
        return " ".join(words.split())[:300]
    return generic_error_text(response)


def _codec(name: str | None) -> str:
    """A charset Python knows: a vendor's `charset=bogus` must not turn its error into a crash."""
    try:
        return codecs.lookup(name or "utf-8").name
    except LookupError:
        return "utf-8"


class ApiClient:
    """One per source: an `httpx.AsyncClient`, its counters, its retry policy and its response bound."""

    def __init__(
        self,
        *,
        counter: RequestCounter,
        timeout: float,
        auth: httpx.Auth | None = None,
        error_text: ErrorText = generic_error_text,
        rate_limit_sign: RateLimitSign | None = None,
        quota_reader: QuotaReader | None = None,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        runtime_secrets: RuntimeSecrets = RUNTIME,
        pacer: Pacer | None = None,
        sign: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        self._counter = counter
        self._error_text = error_text
        self._rate_limit_sign = rate_limit_sign
        self._quota_reader = quota_reader
        # Public: Provider sets it to its clock's `now`, for the Unix time a budget resets.
        self.wall: Callable[[], float] = time.time
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._deadline: float | None = None
        # Public: Provider sets it from the source's `max_response_size`, whichever provider made the client.
        self.max_response_bytes = max_response_bytes
        self.runtime_secrets = runtime_secrets
        self._pacer = pacer
        self._sign = sign
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            auth=auth,
            transport=transport,
            verify=tls_context(),
            headers={"User-Agent": f"aht-exporter/{__version__}", "Accept-Encoding": ACCEPT_ENCODING},
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def set_deadline(self, deadline: float | None) -> None:
        """A `time.monotonic()` instant after which no retry is started (the poll's own deadline)."""
        self._deadline = deadline

    async def _on_request(self, request: httpx.Request) -> None:
        # Sees every request as sent (retries, the auth flow's token calls and 401 re-sends included): it
        # waits for its turn in the account's budget, is signed after the wait (a signature's time is when
        # it leaves), and the credentials it carries are known from now on, so that a vendor echoing one
        # (in any reply, of any status) is masked.
        if self._pacer is not None:
            await self._pacer.wait_turn()
        if self._sign is not None:
            self._sign(request)
        for value in sent_credentials(request):
            self.runtime_secrets.add(value)

    async def _on_response(self, response: httpx.Response) -> None:
        # Sees every response, the auth flow's token requests included, before anything reads its body.
        endpoint = endpoint_of(response.request)
        self._counter.count_request(endpoint, str(response.status_code))
        self._counter.record_quota(endpoint, reported_quota(response, self.wall(), self._quota_reader))
        if response.status_code == 429:
            self._counter.count_rate_limited()
        limit_body(response, self.max_response_bytes)

    async def request(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        step: Step = "data",
        token_endpoint: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response whose body has been read, or raise ProviderError.

        `endpoint` names the request in `aht_exporter_api_requests_total` (a fixed name per provider) and
        `step` says, with the host, in every error text what failed: `data request to api.example.com ...`.
        `token_endpoint`: the reply may hold a credential, so long credential-like runs are masked in
        the error text made of it.
        """
        kwargs["extensions"] = {**kwargs.get("extensions", {}), **step_extensions(step, endpoint)}
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
                    return await self._send_once(method, url, token_endpoint, **kwargs)
        except Retryable as exc:
            cls = RateLimited if exc.status == 429 else ProviderError
            raise cls(str(exc), status=exc.status) from None
        raise AssertionError("unreachable")  # pragma: no cover - tenacity either returns or raises

    async def _send_once(self, method: str, url: str, token_endpoint: bool, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            what = "timed out" if isinstance(exc, httpx.TimeoutException) else f"{type(exc).__name__}: {exc}"
            # The request that got no answer: an auth flow's own (a token request, to the login host) is
            # reported against itself, not against the data path that set it off.
            failed = _failed_request(exc) or httpx.Request(method, url, extensions=kwargs["extensions"])
            self._counter.count_request(endpoint_of(failed), "error")
            raise Retryable(f"{where(failed)}: {what}") from None
        at = where(response.request)
        status = response.status_code
        if status == 429 or self._signals_rate_limit(response):
            if status != 429:  # the response hook saw a reply like any other: it was a "slow down"
                self._counter.count_rate_limited()
                spent = reported_quota(response, self.wall(), self._quota_reader, limited=True)
                self._counter.record_quota(endpoint_of(response.request), spent)
            words = vendor_words(self._error_text, response, token_endpoint=token_endpoint)
            if not self._policy.retry_rate_limited:
                raise RateLimited(f"{at}: rate limited: {words}", status=429)
            raise Retryable(f"{at}: rate limited: {words}", status=429, retry_after=retry_after_seconds(response))
        if status >= 400:
            words = vendor_words(self._error_text, response, token_endpoint=token_endpoint)
            cls = Retryable if status >= 500 else ProviderError
            raise cls(f"{at}: HTTP {status}: {words}", status=status)
        return response

    def _signals_rate_limit(self, response: httpx.Response) -> bool:
        if self._rate_limit_sign is None:
            return False
        try:
            return self._rate_limit_sign(response)
        except Exception:  # a reply the sign cannot read (too deep, bad charset) is not a "slow down"
            return False

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


# --- credentials in error texts -----------------------------------------------------------------------------

# Headers that carry credentials: HTTP auth (Bearer, Basic, OAuth 1.0a), Kore.ai's `auth` JWT, Ozonetel's apiKey.
CREDENTIAL_HEADERS = ("authorization", "auth", "apikey")
_AUTH_SCHEME = re.compile(r"^(Bearer|Basic|OAuth)\s+", re.IGNORECASE)
# Form fields that carry a credential (OAuth 2.0 client credentials, RFC 6749 2.3.1 and 4.4; RFC 7523).
_SECRET_FIELD = re.compile(r"secret|password|token|assertion", re.IGNORECASE)
# A run of token characters this long, with letters and digits, is taken for a credential in a token
# endpoint's reply: such a reply is made to carry one, and may be cut off before we could parse it.
_CREDENTIAL_RUN = re.compile(r"[A-Za-z0-9._~+/=-]{24,}")
# The shortest credential value masked in an error: a fragment that short could be any word.
MIN_CREDENTIAL = 8


def sent_credentials(request: httpx.Request) -> list[str]:
    """The credentials `request` carries: each credential header's token (the value less its scheme), a
    Basic credential's password, and the secret fields of a form body. An OAuth 1.0a header is left out:
    its signature is single-use (a nonce) and the keys inside are the config's, masked anyway."""
    out: list[str] = []
    for name in CREDENTIAL_HEADERS:
        value = request.headers.get(name)
        if not value:
            continue
        scheme = _AUTH_SCHEME.match(value)
        kind = scheme.group(1).lower() if scheme else None
        token = value[scheme.end() :] if scheme else value
        if kind != "oauth":
            out.append(token)
        if kind == "basic":
            out += _basic_password(token)
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            body = request.content.decode("utf-8", "replace")
        except httpx.RequestNotRead:  # a streamed body: none of ours
            body = ""
        out += [v for k, v in parse_qsl(body) if _SECRET_FIELD.search(k)]
    return [v for v in out if len(v) >= MIN_CREDENTIAL]


def _basic_password(token: str) -> list[str]:
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return []
    return [decoded.partition(":")[2]]


def scrub_credentials(text: str, request: httpx.Request) -> str:
    """`text` with every credential `request` sent masked, in any form (raw, URL-encoded, base64, a piece),
    an OAuth 1.0a header's whole value included."""
    oauth1 = [v for v in (request.headers.get(n, "") for n in CREDENTIAL_HEADERS) if v.lower().startswith("oauth ")]
    return Redactor([*oauth1, *sent_credentials(request)], runtime=None, min_length=MIN_CREDENTIAL)(text)


def mask_credential_runs(text: str) -> str:
    """`text` with every long run of token characters that mixes letters and digits masked."""

    def masked(m: re.Match[str]) -> str:
        run = m.group(0)
        credential_like = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        return MASK if credential_like else run

    return _CREDENTIAL_RUN.sub(masked, text)


def vendor_words(error_text: ErrorText, response: httpx.Response, *, token_endpoint: bool = False) -> str:
    """The vendor's error text, with any credential the request carried cut out: a vendor that echoes
    the token it refused must not put it in our logs. A reply the provider's reader cannot read (nested
    too deeply, a charset Python lacks) gives the body's start instead of an exception."""
    try:
        text = error_text(response)
    except Exception:
        text = generic_error_text(response)
    text = scrub_credentials(text, response.request)
    return mask_credential_runs(text) if token_endpoint else text


# --- JSON ---------------------------------------------------------------------------------------------------


def json_body(response: httpx.Response, what: str, *, snippet: bool = True) -> Any:
    """The parsed JSON body, or a ProviderError that says the vendor sent something else.

    `snippet=False` for a reply that may hold a credential (a token endpoint's): its start is not shown.
    """
    try:
        return response.json()
    except RecursionError:  # the decoder's own depth limit: a reply nested 100,000 levels deep
        raise ProviderError(
            f"{what}: response is nested too deeply to be JSON we read (HTTP {response.status_code})",
            status=response.status_code,
        ) from None
    except ValueError:  # UnicodeDecodeError included
        raise not_json(response.content, response.status_code, what, snippet=snippet) from None


def not_json(raw: bytes, status: int, what: str, *, snippet: bool = True) -> ProviderError:
    """The error for a body that is not JSON, with its first bytes (never a whole page in a log line)."""
    if not snippet:
        return ProviderError(f"{what}: response is not JSON (HTTP {status}; not shown: it may hold a credential)")
    shown = raw[:80].decode("utf-8", "replace").replace("\n", " ")
    return ProviderError(f"{what}: response is not JSON (HTTP {status}, {shown!r})", status=status)


# --- the response bound -------------------------------------------------------------------------------------


def size_text(size: int) -> str:
    """A byte count as the config writes it: `64MiB`, `512KiB`, or a number of bytes."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"


def _failed_request(exc: httpx.TransportError) -> httpx.Request | None:
    try:
        return exc.request
    except RuntimeError:  # httpx raises it for an exception that came without its request
        return None


def too_large(request: httpx.Request, status: int, limit: int, how: str) -> ProviderError:
    return ProviderError(
        f"{where(request)}: response larger than max_response_size {size_text(limit)} ({how}); "
        "raise it in the config if this is expected",
        status=status,
    )


def limit_body(response: httpx.Response, limit: int) -> None:
    """Make every later read of `response` stop past `limit` bytes, on the wire or decompressed.

    The body is then read through `_LimitedBody`, which does the decompressing itself, a step at a time
    (the Content-Encoding header is taken off, so that httpx does not decode it again, without a bound).
    A declared Content-Length over the limit fails at once, before a byte is read.
    """
    if response.is_stream_consumed:  # built in memory (a test double): only its size is left to check
        if len(response.content) > limit:
            raise too_large(response.request, response.status_code, limit, "in memory")
        return
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(response.request, response.status_code, limit, f"Content-Length {declared}")
    encodings = response.headers.get_list("content-encoding", split_commas=True)
    if "content-encoding" in response.headers:
        del response.headers["content-encoding"]
    assert isinstance(response.stream, httpx.AsyncByteStream)
    response.stream = _LimitedBody(response, response.stream, limit, encodings)


class _Inflater:
    """One gzip or deflate layer, inflated at most INFLATE_STEP bytes per call (httpx's own decoders
    have no bound). Deflate is zlib-wrapped or, as some servers send it, raw: httpx accepts both."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._raw_fallback = encoding == "deflate"
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            out = self._decompress(data)
            data = self._inflate.unconsumed_tail
            if out:
                yield out
            # A full step may leave output pending inside zlib: ask again, with no new input.
            if self._inflate.eof or (not data and len(out) < INFLATE_STEP):
                return

    def _decompress(self, data: bytes) -> bytes:
        try:
            out = self._inflate.decompress(data, INFLATE_STEP)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._inflate.decompress(data, INFLATE_STEP)
        self._raw_fallback = False  # only the stream's start can tell the two apart
        return out

    def flush(self) -> bytes:
        # All input is consumed and pending output drained (feed), so this is at most a truncated tail.
        return self._inflate.flush()


_CLOSED = httpx.ByteStream(b"")  # what a closed `_LimitedBody` reads from: nothing


class _LimitedBody(httpx.AsyncByteStream):
    """A response body read within `limit`: counted on the wire, decompressed a step at a time, counted
    again at every layer, and stopped (the connection closed) as soon as a count passes the limit.

    The decoded body is gathered in one buffer and handed over whole: httpx's `aread` joins a single
    chunk without copying it, so the body is held once, not in pieces plus their join.

    It holds the request and status it names in errors, not the response, and lets go of the stream under
    it once closed: httpx's own stream refers back to the response, and so did this one, so that every
    response, with the reply it read (30 MB at 100,000 agents), lived on until a full garbage collection
    found the cycle, which then freed several at once with the GIL held (docs/performance.md, "Straight
    to millionths"). Without the cycle a response goes as soon as the provider lets go of it.
    """

    def __init__(self, response: httpx.Response, raw: httpx.AsyncByteStream, limit: int, encodings: list[str]):
        self._request = response.request
        self._status = response.status_code
        self._raw = raw
        self._limit = limit
        # Content-Encoding lists the codings in the order applied: undone last to first. One we do not
        # know is passed through, as httpx does; we never offer one (ACCEPT_ENCODING).
        known = [e.strip().lower() for e in reversed(encodings)]
        self._layers = [_Inflater(e) for e in known if e in ("gzip", "deflate")]
        self._counts = [0] * len(self._layers)
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body = io.BytesIO()
        wire = 0
        try:
            async for chunk in self._raw:
                wire += len(chunk)
                if wire > self._limit:
                    raise too_large(self._request, self._status, self._limit, "on the wire")
                for out in self._decode(chunk, 0):
                    body.write(out)
            for out in self._flush(0):
                body.write(out)
        except BaseException:
            await self.aclose()
            raise
        yield body.getvalue()

    def _decode(self, data: bytes, layer: int) -> Iterator[bytes]:
        if layer == len(self._layers):
            yield data
            return
        inflater = self._layers[layer]
        try:
            for out in inflater.feed(data):
                yield from self._counted(out, layer)
        except zlib.error as exc:
            raise ProviderError(
                f"{where(self._request)}: response body is not valid {inflater.encoding} ({exc})",
                status=self._status,
            ) from None

    def _counted(self, out: bytes, layer: int) -> Iterator[bytes]:
        self._counts[layer] += len(out)
        if self._counts[layer] > self._limit:
            raise too_large(self._request, self._status, self._limit, "decompressed")
        yield from self._decode(out, layer + 1)

    def _flush(self, layer: int) -> Iterator[bytes]:
        """What each layer holds back at the end, passed through the layers after it."""
        if layer == len(self._layers):
            return
        tail = self._layers[layer].flush()
        if tail:
            yield from self._counted(tail, layer)
        yield from self._flush(layer + 1)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            raw, self._raw = self._raw, _CLOSED  # httpx's stream refers to the response: no cycle through us
            await raw.aclose()
