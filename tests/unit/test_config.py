from pathlib import Path

import pytest

from aht_exporter.config import Config, redacted
from aht_exporter.model import ConfigError
from aht_exporter.providers.genesys import GenesysConfig
from aht_exporter.registry import load_config, parse_config

GOOD = """
defaults:
  every: 5m
  delay: 1m
  windows: [30m, 1h]
sources:
  - name: genesys-eu
    provider: genesys
    region: mypurecloud.ie
    client_id: abc
    client_secret: ${GENESYS_SECRET}
"""


def load(text: str, **env: str) -> Config:
    return parse_config(text, "config.yaml", env)


def error_of(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, **env)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def test_good_config_resolves_defaults_and_env() -> None:
    config = load(GOOD, GENESYS_SECRET="s3cr3t-value")
    (source,) = config.sources
    assert isinstance(source, GenesysConfig)
    assert source.client_secret.get_secret_value() == "s3cr3t-value"
    assert [w.text for w in source.windows] == ["30m", "1h"]
    assert source.bucket_seconds == 1800
    assert source.api_url == "https://api.mypurecloud.ie"
    assert source.token_url == "https://login.mypurecloud.ie/oauth/token"
    assert source.refresh_seconds == 7200  # Genesys's own default (docs/providers/genesys.md): 2h
    assert source.group_by == ["media_type", "queue"]


def test_defaults_refresh_applies_to_sources_that_do_not_set_it() -> None:
    config = load(GOOD.replace("  delay: 1m\n", "  delay: 1m\n  refresh: 1h\n"), GENESYS_SECRET="x")
    assert config.sources[0].refresh_seconds == 3600


def test_source_keys_override_defaults() -> None:
    text = GOOD + "    windows: [1h, 1d]\n    every: 10m\n"
    (source,) = load(text, GENESYS_SECRET="x").sources
    assert [w.text for w in source.windows] == ["1h", "1d"]
    assert source.every.seconds == 600


def test_env_default_syntax_and_dollar_escape() -> None:
    text = GOOD.replace("${GENESYS_SECRET}", "${MISSING:-fallback}$$x")
    source = load(text).sources[0]
    assert isinstance(source, GenesysConfig)
    assert source.client_secret.get_secret_value() == "fallback$x"


def test_unset_env_var_names_the_variable_and_key() -> None:
    assert error_of(GOOD) == "config.yaml: sources[0].client_secret: environment variable GENESYS_SECRET is not set"


def test_window_not_multiple_of_bucket_names_the_key_path() -> None:
    text = GOOD + "    windows: [30m, 7m]\n"
    assert error_of(text, GENESYS_SECRET="x") == (
        "config.yaml: sources[0].windows[1]: 7m is not a multiple of the source's 30m bucket"
    )


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    text = GOOD.replace("client_secret: ${GENESYS_SECRET}", f"client_secret_file: {secret}")
    source = load(text).sources[0]
    assert isinstance(source, GenesysConfig)
    assert source.client_secret.get_secret_value() == "from-a-file"


def test_missing_secret_file_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace("client_secret: ${GENESYS_SECRET}", f"client_secret_file: {tmp_path}/nope")
    assert error_of(text).startswith("config.yaml: sources[0].client_secret_file: cannot read ")


def test_secret_and_secret_file_together_is_an_error(tmp_path: Path) -> None:
    text = GOOD + f"    client_secret_file: {tmp_path}/x\n"
    assert "set either client_secret or client_secret_file" in error_of(text, GENESYS_SECRET="x")


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ("    clientid: typo\n", "sources[0].clientid: unknown key"),
        ("    every: 7m\n", "sources[0].every: 7m is not a whole multiple of 5m"),
        ("    every: 300\n", "sources[0].every: 300 is not a duration string"),
        ("    delay: 5m\n", "sources[0].delay: 5m is outside 0s..4m"),
        ("    windows: [soon]\n", "sources[0].windows[0]: 'soon' is not a duration"),
        ("    windows: []\n", "sources[0].windows: needs at least one window"),
        ("    windows: [1h, 60m]\n", "sources[0].windows[1]: 60m is listed twice"),
        ("    bucket: 20m\n", "sources[0].bucket: 20m is not supported (use 30m or 15m)"),
        ("    stale_after: 0\n", "sources[0].stale_after: Input should be greater than or equal to 1"),
        ("    group_by: [skill]\n", "sources[0].group_by[0]: Input should be 'media_type', 'queue' or 'agent'"),
        ("    base_url: https://api.example.com\n", "sources[0].region: set either region or base_url"),
        ("    max_query_span: 45m\n", "sources[0].max_query_span: 45m is not a multiple of the 30m bucket"),
    ],
)
def test_bad_source_keys_name_the_path(patch: str, expected: str) -> None:
    assert error_of(GOOD + patch, GENESYS_SECRET="x").startswith(f"config.yaml: {expected}")


def _url_source(url_lines: str) -> str:
    return f"""
sources:
  - name: g
    provider: genesys
    client_id: a
    client_secret: b
{url_lines}"""


def test_plain_http_to_a_public_host_is_refused() -> None:
    text = _url_source("    base_url: http://api.example.com\n    login_url: https://login.example.com\n")
    assert error_of(text) == (
        "config.yaml: sources[0].base_url: plain http:// is refused for a non-loopback host "
        "(set allow_insecure_http: true to allow it)"
    )


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000", "127.1.2.3"])
def test_plain_http_to_loopback_is_allowed(host: str) -> None:
    text = _url_source(f"    base_url: http://{host}\n    login_url: http://{host}\n")
    assert load(text).sources[0].base_url == f"http://{host}"


def test_allow_insecure_http_lets_plain_http_through() -> None:
    text = _url_source(
        "    base_url: http://proxy.internal\n    login_url: http://proxy.internal\n    allow_insecure_http: true\n"
    )
    assert load(text).sources[0].base_url == "http://proxy.internal"


def test_base_url_needs_login_url() -> None:
    assert error_of(_url_source("    base_url: https://api.example.com\n")) == (
        "config.yaml: sources[0].login_url: is required with base_url (the OAuth host differs from the API host)"
    )


def test_duplicate_names_are_refused() -> None:
    one = "  - {name: g, provider: genesys, region: mypurecloud.com, client_id: a, client_secret: b}\n"
    assert error_of("sources:\n" + one + one) == "config.yaml: sources[1].name: 'g' is already used by sources[0]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # libyaml's words ("did not find expected node content"), or PyYAML's where libyaml is missing
        ("sources: [\n", "config.yaml: line 2: YAML syntax error: "),
        ("- a\n- b\n", "config.yaml: the file must be a mapping with a `sources` list"),
        ("sources: []\n", "config.yaml: sources: must be a non-empty list of sources"),
        ("sources:\n  - {name: x, provider: avaya}\n", "config.yaml: sources[0].provider: 'avaya' is not a known"),
        ("sources:\n  - just-a-string\n", "config.yaml: sources[0]: must be a mapping"),
        ("defaults: {every: 5m, colour: red}\nsources: []\n", "config.yaml: defaults.colour: unknown key"),
        ("source: []\n", "config.yaml: source: unknown key"),
        ("sources:\n  - {name: Bad Name, provider: genesys}\n", "config.yaml: sources[0].name: String should match"),
        (
            "sources:\n  - {name: g, provider: genesys, region: x.com}\n",
            "config.yaml: sources[0].client_id: is required",
        ),
    ],
)
def test_broken_files_give_one_line(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read: No such file"):
        load_config(tmp_path / "nope.yaml")


def test_redacted_output_hides_every_secret() -> None:
    config = load(GOOD, GENESYS_SECRET="s3cr3t-value")
    out = redacted(config)
    assert "s3cr3t-value" not in out
    assert "client_secret: '**********'" in out
    assert "windows:\n  - 30m\n  - 1h" in out
    assert "bucket: 30m" in out and "refresh: 2h" in out


def test_a_sub_second_timeout_is_fine_but_not_a_sub_second_cadence() -> None:
    assert load(GOOD + "    timeout: 500ms\n", GENESYS_SECRET="x").sources[0].timeout.total_seconds == 0.5
    assert error_of(GOOD + "    delay: 1500ms\n", GENESYS_SECRET="x") == (
        "config.yaml: sources[0].delay: 1500ms is not a whole number of seconds"
    )
    assert error_of(GOOD + "    windows: [1800500ms]\n", GENESYS_SECRET="x").startswith(
        "config.yaml: sources[0].windows[0]: 1800500ms is not a multiple"
    )
