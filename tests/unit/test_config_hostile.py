"""A config file is hostile input (issue 12): whatever it holds, loading it ends in a Config or in one
ConfigError line, soon and in bounded memory, and what it accepts can run.

The bad-config table (test_bad_configs.py) has a row per refused text; here are the files that need
bytes, sizes or special files, the limits at their edges, and the property tests.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aht_exporter.config import (
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_FILE_BYTES,
    MAX_CONFIG_TEXT,
    MAX_CONFIG_VALUES,
    MAX_EVERY,
    MAX_SECRET_FILE_BYTES,
    Config,
    redacted,
)
from aht_exporter.model import ConfigError
from aht_exporter.providers import PROVIDERS
from aht_exporter.providers.genesys import GenesysConfig
from aht_exporter.registry import load_config, parse_config
from aht_exporter.scheduler import trigger_for
from aht_exporter.simulator.demo import DEMO_PROVIDERS
from aht_exporter.timebuckets import fetch_span

GENESYS = "  - name: g\n    provider: genesys\n    region: mypurecloud.ie\n    client_id: id\n    client_secret: s3\n"
GOOD = "sources:\n" + GENESYS


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config.yaml", env or {})
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def file_error(path: Path | str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the config file itself ----------------------------------------------------------------------------


def test_a_config_file_that_is_not_utf8_names_the_line_and_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(GOOD.encode() + b"    queues: [caf\xe9]\n")  # Latin-1, not UTF-8
    assert file_error(path) == f"{path}: line 7: not UTF-8 text (byte 0xe9): save the file as UTF-8"


def test_a_utf16_config_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(GOOD.encode("utf-16"))
    assert file_error(path) == f"{path}: line 1: not UTF-8 text (byte 0xff): save the file as UTF-8"


def test_a_config_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    padding = "#" * (MAX_CONFIG_FILE_BYTES - len(GOOD)) + "\n"  # one byte over: a valid config, but too large
    path.write_text(padding + GOOD)
    assert path.stat().st_size == MAX_CONFIG_FILE_BYTES + 1
    assert file_error(path) == f"{path}: is larger than 1MiB, the most a config file may hold"


def test_a_config_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("#" * (MAX_CONFIG_FILE_BYTES - len(GOOD) - 1) + "\n" + GOOD)
    assert path.stat().st_size == MAX_CONFIG_FILE_BYTES
    assert load_config(path).sources[0].name == "g"


def test_a_45mb_config_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("w") as f:
        f.write(GOOD + "    queues:\n")
        f.write("      - queue-0000000000000000000000000000\n" * 1_100_000)
    assert path.stat().st_size > 45_000_000
    assert file_error(path) == f"{path}: is larger than 1MiB, the most a config file may hold"


@pytest.mark.parametrize(("kind", "expected"), [("dir", "a directory"), ("fifo", "a named pipe")])
def test_a_config_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    if kind == "dir":
        path.mkdir()
    else:
        os.mkfifo(path)  # opening it must not wait for a writer
    assert file_error(path) == f"{path}: is {expected}, not a regular file"


def test_dev_zero_as_the_config_file_is_refused() -> None:
    assert file_error("/dev/zero") == "/dev/zero: is a character device, not a regular file"


# --- secret files --------------------------------------------------------------------------------------


def with_secret_file(path: Path | str) -> str:
    return GOOD.replace("client_secret: s3", f'client_secret_file: "{path}"')


def test_a_binary_secret_file_is_refused_without_showing_a_byte_of_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"Zq9\xff\xfeSECRETBYTES\x00\x89")
    message = error_of(with_secret_file(secret))
    assert message == f"config.yaml: sources[0].client_secret_file: {secret} is not UTF-8 text"
    assert "SECRETBYTES" not in message and "Zq9" not in message


def test_a_secret_file_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * (MAX_SECRET_FILE_BYTES + 1))
    assert error_of(with_secret_file(secret)) == (
        f"config.yaml: sources[0].client_secret_file: {secret} is larger than 64KiB, the most a secret file may hold"
    )


def test_a_secret_file_at_the_limit_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x" * (MAX_SECRET_FILE_BYTES - 1) + "\n")
    source = parse_config(with_secret_file(secret), "config.yaml", {}).sources[0]
    assert isinstance(source, GenesysConfig)
    assert source.client_secret.get_secret_value() == "x" * (MAX_SECRET_FILE_BYTES - 1)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/dev/zero", "/dev/zero is a character device, not a regular file"),
        ("/dev/null", "/dev/null is a character device, not a regular file"),
        ("/", "/ is a directory, not a regular file"),
        ("/tmp/a\\0b", "is not a usable path (it holds a NUL character)"),
    ],
)
def test_a_secret_file_that_is_not_a_regular_file_is_refused(path: str, expected: str) -> None:
    assert error_of(with_secret_file(path)).startswith("config.yaml: sources[0].client_secret_file: ")
    assert error_of(with_secret_file(path)).endswith(expected)


def test_a_named_pipe_as_a_secret_file_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    assert error_of(with_secret_file(fifo)) == (
        f"config.yaml: sources[0].client_secret_file: {fifo} is a named pipe, not a regular file"
    )


# --- YAML: aliases, nesting, values Python cannot build ----------------------------------------------


def test_small_anchors_and_aliases_still_work() -> None:
    text = """
defaults:
  windows: &windows [30m, 1h]
sources:
  - &genesys {name: g, provider: genesys, region: mypurecloud.ie, client_id: a, client_secret: b, windows: *windows}
  - {name: h, provider: genesys, region: mypurecloud.ie, client_id: a, client_secret: b, refresh: *windows}
"""
    assert "sources[1].refresh: " in error_of(text)  # an alias resolves to what it names (a list here)
    config = parse_config(text.replace(", refresh: *windows", ""), "config.yaml", {})
    assert [[w.text for w in s.windows] for s in config.sources] == [["30m", "1h"], ["30m", "1h"]]


def test_merge_keys_let_sources_share_their_keys() -> None:
    text = """
sources:
  - &base {name: g, provider: genesys, region: mypurecloud.ie, client_id: a, client_secret: b, every: 10m}
  - <<: *base
    name: h
    every: 15m
"""
    first, second = parse_config(text, "config.yaml", {}).sources
    assert (first.name, first.every.text) == ("g", "10m")
    assert isinstance(second, GenesysConfig)
    assert (second.name, second.every.text, second.client_id) == ("h", "15m", "a")


def test_a_key_set_twice_is_still_refused_beside_a_merge() -> None:
    text = "x: &x {a: 1}\nsources:\n  - <<: *x\n    name: g\n    name: h\n"
    assert error_of(text) == "config.yaml: line 5: key 'name' is set twice in the same mapping"


def test_values_up_to_the_limit_are_read() -> None:
    # A source listing queues up to just under the limit: a large real config is not refused.
    queues = MAX_CONFIG_VALUES - 30
    config = parse_config(GOOD + "    queues: [" + ", ".join(["q"] * queues) + "]\n", "config.yaml", {})
    source = config.sources[0]
    assert isinstance(source, GenesysConfig)
    assert len(source.queues) == queues
    text = GOOD + "    queues: [" + ", ".join(["q"] * (queues + 30)) + "]\n"
    assert error_of(text) == f"config.yaml: line 7: more than {MAX_CONFIG_VALUES} values once its aliases are expanded"


def test_nesting_up_to_the_limit_is_read_and_beyond_it_refused() -> None:
    # The source sits at depth 3 (the file, `sources`, the source): `x` may hold MAX_CONFIG_DEPTH - 3 more.
    def text(depth: int) -> str:
        return GOOD + "    x: " + "[" * depth + "]" * depth + "\n"

    assert error_of(text(MAX_CONFIG_DEPTH - 3)) == "config.yaml: sources[0].x: unknown key"
    assert "nested more than 32 deep" in error_of(text(MAX_CONFIG_DEPTH - 2))


def test_aliases_count_for_nesting_too() -> None:
    deep = "[" * 20 + "]" * 20
    text = f"x: &deep {deep}\n" + GOOD + "    y: [[[[[[[[[[[[[[*deep]]]]]]]]]]]]]]\n"
    assert error_of(text) == "config.yaml: line 8: mappings and lists are nested more than 32 deep"


def test_aliased_text_counts_for_the_text_limit() -> None:
    chunk = "x" * (64 << 10)
    text = f"big: &big {chunk}\nmore: [{', '.join(['*big'] * 70)}]\n" + GOOD
    assert error_of(text) == "config.yaml: line 2: more than 4MiB of text once its aliases are expanded"


def test_an_environment_variable_cannot_blow_the_text_up() -> None:
    env = {"BIG": "x" * (64 << 10)}
    text = GOOD.replace("client_secret: s3", "client_secret: " + "${BIG}" * 100)
    assert error_of(text, env) == (
        "config.yaml: sources[0].client_secret: the config's values hold more than 4MiB of text once ${VAR}s are "
        "substituted"
    )
    assert MAX_CONFIG_TEXT == 4 << 20
    fits = GOOD.replace("client_secret: s3", "client_secret: " + "${BIG}" * 10)
    source = parse_config(fits, "config.yaml", env).sources[0]
    assert isinstance(source, GenesysConfig)
    assert len(source.client_secret.get_secret_value()) == 10 * (64 << 10)


def test_a_lone_surrogate_handed_to_parse_config_is_a_config_error() -> None:
    assert error_of(GOOD + "    queues: [a\ud800]\n") == "config.yaml: line 7: not Unicode text (a lone surrogate)"


def test_a_multi_document_file_is_refused() -> None:
    assert error_of(GOOD + "---\n" + GOOD).startswith("config.yaml: line 7: YAML syntax error: ")


# --- URLs: no password in and none out ----------------------------------------------------------------

PASSWORD = "Hunter2Secret"
URL_SHAPES = [
    f"https://user:{PASSWORD}@proxy.example/api",
    f"https://{PASSWORD}@proxy.example",
    f"user:{PASSWORD}@proxy.example",
    f"ftp://user:{PASSWORD}@proxy.example",
    f"https://user:{PASSWORD}/x@proxy.example",  # a `/` in the password hides it from urlsplit's netloc
    f"http://user:{PASSWORD}@127.0.0.1:8080",
]


def source_with(provider: str, **keys: object) -> str:
    """A valid source of `provider` (its demo source, pointed at an https host), with `keys` on top."""
    base = DEMO_PROVIDERS[provider].sources("https://a.example")[0]
    return yaml.safe_dump({"sources": [{**base, "name": "s", **keys}]})


URL_KEYS = [(name, key) for name, cls in sorted(PROVIDERS.items()) for key in cls.config_model.url_keys]


@pytest.mark.parametrize(("provider", "key"), URL_KEYS)
@pytest.mark.parametrize("url", URL_SHAPES)
def test_no_url_key_takes_or_shows_a_password(provider: str, key: str, url: str) -> None:
    message = error_of(source_with(provider, **{key: url}))
    assert message.startswith(f"config.yaml: sources[0].{key}: must not contain `@`"), message
    assert PASSWORD not in message


def test_check_config_never_prints_a_url_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aht_exporter.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(source_with("genesys", base_url=URL_SHAPES[0]))
    assert main([f"--config.file={path}", "--check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: sources[0].base_url: must not contain `@`")
    assert PASSWORD not in out + err


# --- what the config accepts can run ------------------------------------------------------------------


def test_every_cadence_the_config_accepts_has_a_trigger_on_its_utc_multiples() -> None:
    now = datetime(2026, 3, 2, 10, 7, 13, tzinfo=UTC)
    for every in range(300, MAX_EVERY.seconds + 1, 300):
        config = parse_config(GOOD + f"    every: {every}s\n    delay: 4m\n", "config.yaml", {})
        source = config.sources[0]
        fire = trigger_for(source.every.seconds, source.delay.seconds).get_next_fire_time(None, now)
        assert fire is not None
        assert (fire.timestamp() - source.delay.seconds) % every == 0, every
        assert 0 < fire.timestamp() - now.timestamp() <= every
    assert "longer than 1d" in error_of(GOOD + f"    every: {MAX_EVERY.seconds + 300}s\n")


def accepted_durations_run(config: Config) -> None:
    """What a poll computes from a source's durations works for every accepted config."""
    now = datetime(2026, 3, 2, 10, 7, 13, tzinfo=UTC)
    for source in config.sources:
        trigger_for(source.every.seconds, source.delay.seconds).get_next_fire_time(None, now)
        assert source.timeout.millis < source.every.millis <= MAX_EVERY.millis
        assert source.longest_window <= source.max_window.seconds
        start, end = fetch_span(
            1772445600,
            bucket=source.bucket_seconds,
            longest_window=source.longest_window,
            refresh=source.refresh_seconds,
            every=source.every.seconds,
            fetched_until=1772445600 - 3600,
        )
        assert 0 <= end - start <= source.max_window.seconds
    redacted(config)  # what --check-config prints


# --- property tests: anything in, a Config or one ConfigError line out ---------------------------------

YAML_TOKENS = [
    *"-:?,[]{}&*!|>'\"#%@`<= \n\t",
    "  ",
    "\n  - ",
    "sources",
    "defaults",
    "sources:\n  - ",
    "name: g",
    "provider: ",
    "genesys",
    "liveperson",
    "ozonetel",
    "koreai",
    "every",
    "windows",
    "timeout",
    "refresh",
    "5m",
    "1d",
    "99999999999999999999d",
    "&a ",
    "*a",
    "<<: ",
    "!!int ",
    "!!binary ",
    "!!set ",
    "!!timestamp ",
    "2026-02-30",
    "${X}",
    "${Y:-d}",
    "$$",
    "https://u:p@h",
    "client_secret_file: ",
    "\ud800",
    "\x00",
    "\ufeff",
    "é",
    "~",
    "null",
    "1e400",
    "0x",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=4)), max_size=40).map("".join))
def test_any_yaml_ish_text_gives_a_config_or_one_config_error_line(text: str) -> None:
    check_parses(text)


KEYS = sorted(
    {k for cls in PROVIDERS.values() for k in cls.config_model.model_fields}
    | {"client_secret_file", "api_key_file", "x"}
)
FILES = [str(Path(__file__)), "/dev/zero", "/dev/null", "/", "/nonexistent/secret", "", "a\0b"]
DURATIONS = ["0s", "1s", "500ms", "5m", "7m", "30m", "1h", "2h", "1d", "2d", "7d", "8d", "9999999999w", "1" * 25 + "h"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(DURATIONS + FILES + ["https://h.example", "http://127.0.0.1:1", "https://u:p@h", "${X}", "all"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner)
    ),
    max_leaves=20,
)
BASES: list[dict[str, Any]] = [
    {"name": "g", "provider": "genesys", "region": "mypurecloud.ie", "client_id": "a", "client_secret": "b"},
    {"name": "l", "provider": "liveperson", "account_id": "1", "client_id": "a", "client_secret": "b"},
    {"name": "o", "provider": "ozonetel", "user_name": "u", "api_key": "k", "agents": ["a"]},
    {"name": "k", "provider": "koreai", "account_id": "a", "org_id": "o", "client_id": "c", "client_secret": "s"},
]
DURATION_KEYS = ["every", "delay", "windows", "timeout", "refresh", "max_query_span", "bucket"]
SOURCES = st.builds(
    lambda base, durations, changes, dropped: {
        k: v for k, v in {**base, **durations, **changes}.items() if k not in dropped
    },
    st.sampled_from(BASES),
    st.dictionaries(
        st.sampled_from(DURATION_KEYS),
        st.one_of(st.sampled_from(DURATIONS), st.lists(st.sampled_from(DURATIONS), max_size=3)),
        max_size=2,
    ),
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=2),
    st.sets(st.sampled_from(["name", "client_secret", "agents", "region"]), max_size=1),
)
DEFAULTS = st.dictionaries(
    st.sampled_from(["every", "delay", "windows", "timeout", "refresh", "stale_after", "max_series", "x"]),
    st.one_of(st.sampled_from(DURATIONS), st.lists(st.sampled_from(DURATIONS), max_size=3), VALUES),
    max_size=3,
)
CONFIGS = st.one_of(
    VALUES,
    st.fixed_dictionaries({"sources": st.lists(SOURCES, max_size=3)}, optional={"defaults": DEFAULTS}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_any_nested_structure_gives_a_config_or_one_config_error_line(structure: object) -> None:
    check_parses(yaml.safe_dump(structure, allow_unicode=True))


def check_parses(text: str) -> None:
    try:
        config = parse_config(text, "h.yaml", {"X": "x" * 10})
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("h.yaml: ")
        assert "\n" not in message and "\r" not in message
        assert "Traceback" not in message
        return
    assert isinstance(config, Config)
    accepted_durations_run(config)


def test_the_property_tests_reach_accepted_configs() -> None:
    # The strategies are worth their time only if some examples pass: one of each provider's bases does.
    for base in BASES:
        parse_config(yaml.safe_dump({"sources": [base]}), "h.yaml", {})
