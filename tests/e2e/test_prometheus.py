"""A real Prometheus scrapes the exporter (serving the Genesys simulator) and PromQL equals ground truth."""

from __future__ import annotations

import asyncio
import contextlib
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from aht_exporter.providers.genesys import GenesysConfig
from tests.e2e.conftest import Stack
from tests.prometheus_bin import PrometheusServer, require


def scraping(target: str) -> str:
    """A prometheus.yml that scrapes `target` (host:port) every second, as job `aht`."""
    return (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: aht\n    static_configs:\n      - targets: ['{target}']\n"
    )


@pytest_asyncio.fixture
async def prometheus(stack: Stack, tmp_path: Path) -> AsyncIterator[str]:
    target = str(stack.client.base_url).removeprefix("http://").rstrip("/")
    async with PrometheusServer(tmp_path, scraping(target)) as running:
        yield running.url


async def query(api: str, promql: str, *, attempts: int = 120) -> list[dict[str, Any]]:
    """Ask until Prometheus has scraped something for the expression (bounded: about a minute)."""
    async with httpx.AsyncClient(base_url=api, timeout=5) as client:
        for _ in range(attempts):
            with contextlib.suppress(httpx.TransportError):
                r = await client.get("/api/v1/query", params={"query": promql})
                body: dict[str, Any] = r.json()
                assert body["status"] == "success", body
                if body["data"]["result"]:
                    result: list[dict[str, Any]] = body["data"]["result"]
                    return result
            await asyncio.sleep(0.5)  # waiting for a process to come up and scrape, not for a clock bucket
    raise AssertionError(f"Prometheus returned nothing for {promql}")


@pytest.mark.asyncio
async def test_promql_aht_over_the_1h_window_equals_ground_truth(stack: Stack, prometheus: str) -> None:
    assert await stack.exporter.poll_all()
    await stack.exporter.rendered_now()
    promql = 'sum(aht_handle_time_seconds{window="1h"}) / sum(aht_contacts_handled{window="1h"})'
    (result,) = await query(prometheus, promql)
    got = float(result["value"][1])

    handle = handled = 0.0
    for runner in stack.exporter.runners:
        data_end = runner.health.data_end
        assert data_end is not None
        assert isinstance(runner.config, GenesysConfig)
        truth = stack.sim.truth(data_end - 3600, data_end, runner.config.group_by, stack.clock.now())
        handle += sum(t.handle_seconds for t in truth.values())
        handled += sum(t.contacts_handled for t in truth.values())
    assert handled > 0
    assert got == pytest.approx(handle / handled, rel=1e-12)


@pytest.mark.asyncio
async def test_prometheus_sees_the_target_up_and_every_health_series(stack: Stack, prometheus: str) -> None:
    assert await stack.exporter.poll_all()
    await stack.exporter.rendered_now()
    (up,) = await query(prometheus, 'up{job="aht"}')
    assert up["value"][1] == "1"
    for name in (
        "aht_exporter_source_up",
        "aht_exporter_data_end_timestamp_seconds",
        "aht_exporter_poll_duration_seconds_count",
        "aht_exporter_polls_total",
        "aht_exporter_api_requests_total",
        "aht_exporter_build_info",
        "aht_queue_info",
        "aht_agent_info",
    ):
        assert await query(prometheus, name), name
    per_source = await query(prometheus, "aht_exporter_source_up == 1")
    assert {r["metric"]["source"] for r in per_source} == {"demo-genesys", "demo-genesys-agents"}


@pytest.mark.asyncio
async def test_promtool_check_metrics_accepts_the_exposition_without_warnings(stack: Stack) -> None:
    promtool = require("promtool")
    assert await stack.exporter.poll_all()
    await stack.exporter.rendered_now()
    for accept in ("text/plain", "application/openmetrics-text; version=1.0.0"):
        body = (await stack.client.get("/metrics", headers={"Accept": accept})).content
        if accept.startswith("application/openmetrics"):
            continue  # promtool check metrics reads the text format only
        proc = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await asyncio.wait_for(proc.communicate(body), timeout=60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "" and err.decode().strip() == "", err.decode()
