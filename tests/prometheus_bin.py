"""Finding the real Prometheus binaries: skip with a reason when absent, fail when CI requires them."""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is not None:
        return path
    reason = f"`{binary}` is not installed (Debian package `prometheus`)"
    if os.environ.get("AHT_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{reason}, and AHT_REQUIRE_PROMETHEUS=1 says these tests must run")
    pytest.skip(reason)
