"""Fault injection for the simulators: every way a vendor API can let the exporter down.

Each simulator owns a `FaultInjector` built from its `VendorForms` (how that vendor says "error" and
which fields its parser needs) and installs `injector.middleware`. A test, or `--demo.fault`, then says
`inject(Fault.HTTP_503, count=3)`; `count=None` keeps the fault until `clear()`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web


class Fault(StrEnum):
    TIMEOUT = "timeout"  # accept the request, never answer it
    RESET = "reset"  # drop the connection without an answer
    HTTP_500 = "500"
    HTTP_502 = "502"
    HTTP_503 = "503"
    RATE_LIMITED = "429"  # with Retry-After
    RATE_LIMITED_BARE = "429-bare"  # without Retry-After
    UNAUTHORIZED = "401"  # until the client fetches a new token (unless injected `sticky`: until cleared)
    TRUNCATED = "truncated"  # half a JSON body
    NOT_JSON = "not-json"  # an HTML page from a proxy, status 200
    MISSING_FIELD = "missing-field"  # schema change: a field the parser needs is gone
    WRONG_TYPE = "wrong-type"  # schema change: numbers became strings
    EXTRA_FIELDS = "extra-fields"  # schema change: new fields nobody asked for (must be survived)
    ERROR_IN_200 = "error-in-200"  # the vendor's own error body with HTTP 200
    SLOW = "slow"  # answer, but only after `seconds`
    # Hostile vendors (issue 12): each of these once froze, crashed or exhausted the exporter.
    ENDLESS_BODY = "endless-body"  # a 200 whose body never ends (the simulator stops at 1 GiB)
    GZIP_BOMB = "gzip-bomb"  # 256 KiB of gzip inflating to 256 MiB
    DEEP_JSON = "deep-json"  # JSON nested 100,000 levels deep
    HOSTILE_TEXT = "hostile-text"  # a 400 whose text holds a lone surrogate, control characters and markup
    HUGE_NUMBER = "huge-number"  # the numeric field becomes 1.7e308
    NEGATIVE_NUMBER = "negative-number"  # the numeric field becomes -5


@dataclass(frozen=True)
class VendorForms:
    """How one vendor's API looks, for the faults that depend on it."""

    data_paths: tuple[str, ...]  # faults apply to these path prefixes
    token_paths: tuple[str, ...]  # a request here ends an UNAUTHORIZED fault
    essential_field: str  # MISSING_FIELD deletes this key wherever it appears
    numeric_field: str  # WRONG_TYPE turns this key's values into strings
    error_in_200: Mapping[str, Any]
    unauthorized: Mapping[str, Any]
    rate_limited: Mapping[str, Any] = field(default_factory=lambda: {"message": "rate limit exceeded"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultInjector:
    def __init__(self, forms: VendorForms) -> None:
        self.forms = forms
        self.fault: Fault | None = None
        self.remaining: int | None = None
        self.seconds = 3600.0
        self.sticky = False
        self.injected: Counter[Fault] = Counter()

    def inject(
        self, fault: Fault | str, count: int | None = None, *, seconds: float = 3600.0, sticky: bool = False
    ) -> None:
        """Fault the next `count` data requests (all of them while `count` is None). `sticky`: a 401 is not
        cured by a new token (a revoked client, not an expired token), so that the poll fails."""
        self.fault = Fault(fault)
        self.remaining = count
        self.seconds = seconds
        self.sticky = sticky

    def clear(self) -> None:
        self.fault, self.remaining, self.sticky = None, None, False

    def _take(self, request: web.Request) -> Fault | None:
        fault = self.fault
        if fault is None:
            return None
        if request.path.startswith(self.forms.token_paths):
            if fault is Fault.UNAUTHORIZED and not self.sticky:
                self.clear()  # the client re-authenticates: the "expired token" is replaced
            return None
        if not request.path.startswith(self.forms.data_paths):
            return None
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.clear()
        elif fault is Fault.UNAUTHORIZED and not self.sticky and not self.forms.token_paths:
            # A vendor without token requests (SigV4) never sees the client renew its credentials: an expired
            # one is refused once, and the resent request, signed with renewed credentials, is served.
            self.clear()
        self.injected[fault] += 1
        return fault

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self._take(request)
        if fault is None:
            return await handler(request)
        return await self._apply(fault, request, handler)

    async def _apply(self, fault: Fault, request: web.Request, handler: Handler) -> web.StreamResponse:
        forms = self.forms
        match fault:
            case Fault.TIMEOUT:
                await asyncio.sleep(self.seconds)
                return web.Response(status=504)
            case Fault.RESET:
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError  # nothing more to say on a dropped connection
            case Fault.HTTP_500 | Fault.HTTP_502 | Fault.HTTP_503:
                return web.Response(
                    status=int(fault.value), text="<html><body>upstream error</body></html>", content_type="text/html"
                )
            case Fault.RATE_LIMITED:
                return web.json_response(forms.rate_limited, status=429, headers={"Retry-After": "1"})
            case Fault.RATE_LIMITED_BARE:
                return web.json_response(forms.rate_limited, status=429)
            case Fault.UNAUTHORIZED:
                return web.json_response(forms.unauthorized, status=401)
            case Fault.NOT_JSON:
                return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
            case Fault.ERROR_IN_200:
                return web.json_response(forms.error_in_200, status=200)
            case Fault.SLOW:
                await request.read()  # aiohttp keeps it: the handler still has it if the client gave up
                await asyncio.sleep(self.seconds)
                return await handler(request)
            case Fault.ENDLESS_BODY:
                return await _endless(request)
            case Fault.GZIP_BOMB:
                return web.Response(
                    body=_gzip_bomb(), headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
                )
            case Fault.DEEP_JSON:
                depth = 100_000
                return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")
            case Fault.HOSTILE_TEXT:
                # Raw bytes, as a broken vendor would send them: invalid UTF-8 (a surrogate encoded), a
                # JSON-escaped lone surrogate, control characters and markup for the status page.
                hostile = b"bad \\ud800 \x1b[31m \xed\xa0\x80 <script>alert('x')</script> \x00 end"
                return web.Response(status=400, body=hostile, content_type="text/plain")
        # The rest rewrite a real answer.
        response = await handler(request)
        body = getattr(response, "body", None)
        if not isinstance(body, bytes | bytearray):
            return response
        if fault is Fault.TRUNCATED:
            return web.Response(
                body=bytes(body[: len(body) // 2]), status=response.status, content_type="application/json"
            )
        data = json.loads(body)
        if fault is Fault.MISSING_FIELD:
            data = _rewrite(data, forms.essential_field, drop=True)
        elif fault is Fault.WRONG_TYPE:
            data = _rewrite(data, forms.numeric_field, drop=False)
        elif fault is Fault.EXTRA_FIELDS:
            data = _add_fields(data)
        elif fault in (Fault.HUGE_NUMBER, Fault.NEGATIVE_NUMBER):
            data = _rewrite(data, forms.numeric_field, drop=False, to=1.7e308 if fault is Fault.HUGE_NUMBER else -5)
        return web.json_response(data, status=response.status)


_NO_VALUE = object()


def _rewrite(value: Any, key: str, *, drop: bool, to: Any = _NO_VALUE) -> Any:
    """Delete `key` everywhere (drop), or set its values to `to` (by default: their text)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == key:
                if not drop:
                    out[k] = str(v) if to is _NO_VALUE else to
                continue
            out[k] = _rewrite(v, key, drop=drop, to=to)
        return out
    if isinstance(value, list):
        return [_rewrite(v, key, drop=drop, to=to) for v in value]
    return value


ENDLESS_LIMIT = 1 << 30  # an "endless" body still ends somewhere: a simulator's loops are bounded


async def _endless(request: web.Request) -> web.StreamResponse:
    """A 200 JSON body that goes on until the client hangs up (or ENDLESS_LIMIT bytes)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b'{"pad":"' + b"x" * 65536 + b'"},'
    await response.write(b"[")
    sent = 0
    try:
        while sent < ENDLESS_LIMIT:
            await response.write(chunk)
            sent += len(chunk)
    except (ConnectionError, RuntimeError):  # the client stopped reading: what a capped client does
        pass
    return response


@functools.cache
def _gzip_bomb() -> bytes:
    """256 MiB of one repeated JSON string, gzipped (about 256 KiB): made once, kept."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    parts = [compressor.compress(b'{"pad":"')]
    block = b"x" * (1 << 20)
    parts.extend(compressor.compress(block) for _ in range(256))
    parts.append(compressor.compress(b'"}') + compressor.flush())
    return b"".join(parts)


def _add_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {**{k: _add_fields(v) for k, v in value.items()}, "addedInV2": {"note": "new field"}, "flags": [1]}
    if isinstance(value, list):
        return [_add_fields(v) for v in value]
    return value
