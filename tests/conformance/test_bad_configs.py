"""Each provider's config model refuses a bad source with one line naming the file, the source and the key
(`<file>: sources[N].<key>: <what is wrong>`, the SPEC's form), through the registry's parse_config: an
unknown key, each required key left out, and each key of a wrong type."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from aht_exporter.config import SourceConfig
from aht_exporter.model import ConfigError
from aht_exporter.providers import PROVIDERS
from aht_exporter.registry import parse_config
from tests.conformance.cases import NAMES, demo_of

FILE = "bad.yaml"
NOWHERE = "http://127.0.0.1:9"
# A value no scalar or list key takes: a mapping of a list.
WRONG = {"not": ["a", "value"]}
# Another provider's valid source goes first, so that the index in the message is the bad source's own.
FIRST: dict[str, Any] = {
    "name": "first",
    "provider": "ozonetel",
    "user_name": "u",
    "api_key": "k",
    "agents": ["a1"],
    "base_url": NOWHERE,
}


def demo_source(name: str) -> dict[str, Any]:
    return demo_of(name).sources(NOWHERE)[0]


def refusal(source: dict[str, Any]) -> str:
    text = yaml.safe_dump({"sources": [FIRST, source]})
    with pytest.raises(ConfigError) as caught:
        parse_config(text, FILE, {})
    message = str(caught.value)
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    return message


def required_keys(model: type[SourceConfig]) -> list[str]:
    return [key for key, field in model.model_fields.items() if field.is_required()]


def own_scalar_keys(model: type[SourceConfig]) -> list[str]:
    """The provider's own keys (not the common ones every source has) whose type takes no mapping."""
    return [
        key
        for key, field in model.model_fields.items()
        if key not in SourceConfig.model_fields and "dict" not in str(field.annotation).lower()
    ]


@pytest.mark.parametrize("name", NAMES)
def test_the_demo_source_itself_is_accepted(name: str) -> None:
    """What the tests below break is a good source to begin with."""
    config = parse_config(yaml.safe_dump({"sources": [FIRST, demo_source(name)]}), FILE, {})
    assert [s.provider for s in config.sources] == ["ozonetel", name]


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_key_is_refused_by_name(name: str) -> None:
    assert refusal(demo_source(name) | {"bogus_key": 1}) == f"{FILE}: sources[1].bogus_key: unknown key"


@pytest.mark.parametrize("name", NAMES)
def test_each_required_key_left_out_is_named(name: str) -> None:
    keys = [k for k in required_keys(PROVIDERS[name].config_model) if k != "provider"]
    assert "name" in keys, keys
    for key in keys:
        source = {k: v for k, v in demo_source(name).items() if k != key}
        assert refusal(source) == f"{FILE}: sources[1].{key}: is required"


@pytest.mark.parametrize("name", NAMES)
def test_a_source_without_a_provider_is_refused(name: str) -> None:
    source = {k: v for k, v in demo_source(name).items() if k != "provider"}
    assert refusal(source).startswith(f"{FILE}: sources[1].provider: ")


@pytest.mark.parametrize("name", NAMES)
def test_each_key_of_a_wrong_type_is_named(name: str) -> None:
    model = PROVIDERS[name].config_model
    keys = sorted(set(required_keys(model)) - {"provider"} | set(own_scalar_keys(model)))
    for key in keys:
        message = refusal(demo_source(name) | {key: WRONG})
        head = f"{FILE}: sources[1].{key}"
        assert message.startswith(head), (key, message)
        assert message[len(head) :].partition(": ")[2], f"says not what is wrong: {message!r}"
