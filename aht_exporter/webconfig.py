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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from aht_exporter.model import ConfigError

OPEN_PATHS = frozenset({"/-/healthy"})
ClientAuth = Literal[
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: ClientAuth = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = {}


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)


def load_web_config(path: str) -> WebConfig:
    """Parse and check the file; raise ConfigError with one line naming the file and key."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {getattr(exc, 'problem', None) or exc}") from None
    try:
        parsed = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
        raise ConfigError(f"{path}: {where}: {msg}") from None
    users: dict[str, bytes] = {}
    for user, hashed in parsed.basic_auth_users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{path}: basic_auth_users.{user}: not a bcrypt hash")
        users[user] = hashed.encode()
    context = _ssl_context(parsed.tls_server_config, path) if parsed.tls_server_config else None
    return WebConfig(ssl_context=context, users=users)


def _ssl_context(tls: TLSServerConfig, path: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
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
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    }.get(tls.client_auth_type, ssl.CERT_NONE)
    return context


# A hash to check against when the user is unknown, so both failures take the same time.
_DUMMY = bcrypt.hashpw(b"dummy", bcrypt.gensalt(rounds=10))


class BasicAuth:
    """Checks credentials with bcrypt (off the event loop) and caches good ones, as exporter-toolkit does."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._good: set[bytes] = set()

    async def allowed(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        key = hashlib.sha256(user.encode() + b"\0" + password.encode()).digest()
        if key in self._good:
            return True
        hashed = self._users.get(user, _DUMMY)
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
