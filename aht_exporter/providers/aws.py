"""Amazon Web Services, whatever the service: SigV4 signing and credentials through botocore (the SDK's own
code, not a re-implementation), and AWS's error replies. docs/providers/amazon-connect.md, Authentication.

botocore is imported when a request is first signed or credentials first resolved, not with this module: an
exporter without an AWS source does not carry it (about 7 MiB of RSS and 60 ms of start-up).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx
import msgspec

from aht_exporter.httpclient import ERROR_TEXT_BYTES, generic_error_text
from aht_exporter.model import ProviderError
from aht_exporter.redact import RUNTIME

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

# How long what the credential chain found is used before the chain is walked again (seconds).
RESOLVE_EVERY = 900.0
# A "slow down", whatever the status AWS sends it with [model: connect ThrottlingException is a 429; other
# services send throttling as a 400 with these codes].
THROTTLING_CODES = frozenset({"ThrottlingException", "TooManyRequestsException", "Throttling", "ThrottledException"})


def canonical_url(url: str, params: Sequence[tuple[str, str]]) -> str:
    """`url` with its query in SigV4's canonical encoding, which httpx sends as it is: the URL signed is the URL
    sent (a `nextToken` with `+`, `/` or `=` encoded otherwise gets a 403)."""
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params)
    return f"{url}?{query}" if query else url


def signed_request(
    method: str,
    url: str,
    params: Sequence[tuple[str, str]],
    body: bytes,
    credentials: Credentials | ReadOnlyCredentials,
    region: str,
    service: str,
) -> tuple[str, dict[str, str]]:
    """The URL to send and the headers botocore's SigV4 signer adds: X-Amz-Date, Authorization and, for
    temporary credentials, X-Amz-Security-Token."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    full = canonical_url(url, params)
    request = AWSRequest(
        method=method, url=full, data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    SigV4Auth(credentials, service, region).add_auth(request)
    return full, dict(request.headers.items())


class Signer:
    """Signs each request as it leaves (after its turn in any pacer), with the credentials `refresh` last
    resolved: resolving may call STS or the instance metadata service, so it runs in a thread, before a poll."""

    def __init__(
        self, service: str, region: str, keys: tuple[str, str] | None = None, profile: str | None = None
    ) -> None:
        """`keys`: an access key id and its secret, from the config; None: botocore's credential chain."""
        self.service, self.region = service, region
        self._keys = keys
        self._source: Credentials | None = None
        self._profile = profile
        self._frozen: ReadOnlyCredentials | None = None
        # What the chain resolved, and when (time.monotonic()). Kept as botocore's clients keep theirs: role
        # credentials (STS, web identity, the instance role) refresh themselves before they expire, so a poll
        # costs no STS call; the chain itself is walked again every RESOLVE_EVERY, or after it failed, for
        # keys rotated in the shared files.
        self._chain: Credentials | None = None
        self._chain_at = -math.inf
        self.monotonic: Callable[[], float] = time.monotonic  # a test's clock may stand in

    def refresh(self, *, again: bool = False) -> None:
        """Resolve the credentials: the configured ones, else botocore's standard chain (environment, shared
        config and credentials files with `profile`, web identity, container and instance roles). Blocking.
        `again`: walk the chain anew (AWS refused the last ones: ExpiredTokenException)."""
        from botocore.credentials import Credentials
        from botocore.exceptions import BotoCoreError

        if again:
            self._chain = None
        if self._keys is not None and self._source is None:
            self._source = Credentials(*self._keys)
        try:
            source = self._source or self._resolved()
            frozen = source.get_frozen_credentials() if source is not None else None
        except BotoCoreError as exc:  # a broken profile, an STS refusal: botocore's own words
            self._chain = None
            raise ProviderError(f"AWS credentials: {exc}") from None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            self._chain = None
            raise ProviderError(
                "AWS credentials: none found (set access_key_id and secret_access_key, a profile, the AWS_* "
                "environment, or give this host a role)"
            )
        # The chain's secret key and session token are in no config the redactor was built from: known from
        # now on, an echo of either (a log line, an error text) is masked like any credential sent.
        for secret in (frozen.secret_key, frozen.token):
            if secret:
                RUNTIME.add(secret)
        self._frozen = frozen

    def _resolved(self) -> Credentials | None:
        """The chain's credentials: those found last, unless RESOLVE_EVERY has passed or they failed."""
        now = self.monotonic()
        if self._chain is None or now - self._chain_at >= RESOLVE_EVERY:
            import botocore.session

            self._chain = botocore.session.Session(profile=self._profile).get_credentials()
            self._chain_at = now
        return self._chain

    def __call__(self, request: httpx.Request) -> None:
        if self._frozen is None:
            raise ProviderError("AWS credentials: not resolved before the request")  # refresh() comes first
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        aws = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={"Content-Type": request.headers["Content-Type"]} if "Content-Type" in request.headers else {},
        )
        SigV4Auth(self._frozen, self.service, self.region).add_auth(aws)
        for name in ("X-Amz-Date", "Authorization", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]


def error_code(response: httpx.Response) -> str:
    """The error code of `x-amzn-ErrorType` (`Code:url` cut at the colon), as botocore's RestJSONParser reads it."""
    header: str = response.headers.get("x-amzn-ErrorType", "")
    return header[:200].split(":", 1)[0]


def rate_limit_sign(response: httpx.Response) -> bool:
    """AWS's throttling codes, whatever the status (a 429 is counted as one anyway)."""
    return response.status_code != 429 and error_code(response) in THROTTLING_CODES


def error_text(response: httpx.Response) -> str:
    """An AWS error as `code: message`: the code from `x-amzn-ErrorType` (`Code:url` cut at the colon), else
    the body's `__type` or `code`; the message from `message` or `Message`, as botocore's RestJSONParser does."""
    code = error_code(response)
    body: object = None
    if len(response.content) <= 16 * ERROR_TEXT_BYTES:
        try:
            body = msgspec.json.decode(response.content)
        except (msgspec.DecodeError, RecursionError):
            body = None
    if isinstance(body, Mapping):
        code = code or str(body.get("__type") or body.get("code") or "").rsplit("#", 1)[-1][:100]
        message = body.get("message", body.get("Message"))
        if message is not None or code:
            return f"{code or '?'}: {'' if message is None else str(message)[:300]}"
    text = generic_error_text(response)
    return f"{code}: {text}" if code else text
