"""A web config file is held to the main config's limits: no hostile file crashes, hangs or exhausts memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from aht_exporter.model import ConfigError
from aht_exporter.webconfig import load_web_config

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (BOMB.encode(), "once its aliases are expanded"),
        (("basic_auth_users: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nesting depth"),
        (b"basic_auth_users:\n  al\xe9: x\n", "not UTF-8"),
        (b"? [a, b]\n: 1\n", "key"),
    ],
    ids=["alias-bomb", "deep-nesting", "not-utf8", "list-as-key"],
)
def test_a_hostile_web_config_is_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert expected in message


def test_a_device_as_web_config_is_refused_without_reading_it() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_web_config("/dev/zero")


def test_an_oversized_web_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_web_config(str(path))
