"""The YAML config: `defaults` + `sources`, validated up front into one readable line per problem.

Every failure is a ConfigError whose text is `<file>: <key path>: <what is wrong>`, e.g.
`config.yaml: sources[0].windows[1]: 7m is not a multiple of the source's 30m bucket`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from aht_exporter.model import ConfigError
from aht_exporter.timebuckets import Duration

FIVE_MINUTES = 300
M = TypeVar("M", bound=BaseModel)


def _to_duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration string (use e.g. 30s, 5m, 1h, 1d)")
    return Duration.parse(value)


DurationField = Annotated[Duration, BeforeValidator(_to_duration), PlainSerializer(str, return_type=str)]

_SIZE_RE = re.compile(r"^(\d{1,12})\s*(B|KiB|MiB|GiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
# The most a response may be capped at: far above any reply seen, far below what would exhaust a host.
MAX_RESPONSE_SIZE_LIMIT = 1 << 30


@dataclass(frozen=True, slots=True)
class ByteSize:
    """A size in bytes that remembers how the user wrote it (`64MiB`, or a plain number of bytes)."""

    bytes: int
    text: str

    @classmethod
    def parse(cls, value: object) -> ByteSize:
        if isinstance(value, ByteSize):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        m = _SIZE_RE.match(value.strip()) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f"{value!r} is not a size (use e.g. 64MiB, 512KiB or a number of bytes)")
        return cls(int(m.group(1)) * _SIZE_UNITS[m.group(2)], str(value).strip())

    def __str__(self) -> str:
        return self.text


ByteSizeField = Annotated[ByteSize, BeforeValidator(ByteSize.parse), PlainSerializer(str, return_type=str)]


class StrictModel(BaseModel):
    # Unknown keys are errors: a typo must not silently disable a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Defaults(StrictModel):
    every: DurationField = Duration.parse("5m")
    delay: DurationField = Duration.parse("1m")
    windows: list[DurationField] = Field(default_factory=lambda: [Duration.parse("30m"), Duration.parse("1h")])
    timeout: DurationField = Duration.parse("30s")
    refresh: DurationField | None = None
    stale_after: int = Field(default=3, ge=1, strict=True)  # strict: `true` is not 1
    max_series: int = Field(default=20000, ge=1, strict=True)
    # Bytes read from one response, before and after decompression (issue 12: an endless body or a
    # gzip bomb must fail that poll, not exhaust the host's memory).
    max_response_size: ByteSizeField = ByteSize.parse("64MiB")


class SourceConfig(Defaults):
    """Keys every source takes. Each provider subclasses it with its own keys and `provider` literal."""

    # Seconds of one bucket; a provider with coarser data overrides `bucket_seconds`.
    default_bucket: ClassVar[int] = FIVE_MINUTES
    default_refresh: ClassVar[str] = "1h"
    # URL keys that must be https (or loopback http) unless allow_insecure_http.
    url_keys: ClassVar[tuple[str, ...]] = ("base_url",)
    # The `defaults` keys this provider takes (a provider with a fixed window takes no `windows`).
    from_defaults: ClassVar[frozenset[str]] = frozenset(Defaults.model_fields)
    # Keys fixed by the provider, which a user may not set (and --check-config does not print).
    fixed_keys: ClassVar[frozenset[str]] = frozenset()

    name: str = Field(pattern=r"^[a-z0-9_-]+$", max_length=64)
    provider: str
    base_url: str | None = None
    allow_insecure_http: bool = False

    @property
    def bucket_seconds(self) -> int:
        return self.default_bucket

    @property
    def refresh_seconds(self) -> int:
        return (self.refresh or Duration.parse(self.default_refresh)).seconds

    @property
    def max_response_bytes(self) -> int:
        return self.max_response_size.bytes

    @property
    def longest_window(self) -> int:
        return max(w.seconds for w in self.windows)

    def problems(self) -> Iterator[tuple[str, str]]:
        """Cross-field rules, as (key path within the source, message)."""
        if self.every.seconds <= 0 or self.every.seconds % FIVE_MINUTES:
            yield "every", f"{self.every} is not a whole multiple of 5m"
        if not 0 <= self.delay.seconds <= 4 * 60:
            yield "delay", f"{self.delay} is outside 0s..4m"
        if not 64 * 1024 <= self.max_response_size.bytes <= MAX_RESPONSE_SIZE_LIMIT:
            yield "max_response_size", f"{self.max_response_size} is outside 64KiB..1GiB"
        if self.timeout.millis <= 0:
            yield "timeout", "must be more than 0s"
        for key in ("every", "delay", "refresh"):
            value = getattr(self, key)
            if value is not None and value.millis % 1000:
                yield key, f"{value} is not a whole number of seconds"
        if self.refresh is not None and self.refresh.seconds <= 0:
            yield "refresh", "must be more than 0s"
        if not self.windows:
            yield "windows", "needs at least one window"
        bucket = self.bucket_seconds
        seen: set[int] = set()
        for i, w in enumerate(self.windows):
            if w.millis <= 0 or w.millis % (bucket * 1000):
                yield f"windows[{i}]", f"{w} is not a multiple of the source's {Duration.of(bucket)} bucket"
            elif w.seconds in seen:
                yield f"windows[{i}]", f"{w} is listed twice"
            seen.add(w.seconds)
        for key in self.url_keys:
            url = getattr(self, key)
            if url is not None:
                yield from ((key, msg) for msg in _url_problems(url, self.allow_insecure_http))
        for key in secret_keys(type(self)):
            secret = getattr(self, key)
            if secret is not None and not secret.get_secret_value().strip():
                yield key, "must not be empty"


def _url_problems(url: str, allow_insecure: bool) -> Iterator[str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        yield f"{url!r} is not an http(s) URL"
    elif parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        yield "plain http:// is refused for a non-loopback host (set allow_insecure_http: true to allow it)"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Config(StrictModel):
    sources: list[SourceConfig]
    path: str = "<config>"


# --- loading ---------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path) -> Config:
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key set twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is set twice in the same mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, name: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        kind = "" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error: "
        raise ConfigError(f"{name}: {where}{kind}{problem}") from None
    try:
        return build_config(raw, name, os.environ if env is None else env)
    except _Problem as p:
        raise ConfigError(f"{name}: {p.path}: {p.message}" if p.path else f"{name}: {p.message}") from None


class _Problem(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def build_config(raw: object, name: str, env: Mapping[str, str]) -> Config:
    from aht_exporter.providers import PROVIDERS

    if not isinstance(raw, dict):
        raise _Problem("", "the file must be a mapping with a `sources` list")
    for key in raw:
        if key not in ("defaults", "sources"):
            raise _Problem(str(key), "unknown key (expected `defaults` and `sources`)")
    data: dict[str, Any] = _substitute(raw, "", env)
    defaults_raw = data.get("defaults")
    if defaults_raw is None:
        defaults_raw = {}
    if not isinstance(defaults_raw, dict):
        raise _Problem("defaults", "must be a mapping")
    _validate(Defaults, defaults_raw, "defaults")
    sources_raw = data.get("sources")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise _Problem("sources", "must be a non-empty list of sources")

    sources: list[SourceConfig] = []
    names: dict[str, int] = {}
    for i, item in enumerate(sources_raw):
        where = f"sources[{i}]"
        if not isinstance(item, dict):
            raise _Problem(where, "must be a mapping")
        provider = item.get("provider")
        if provider not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise _Problem(f"{where}.provider", f"{provider!r} is not a known provider ({known})")
        model = PROVIDERS[provider].config_model
        inherited = {k: v for k, v in defaults_raw.items() if k in model.from_defaults}
        merged = {**inherited, **_read_secret_files(item, model, where)}
        source = _validate(model, merged, where)
        for key, message in source.problems():
            top = re.split(r"[.\[]", key, maxsplit=1)[0]
            if top in inherited and top not in item:  # the user wrote it under `defaults`: say so
                raise _Problem(f"defaults.{key}", f"{message} (in {where}, which inherits it)")
            raise _Problem(f"{where}.{key}", message)
        if source.name in names:
            raise _Problem(f"{where}.name", f"{source.name!r} is already used by sources[{names[source.name]}]")
        names[source.name] = i
        sources.append(source)
    return Config(sources=sources, path=name)


def _validate(model: type[M], data: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise _Problem(path, _message(err)) from None


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _substitute(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; `$$` is a literal `$`."""
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            raise _Problem(path, f"environment variable {var} is not set")

        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, _join(path, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def secret_keys(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if "SecretStr" in str(f.annotation)]


def _read_secret_files(item: dict[str, Any], model: type[BaseModel], where: str) -> dict[str, Any]:
    """`x_file: /path` for every secret key `x` (Kubernetes and Docker secrets): read once, at start."""
    out = dict(item)
    for key in secret_keys(model):
        file_key = f"{key}_file"
        if file_key not in out:
            continue
        if key in out:
            raise _Problem(f"{where}.{file_key}", f"set either {key} or {file_key}, not both")
        path = out.pop(file_key)
        if not isinstance(path, str):
            raise _Problem(f"{where}.{file_key}", "must be a file path")
        try:
            out[key] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise _Problem(f"{where}.{file_key}", f"cannot read {path}: {exc.strerror or exc}") from None
    return out


def redacted(config: Config) -> str:
    """The resolved config as YAML, every secret replaced by asterisks (for --check-config)."""
    data = {
        "sources": [s.model_dump(mode="json", exclude_none=True, exclude=set(s.fixed_keys)) for s in config.sources]
    }
    for source, model in zip(data["sources"], config.sources, strict=True):
        for key, seconds in (("bucket", model.bucket_seconds), ("refresh", model.refresh_seconds)):
            if key not in model.fixed_keys:
                source[key] = str(Duration.of(seconds))
    return yaml.safe_dump(data, sort_keys=False)
