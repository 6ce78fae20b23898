"""Hostile config files through the real command line (issue 12): each one exits 2 with one line naming the
file and what is wrong, no traceback, nothing on stdout, no secret, in a process held to 1 GiB of memory.

Each file below crashed, hung or was accepted before: a billion laughs ran past 1.1 GB, `/dev/zero` as a
secret past 12 GB, deep nesting and non-UTF-8 bytes gave tracebacks, absurd durations passed --check-config
and then overflowed the scheduler or hung --once, and a password in base_url was printed in clear.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# A source no test ever reaches: if a config were wrongly accepted, --once and serving would fail on a
# closed loopback port, never on the network.
GENESYS = (
    "  - name: g\n    provider: genesys\n    base_url: http://127.0.0.1:9\n    login_url: http://127.0.0.1:9\n"
    "    client_id: id\n    client_secret: s3\n"
)
GOOD = "sources:\n" + GENESYS
PASSWORD = "Hunter2Secret"
MEMORY = 1 << 30  # address space of the exporter's process: the bombs went past it, the refusals stay far below


def alias_bomb(indent: str) -> str:
    """A billion laughs: 10^9 values once expanded, in 600 bytes."""
    lines = [f"{indent}l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)]
    return "".join(lines)


def write(text: str | bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "config.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return make


def huge_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    with path.open("w") as f:
        f.write(GOOD + "    queues:\n")
        f.write("      - queue-0000000000000000000000000000\n" * 1_100_000)  # 45 MB
    return path


def binary_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + PASSWORD.encode() + b"\x00")
    return write(GOOD.replace("client_secret: s3", f"client_secret_file: {secret}"))(tmp_path)


CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    # (case, the file, what stderr says after "<file>: ")
    ("alias-bomb-in-a-source", write(GOOD + "    x:\n" + alias_bomb("      ")), "line 13: more than 100000 values"),
    ("alias-bomb-in-defaults", write("defaults:\n" + alias_bomb("  ") + GOOD), "line 6: more than 100000 values"),
    (
        "deep-flow-nesting",
        write(GOOD + "    x: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n"),
        "line 8: mappings and lists are nested more than 32 deep",
    ),
    (
        "deep-block-nesting",
        write(GOOD + "    x:\n" + "".join(" " * (6 + i) + "- \n" for i in range(1000))),
        "line 38: mappings and lists are nested more than 32 deep",
    ),
    ("list-as-key", write("? [a, b]\n: 1\n" + GOOD), "line 1: a key must be a plain value, not a list or a mapping"),
    (
        "dev-zero-secret",
        write(GOOD.replace("client_secret: s3", "client_secret_file: /dev/zero")),
        "sources[0].client_secret_file: /dev/zero is a character device, not a regular file",
    ),
    ("binary-secret", binary_secret, "sources[0].client_secret_file: "),
    ("45mb-file", huge_file, "is larger than 1MiB, the most a config file may hold"),
    ("not-utf8", write(GOOD.encode() + b"    queues: [caf\xe9]\n"), "line 8: not UTF-8 text (byte 0xe9)"),
    (
        "every-absurd",
        write(GOOD + "    every: 100000000000000000000d\n"),
        "sources[0].every: '100000000000000000000d' has a number of more than 10 digits",
    ),
    ("every-beyond-a-day", write(GOOD + "    every: 9999999999d\n"), "sources[0].every: 9999999999d is longer than 1d"),
    (
        "window-absurd",
        write(GOOD + "    windows: [99999999999999999999999h]\n"),
        "sources[0].windows[0]: '99999999999999999999999h' has a number of more than 10 digits",
    ),
    ("window-beyond-a-week", write(GOOD + "    windows: [9999999h]\n"), "sources[0].windows[0]: 9999999h is longer"),
    (
        "password-in-base-url",
        write(GOOD.replace("http://127.0.0.1:9\n", f"https://user:{PASSWORD}@proxy.example/api\n", 1)),
        "sources[0].base_url: must not contain `@`",
    ),
]

MODES = {
    "check-config": ["--check-config"],
    "once": ["--once"],
    "serve": ["--web.listen-address=127.0.0.1:0"],
}


def run(path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    return subprocess.run(
        [sys.executable, "-m", "aht_exporter", f"--config.file={path}", *MODES[mode]],
        capture_output=True,
        text=True,
        timeout=60,  # a hang guard, not a measure: a refusal takes well under a second
        env={**os.environ},
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_memory,
    )


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_config_refuses_a_hostile_file_in_one_line(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    path = make(tmp_path)
    done = run(path, "check-config")
    assert_refused(done, path, expected)


@pytest.mark.parametrize(
    ("case", "mode"),
    [
        ("every-absurd", "serve"),
        ("every-beyond-a-day", "serve"),
        ("window-absurd", "once"),
        ("alias-bomb-in-defaults", "serve"),
    ],
)
def test_running_refuses_it_too(tmp_path: Path, case: str, mode: str) -> None:
    (_, make, expected) = next(c for c in CASES if c[0] == case)
    path = make(tmp_path)
    assert_refused(run(path, mode), path, expected)


def assert_refused(done: subprocess.CompletedProcess[str], path: Path, expected: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n"), done.stderr[-2000:]
    assert done.stderr.startswith(f"{path}: {expected}"), done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
