"""LivePerson source keys: what is required, what conflicts, and the 1440-minute timeframe limit."""

from typing import Any

import pytest
import yaml

from aht_exporter.config import redacted
from aht_exporter.model import ConfigError
from aht_exporter.providers.liveperson import LivePersonConfig, timeframe_needed
from aht_exporter.registry import parse_config

SECRET = "lp-secret-Wq93kZ"
CONSUMER_SECRET = "lp-consumer-secret-Jd71"
TOKEN_SECRET = "lp-token-secret-Pm42"


def liveperson_config(**overrides: Any) -> LivePersonConfig:
    """A valid LivePerson source (OAuth 2.0, domain lookup), with overrides; None removes a key."""
    raw: dict[str, Any] = {
        "name": "lp-main",
        "provider": "liveperson",
        "account_id": "12345678",
        "client_id": "client-lp",
        "client_secret": SECRET,
    }
    raw.update(overrides)
    raw = {k: v for k, v in raw.items() if v is not None}
    source = parse_config(yaml.safe_dump({"sources": [raw]}), "test.yaml", {}).sources[0]
    assert isinstance(source, LivePersonConfig)
    return source


OAUTH1: dict[str, Any] = {
    "auth": "oauth1",
    "client_id": None,
    "client_secret": None,
    "consumer_key": "ck-1",
    "consumer_secret": CONSUMER_SECRET,
    "token": "tok-1",
    "token_secret": TOKEN_SECRET,
}


def error_of(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        liveperson_config(**overrides)
    return str(info.value)


def test_defaults_are_oauth2_domain_lookup_all_skills_grouped_by_skill() -> None:
    source = liveperson_config()
    assert source.auth == "oauth2"
    assert source.token_version == "v2"  # the sentinel token API the OAuth 2.0 page does not keep for connectors
    assert source.csds_url == "https://api.liveperson.net"
    assert (source.domain, source.base_url, source.sentinel_url) == (None, None, None)
    assert (source.skills, source.agents) == ("all", "all")
    assert source.group_by == ["queue"]
    assert source.bucket_seconds == 300
    assert source.refresh_seconds == 3600


def test_oauth1_takes_the_four_app_keys() -> None:
    source = liveperson_config(**OAUTH1)
    assert source.auth == "oauth1"
    assert source.consumer_secret is not None
    assert source.consumer_secret.get_secret_value() == CONSUMER_SECRET


@pytest.mark.parametrize("version", ["v2", "v2-query", "v1"])
def test_token_version_takes_each_documented_sentinel_request(version: str) -> None:
    assert liveperson_config(token_version=version).token_version == version


def test_numeric_ids_from_yaml_become_strings() -> None:
    source = liveperson_config(account_id=12345678, skills=[12, 15, -1], agents=["7"])
    assert source.account_id == "12345678"
    assert source.skills == ["12", "15", "-1"]
    assert source.agents == ["7"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_secret": None}, "sources[0].client_secret: is required with auth: oauth2"),
        ({"client_id": None}, "sources[0].client_id: is required with auth: oauth2"),
        ({**OAUTH1, "token_secret": None}, "sources[0].token_secret: is required with auth: oauth1"),
        ({**OAUTH1, "client_id": "x"}, "sources[0].client_id: does not apply to auth: oauth1"),
        ({**OAUTH1, "sentinel_url": "https://lo.sentinel.liveperson.net"}, "sentinel_url: does not apply"),
        ({"consumer_key": "ck"}, "sources[0].consumer_key: does not apply to auth: oauth2"),
        ({"token_version": "2.0"}, "sources[0].token_version: Input should be 'v2', 'v2-query' or 'v1'"),
        ({"token_version": "V2"}, "sources[0].token_version: Input should be 'v2', 'v2-query' or 'v1'"),
        ({**OAUTH1, "token_version": "v1"}, "sources[0].token_version: does not apply to auth: oauth1"),
        ({"auth": "basic"}, "sources[0].auth:"),
        ({"domain": "va.data.liveperson.net", "base_url": "https://proxy.example"}, "set either domain or base_url"),
        ({"domain": "https://va.data.liveperson.net"}, "sources[0].domain: 'https://va.data.liveperson.net' is not a"),
        ({"account_id": "12/34"}, "sources[0].account_id:"),
        ({"group_by": ["queue", "queue"]}, "sources[0].group_by: lists a label twice"),
        ({"group_by": ["media_type"]}, "sources[0].group_by[0]:"),
        ({"skills": []}, "sources[0].skills: must be `all` or a non-empty list of ids"),
        ({"skills": "none"}, "sources[0].skills: must be `all` or a non-empty list of ids"),
        ({"skills": ["all", "12"]}, "sources[0].skills: write `all` on its own"),
        ({"agents": ["3,8"]}, "sources[0].agents: '3,8' is not a LivePerson id (a whole number, e.g. 12 or -1)"),
        ({"skills": ["Sales"]}, "sources[0].skills: 'Sales' is not a LivePerson id"),
        ({"bucket": "15m"}, "sources[0].bucket: unknown key"),
        ({"csds_url": "http://api.liveperson.net"}, "sources[0].csds_url: plain http:// is refused"),
        ({"sentinel_url": "ftp://x"}, "sources[0].sentinel_url: 'ftp://x' is not an http(s) URL"),
    ],
)
def test_bad_keys_are_one_line_errors_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    text = error_of(**overrides)
    assert message in text
    assert "\n" not in text
    assert SECRET not in text


def test_a_window_that_cannot_fit_1440_minutes_back_from_now_is_a_config_error() -> None:
    # every 5m + delay 1m (rounded up to an interval) + one spare interval: 15 minutes on top of the window.
    assert timeframe_needed(86400 - 900, 300, 60) == 1440
    liveperson_config(windows=["30m", "1425m"])
    text = error_of(windows=["30m", "1d"])
    assert text == (
        "test.yaml: sources[0].windows[1]: 1d does not fit LivePerson's 1440-minute timeframe, which counts back "
        "from now: with every 5m and delay 1m the longest window is 23h45m"
    )
    assert "longest window is 23h45m" in error_of(windows=["1430m"], every="10m", delay="0s")


def test_the_limit_follows_the_cadence_and_delay() -> None:
    liveperson_config(windows=["23h30m"], every="15m", delay="4m")  # 1410 + 15 + 5 (4m rounded up) + 5 = 1435
    assert "the longest window is 23h35m" in error_of(windows=["23h45m"], every="15m", delay="4m")


def test_check_config_output_redacts_every_secret() -> None:
    text = (
        "sources:\n  - {name: lp, provider: liveperson, account_id: '1', auth: oauth1, consumer_key: ck-9,"
        f" consumer_secret: {CONSUMER_SECRET}, token: tk-9, token_secret: {TOKEN_SECRET}}}\n"
    )
    out = redacted(parse_config(text))
    assert CONSUMER_SECRET not in out and TOKEN_SECRET not in out and "ck-9" not in out
    assert "account_id: '1'" in out


def test_secrets_accept_x_file(tmp_path: Any) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    source = liveperson_config(client_secret=None, client_secret_file=str(path))
    assert source.client_secret is not None
    assert source.client_secret.get_secret_value() == SECRET
