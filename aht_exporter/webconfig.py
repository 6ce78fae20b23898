"""`--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format.

https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: ca.crt                         # optional
      min_version: TLS12                             # optional
    basic_auth_users:
      alice: $2y$10$...                              # bcrypt hash (htpasswd -nBC 10 alice)

Every endpoint but `/-/healthy` is guarded. A wrong user and a wrong password get the same 401.

Also from the toolkit: `tls_server_config.max_version` (TLS10..TLS13, as `min_version`) and
`http_server_config.headers`, the toolkit's five security headers, added to every response (install
`response_headers` on the app). `http_server_config.http2` is accepted and has no effect: aiohttp serves
HTTP/1.1 only. Not supported, and refused with a one-line error rather than ignored:
`client_auth_type` RequestClientCert and RequireAnyClientCert (Python's ssl cannot ask for a client
certificate without verifying it), `cipher_suites`, `prefer_server_cipher_suites` and `curve_preferences`
(Go crypto/tls names; Python's ssl picks OpenSSL's defaults).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import ssl
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from aht_exporter.config import parse_yaml, read_config_text
from aht_exporter.model import ConfigError

OPEN_PATHS = frozenset({"/-/healthy"})
ClientAuth = Literal[
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
]
# Go's crypto/tls can take a client certificate without checking it; Python's ssl either verifies one
# against a CA or asks for none. Accepting these two would silently mean NoClientCert.
UNVERIFIED_CLIENT_AUTH = frozenset({"RequestClientCert", "RequireAnyClientCert"})
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
# OpenSSL's security level (SECLEVEL 1 and up, the default in OpenSSL 3) may still refuse TLS 1.0 and 1.1
# handshakes whatever min_version says: allowing them here does not lower it.
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Toolkit keys for Go's crypto/tls knobs that Python's ssl does not offer in the same terms.
UNSUPPORTED_TLS_KEYS = ("cipher_suites", "prefer_server_cipher_suites", "curve_preferences")
# The only headers exporter-toolkit lets a web config set, with the values it accepts (None: any). Any
# other name (Authorization, Content-Type, Set-Cookie...) is refused, as the toolkit refuses it.
# https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md
EXTRA_HEADERS: Mapping[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
}

# A modular crypt bcrypt hash, as htpasswd -B writes it: the variant, the cost (log2 of the rounds) and
# 22 characters of salt then 31 of hash. Checked whole at load, so that no hash fails only at the first login.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
MIN_COST, MAX_COST = 4, 31  # what bcrypt accepts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: str | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    # Known so that they get a clear refusal rather than "unknown key"; any value is refused.
    cipher_suites: Any = None
    prefer_server_cipher_suites: Any = None
    curve_preferences: Any = None


class HTTPServerConfig(_Strict):
    http2: bool = True  # accepted for compatibility, no effect: aiohttp serves HTTP/1.1 only
    headers: dict[str, str] = {}


class WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, str] = {}


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # added to every response


def load_web_config(path: str) -> WebConfig:
    """Parse and check the file; raise ConfigError with one line naming the file and key."""
    # The main config's bounded reader and YAML limits: a web config can be as hostile as any other file.
    raw = parse_yaml(read_config_text(path, "a web config file"), path) or {}
    try:
        parsed = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
        raise ConfigError(f"{path}: {where}: {msg}") from None
    users: dict[str, bytes] = {}
    for user, hashed in parsed.basic_auth_users.items():
        match = BCRYPT_HASH.fullmatch(hashed)
        if match is None or not MIN_COST <= int(match["cost"]) <= MAX_COST:
            raise ConfigError(f"{path}: basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 12 {user})")
        users[user] = hashed.encode()
    headers = _headers(parsed.http_server_config.headers, path)
    context = _ssl_context(parsed.tls_server_config, path) if parsed.tls_server_config else None
    return WebConfig(ssl_context=context, users=users, headers=headers)


def _headers(configured: Mapping[str, str], path: str) -> dict[str, str]:
    headers = {}
    for name, value in configured.items():
        where = f"{path}: http_server_config.headers.{name}"
        if name not in EXTRA_HEADERS:
            raise ConfigError(f"{where}: cannot be configured (allowed: {', '.join(EXTRA_HEADERS)})")
        allowed = EXTRA_HEADERS[name]
        if value and allowed is not None and value not in allowed:
            raise ConfigError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
        if "\r" in value or "\n" in value:
            raise ConfigError(f"{where}: must be one line")
        if value:  # blank means unset, as in the toolkit
            headers[name] = value
    return headers


def _check_tls_keys(tls: TLSServerConfig, path: str) -> None:
    for key in UNSUPPORTED_TLS_KEYS:
        if key in tls.model_fields_set:
            raise ConfigError(
                f"{path}: tls_server_config.{key}: not supported (Python's ssl uses OpenSSL's defaults); remove it"
            )
    if tls.client_auth_type in UNVERIFIED_CLIENT_AUTH:
        raise ConfigError(
            f"{path}: tls_server_config.client_auth_type: {tls.client_auth_type} is not supported (a client "
            "certificate cannot be taken unverified); use NoClientCert, VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert (the last two need client_ca_file)"
        )
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        raise ConfigError(f"{path}: tls_server_config.min_version: {tls.min_version} is above max_version")


def _ssl_context(tls: TLSServerConfig, path: str) -> ssl.SSLContext:
    _check_tls_keys(tls, path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1; the file asked for them on purpose, and OpenSSL may still refuse.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        context.maximum_version = TLS_VERSIONS[tls.max_version]
    base = Path(path).parent
    try:
        context.load_cert_chain(base / tls.cert_file, base / tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{path}: tls_server_config: cannot load cert_file/key_file: {exc}") from None
    verify = tls.client_auth_type in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven")
    if verify and tls.client_ca_file is None:
        raise ConfigError(f"{path}: tls_server_config.client_ca_file: is required with {tls.client_auth_type}")
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(base / tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{path}: tls_server_config.client_ca_file: cannot load: {exc}") from None
    context.verify_mode = {
        "NoClientCert": ssl.CERT_NONE,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    }[tls.client_auth_type]
    return context


DUMMY_COST = 10  # htpasswd's default, for a BasicAuth with no users at all
# Salt and hash of a throwaway password, made cheaply once: `_dummy_hash` puts any cost in front, and bcrypt
# takes as long to check a password against it as against a real hash of that cost.
_DUMMY_TAIL = bcrypt.hashpw(b"dummy", bcrypt.gensalt(rounds=MIN_COST))[7:]


def bcrypt_cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _dummy_hash(cost: int) -> bytes:
    return b"$2b$%02d$" % cost + _DUMMY_TAIL


class BasicAuth:
    """Checks credentials with bcrypt (off the event loop) and caches good ones, as exporter-toolkit does."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._good: set[bytes] = set()
        # Checked when the user is unknown, at the configured users' cost (the highest, when they differ), so
        # that an unknown user and a wrong password take the same time: timing must not tell which user
        # names exist (a dummy of cost 10 took 0.10 s against 0.35 s for a user's cost 12).
        self.dummy = _dummy_hash(max((bcrypt_cost(h) for h in self._users.values()), default=DUMMY_COST))

    async def allowed(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        key = hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()
        if key in self._good:
            return True
        hashed = self._users.get(user, self.dummy)
        ok = await asyncio.to_thread(_checkpw, password.encode(), hashed)
        if ok and user in self._users:
            self._good.add(key)
            return True
        return False


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(auth: BasicAuth) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or await auth.allowed(request.headers.get("Authorization")):
            return await handler(request)
        # The same answer for every failure: nothing says whether the user or the password was wrong.
        return web.Response(
            status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="aht-exporter"'}
        )

    return middleware


ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def response_headers(web_config: WebConfig | None) -> ResponseHook:
    """An `on_response_prepare` hook adding `http_server_config.headers` to every response: 401s and 404s
    too, as exporter-toolkit sets them before anything else answers."""
    headers = dict(web_config.headers) if web_config else {}

    async def hook(_: web.Request, response: web.StreamResponse) -> None:
        for name, value in headers.items():
            response.headers[name] = value

    return hook
