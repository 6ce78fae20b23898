"""An Ozonetel source's config: its keys, its fixed 2h window, and one readable line per mistake."""

import logging
from pathlib import Path

import pytest

from aht_exporter.config import redacted
from aht_exporter.health import SourceHealth
from aht_exporter.model import ConfigError
from aht_exporter.providers.ozonetel import OzonetelConfig, OzonetelProvider, requests_per_poll
from aht_exporter.registry import build_config, parse_config
from aht_exporter.scheduler import Exporter

KEY = "oz-key-Q7w9e2Lm"
SOURCE = "  - name: oz\n    provider: ozonetel\n    user_name: acme\n    api_key: " + KEY + "\n"


def load(extra: str = "", defaults: str = "", env: dict[str, str] | None = None) -> OzonetelConfig:
    text = (f"defaults:\n{defaults}" if defaults else "") + "sources:\n" + SOURCE + extra
    source = parse_config(text, "oz.yaml", env or {}).sources[0]
    assert isinstance(source, OzonetelConfig)
    return source


def error_of(extra: str = "", defaults: str = "", source: str = SOURCE) -> str:
    text = (f"defaults:\n{defaults}" if defaults else "") + "sources:\n" + source + extra
    with pytest.raises(ConfigError) as info:
        parse_config(text, "oz.yaml", {})
    return str(info.value)


def test_the_defaults_are_the_documented_ones() -> None:
    source = load("    agents: [a1]\n")
    assert source.api_url == "https://in1-ccaas-api.ozonetel.com"
    assert (source.auth, source.method, source.rate_limit) == ("token", "POST", 50)
    assert [w.text for w in source.windows] == ["2h"]
    assert source.agents == ["a1"] and source.campaigns == []
    assert source.api_key.get_secret_value() == KEY


def test_every_key_can_be_set() -> None:
    source = load(
        "    base_url: https://api.ccaas.ozonetel.com/\n    auth: basic\n    method: get\n    rate_limit: 40\n"
        "    agents: [a1, a2]\n    campaigns: [Sales Outbound]\n    every: 10m\n    timeout: 5s\n"
    )
    assert source.api_url == "https://api.ccaas.ozonetel.com"
    assert (source.auth, source.method, source.rate_limit) == ("basic", "GET", 40)
    assert source.campaigns == ["Sales Outbound"] and source.every.seconds == 600


def test_only_the_defaults_that_apply_are_inherited() -> None:
    source = load("    agents: [a1]\n", defaults="  every: 10m\n  windows: [30m]\n  refresh: 3h\n  stale_after: 5\n")
    assert source.every.seconds == 600 and source.stale_after == 5
    assert [w.text for w in source.windows] == ["2h"]
    assert "windows" not in source.model_fields_set and "refresh" not in source.model_fields_set


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    agents: [a1]\n    windows: [2h]\n", "sources[0].windows: does not apply to ozonetel"),
        ("    agents: [a1]\n    refresh: 1h\n", "sources[0].refresh: does not apply to ozonetel"),
        ("    agents: [a1]\n    bucket: 2h\n", "sources[0].bucket: does not apply to ozonetel"),
        ("", "sources[0].agents: list at least one agent or campaign"),
        ("    agents: []\n    campaigns: []\n", "sources[0].agents: list at least one agent or campaign"),
        ("    agents: [a1, a2, a1]\n", "sources[0].agents[2]: 'a1' is listed twice"),
        ("    campaigns: [Sales, Sales]\n", "sources[0].campaigns[1]: 'Sales' is listed twice"),
        ("    agents: ['']\n", "sources[0].agents[0]: String should have at least 1 character"),
        ("    agents: [a1]\n    auth: oauth\n", "sources[0].auth: Input should be 'token' or 'basic'"),
        ("    agents: [a1]\n    method: PUT\n", "sources[0].method: Input should be 'POST' or 'GET'"),
        ("    agents: [a1]\n    rate_limit: 0\n", "sources[0].rate_limit: Input should be greater than or equal to 1"),
        ("    agents: [a1]\n    every: 1m\n", "sources[0].every: 1m is not a whole multiple of 5m"),
        ("    agents: [a1]\n    base_url: http://ozonetel.example\n", "sources[0].base_url: plain http://"),
        ("    agents: [a1]\n    agentId: a1\n", "sources[0].agentId: unknown key"),
    ],
)
def test_a_mistake_is_one_line_naming_the_key_path(extra: str, expected: str) -> None:
    message = error_of(extra)
    assert message.startswith(f"oz.yaml: {expected}"), message
    assert "\n" not in message and KEY not in message


def test_user_name_and_api_key_are_required_and_not_empty() -> None:
    assert error_of(source="  - {name: oz, provider: ozonetel, api_key: k, agents: [a]}\n") == (
        "oz.yaml: sources[0].user_name: is required"
    )
    assert error_of(source="  - {name: oz, provider: ozonetel, user_name: u, agents: [a]}\n") == (
        "oz.yaml: sources[0].api_key: is required"
    )
    assert error_of(source="  - {name: oz, provider: ozonetel, user_name: u, api_key: ' ', agents: [a]}\n") == (
        "oz.yaml: sources[0].api_key: must not be empty"
    )


def test_the_api_key_can_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    from_file = parse_config(
        f"sources:\n  - {{name: oz, provider: ozonetel, user_name: u, api_key_file: {secret}, agents: [a]}}\n",
        "oz.yaml",
        {},
    ).sources[0]
    from_env = parse_config(
        "sources:\n  - {name: oz, provider: ozonetel, user_name: u, api_key: '${OZ_KEY}', agents: [a]}\n",
        "oz.yaml",
        {"OZ_KEY": KEY},
    ).sources[0]
    for source in (from_file, from_env):
        assert isinstance(source, OzonetelConfig)
        assert source.api_key.get_secret_value() == KEY


def test_check_config_output_can_be_pasted_back_and_hides_the_key() -> None:
    config = parse_config("sources:\n" + SOURCE + "    agents: [a1]\n", "oz.yaml", {})
    text = redacted(config)
    assert KEY not in text
    # The fixed window is not printed: those keys are refused on an Ozonetel source.
    assert "windows" not in text and "bucket" not in text and "refresh" not in text
    assert "api_key: '**********'" in text


@pytest.mark.parametrize(
    ("every", "rate_limit", "auth", "per_poll"),
    [
        ("5m", 50, "token", 233),  # 285 s of a 5m poll at one request every 1.22 s: 234, one kept for a token
        ("5m", 50, "basic", 234),
        ("10m", 50, "token", 479),
        ("5m", 10, "token", 46),
    ],
)
def test_how_many_targets_one_poll_serves(every: str, rate_limit: int, auth: str, per_poll: int) -> None:
    source = load(f"    agents: [a1]\n    every: {every}\n    rate_limit: {rate_limit}\n    auth: {auth}\n")
    assert requests_per_poll(source) == per_poll


def test_a_warning_at_start_when_the_targets_do_not_fit_one_poll(caplog: pytest.LogCaptureFixture) -> None:
    agents = ", ".join(f"a{i}" for i in range(300))
    source = load(f"    agents: [{agents}]\n")
    with caplog.at_level(logging.WARNING):
        OzonetelProvider(source, SourceHealth("oz", "ozonetel", 3))
    (record,) = caplog.records
    assert record.getMessage().startswith("more targets than one poll can serve at rate_limit")
    fields = record.__dict__
    assert (fields["source"], fields["targets"], fields["per_poll"], fields["refreshed_every"]) == (
        "oz",
        300,
        233,
        "10m",
    )


def test_a_warning_at_start_when_the_sources_of_one_account_ask_too_much_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def sources(n: int) -> list[dict[str, object]]:
        common = {"provider": "ozonetel", "user_name": "acme", "api_key": "k"}
        agents = [f"a{i}" for i in range(n)]
        return [
            {**common, "name": "oz-agents", "agents": agents},
            {**common, "name": "oz-campaigns", "campaigns": [f"c{i}" for i in range(n)]},
            {**common, "name": "oz-elsewhere", "user_name": "globex", "agents": agents},
        ]

    with caplog.at_level(logging.WARNING):
        Exporter(build_config({"sources": sources(150)}, "test.yaml", {}))  # 300 targets in 5 minutes: 60 of 50
    (record,) = caplog.records
    assert record.getMessage().startswith("the sources of one account ask more than its rate_limit allows together")
    assert (record.__dict__["sources"], record.__dict__["requests_per_minute"]) == ("oz-agents,oz-campaigns", 60.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Exporter(build_config({"sources": sources(100)}, "test.yaml", {}))  # 200 in 5 minutes: 40 a minute
    assert caplog.records == []


def test_no_warning_when_they_fit(caplog: pytest.LogCaptureFixture) -> None:
    agents = ", ".join(f"a{i}" for i in range(233))
    with caplog.at_level(logging.WARNING):
        OzonetelProvider(load(f"    agents: [{agents}]\n"), SourceHealth("oz", "ozonetel", 3))
    assert caplog.records == []


def test_a_rate_limit_above_the_documented_one_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        OzonetelProvider(load("    agents: [a1]\n    rate_limit: 60\n"), SourceHealth("oz", "ozonetel", 3))
    assert [r.getMessage() for r in caplog.records] == ["rate_limit is above the 50/min Ozonetel documents"]
