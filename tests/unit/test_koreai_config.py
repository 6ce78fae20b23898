"""The Kore.ai source config: its keys, defaults and one-line errors. `koreai_config` is shared by the Kore tests."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from aht_exporter.config import redacted
from aht_exporter.model import ConfigError
from aht_exporter.providers.koreai import KoreAIConfig
from aht_exporter.registry import build_config, parse_config

API = "https://platform.kore.ai"
ACCOUNT = "636f5b36bcf8a8c7101e0001"
ORG = "o-01aedac2-26fb-5bdb-bb0f-f71292ca0001"
CLIENT = "cs-cac474a3-0aa9-5c6b-b306-3263a3a50001"
SECRET = "kore-secret-Qx81vZ-0123456789abcdefghij"  # 32+ bytes, as HS256 keys should be
CALLVOLUME = f"{API}/agentassist/api/public/analytics/account/{ACCOUNT}/callvolume"


def raw_source(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "kore-us",
        "provider": "koreai",
        "account_id": ACCOUNT,
        "org_id": ORG,
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    raw.update(overrides)
    return raw


def koreai_config(**overrides: Any) -> KoreAIConfig:
    source = build_config({"sources": [raw_source(**overrides)]}, "test.yaml", {}).sources[0]
    assert isinstance(source, KoreAIConfig)
    return source


def config_error(yaml_source: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(f"sources:\n  - {yaml_source}\n", "config.yaml", {})
    return str(info.value)


BASE = f"{{name: k, provider: koreai, account_id: {ACCOUNT}, org_id: {ORG}, client_id: {CLIENT}, client_secret: s"


def test_defaults_follow_the_issue() -> None:
    config = koreai_config()
    assert config.api_url == API
    assert config.callvolume_url == CALLVOLUME
    assert (config.time_unit, config.handled_field, config.page_size) == ("ms", "completedContacts", 100)
    assert config.group_by == ["media_type", "queue"]
    assert config.bucket_seconds == 900
    assert config.refresh_seconds == 3600
    assert [w.text for w in config.windows] == ["30m", "1h"]


def test_every_key_can_be_set() -> None:
    config = koreai_config(
        base_url="https://de-platform.kore.ai/",
        time_unit="s",
        handled_field="answeredContacts",
        page_size=25,
        group_by=["queue"],
        bucket="30m",
        refresh="2h",
    )
    assert (
        config.callvolume_url
        == f"https://de-platform.kore.ai/agentassist/api/public/analytics/account/{ACCOUNT}/callvolume"
    )
    assert (config.time_unit, config.handled_field, config.page_size) == ("s", "answeredContacts", 25)
    assert (config.group_by, config.bucket_seconds, config.refresh_seconds) == (["queue"], 1800, 7200)
    assert koreai_config(timeout="1500ms").timeout.total_seconds == 1.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("page_size: 101", "sources[0].page_size: Input should be less than or equal to 100"),
        ("page_size: 0", "sources[0].page_size: Input should be greater than or equal to 1"),
        ("time_unit: min", "sources[0].time_unit: Input should be 'ms' or 's'"),
        ("handled_field: offeredContacts", "sources[0].handled_field: Input should be 'completedContacts' or"),
        ("group_by: [agent]", "sources[0].group_by[0]: Input should be 'media_type' or 'queue'"),
        ("group_by: [queue, queue]", "sources[0].group_by: lists a label twice"),
        ("bucket: 10m", "sources[0].bucket: 10m is not supported (use 15m, Kore's interval, or 5m, 30m, 1h)"),
        ("bucket: 15m500ms", "sources[0].bucket: 15m500ms is not supported"),
        ("timeout: 0s", "sources[0].timeout: must be more than 0s"),
        ("bucket: 30m, windows: [15m]", "sources[0].windows[0]: 15m is not a multiple of the source's 30m bucket"),
        ("base_url: 'http://kore.example.com'", "sources[0].base_url: plain http:// is refused"),
        ("region: us", "sources[0].region: unknown key"),
    ],
)
def test_bad_keys_are_one_line_errors_naming_the_key(extra: str, message: str) -> None:
    assert message in config_error(f"{BASE}, {extra}}}")


@pytest.mark.parametrize("missing", ["account_id", "org_id", "client_id", "client_secret"])
def test_credentials_and_ids_are_required(missing: str) -> None:
    raw = raw_source()
    del raw[missing]
    with pytest.raises(ConfigError, match=rf"sources\[0\]\.{missing}: is required"):
        parse_config(yaml.safe_dump({"sources": [raw]}), "config.yaml", {})


@pytest.mark.parametrize("account_id", ["'../other'", "'..'", "'a/b'", "'a?b'", "''"])
def test_an_account_id_that_would_change_the_url_path_is_refused(account_id: str) -> None:
    assert "sources[0].account_id: String should match pattern" in config_error(BASE.replace(ACCOUNT, account_id) + "}")


def test_the_secret_comes_from_a_file_and_is_redacted(tmp_path: Path) -> None:
    secret_file = tmp_path / "kore"
    secret_file.write_text(SECRET + "\n")
    raw = raw_source()
    del raw["client_secret"]
    raw["client_secret_file"] = str(secret_file)
    config = build_config({"sources": [raw]}, "test.yaml", {})
    source = config.sources[0]
    assert isinstance(source, KoreAIConfig)
    assert source.client_secret.get_secret_value() == SECRET
    text = redacted(config)
    assert SECRET not in text
    assert "bucket: 15m" in text and "refresh: 1h" in text
