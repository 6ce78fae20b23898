"""Ready-made averages (providers like Ozonetel that give AHT over a fixed span and no sums)."""

import asyncio
from typing import Any, ClassVar

import pytest

from aht_exporter.clock import FakeClock
from aht_exporter.config import SourceConfig
from aht_exporter.exposition import SourceView, render
from aht_exporter.health import SourceHealth
from aht_exporter.model import AverageUpdate, Field, Labels, Names, ProviderError, make_labels
from aht_exporter.providers import PROVIDERS
from aht_exporter.providers.base import AverageProvider, ClientNeeds, DataAge
from aht_exporter.redact import Redactor
from aht_exporter.registry import build_config
from aht_exporter.scheduler import SourceRunner
from aht_exporter.store import AverageStore, Snapshot
from aht_exporter.timebuckets import Duration
from tests.helpers import T0, parse_exposition, samples

A1 = make_labels(agent="a1", media_type="voice")
A2 = make_labels(agent="a2", media_type="voice")
C1 = make_labels(media_type="voice", queue="c1")


def averages(snapshot: Snapshot) -> dict[str, dict[Labels, float]]:
    """The AHT each window shows: a vendor's average is held as handle time over one contact."""
    return {
        window: {labels: t[Field.HANDLE_TIME] / t[Field.CONTACTS_HANDLED] for labels, t in groups.items()}
        for window, groups in snapshot.windows.items()
    }


def test_a_refresh_of_some_targets_keeps_the_others_last_value() -> None:
    store = AverageStore(Duration.parse("2h"))
    store.publish(AverageUpdate({A1: 100.0, A2: 200.0}))
    store.publish(AverageUpdate({A2: 250.0}))
    assert averages(store.snapshot(T0)) == {"2h": {A1: 100.0, A2: 250.0}}


def test_no_handled_contact_means_the_series_is_absent_and_removed_targets_go() -> None:
    store = AverageStore(Duration.parse("2h"))
    store.publish(AverageUpdate({A1: 100.0, A2: 200.0, C1: 30.0}))
    store.publish(AverageUpdate({A1: None}, removed=frozenset({A2})))
    snap = store.snapshot(T0, Names(agents={"a1": "Ann", "a2": "Bob"}, queues={"c1": "Outbound"}))
    assert averages(snap) == {"2h": {C1: 30.0}}
    assert snap.names == Names(queues={"c1": "Outbound"})
    assert snap.series == 1 and snap.fields == frozenset()


def test_max_series_applies_to_averages() -> None:
    store = AverageStore(Duration.parse("2h"))
    store.publish(AverageUpdate({make_labels(agent=f"a{i}"): float(i) for i in range(10)}))
    snap = store.snapshot(T0, max_series=4)
    assert len(averages(snap)["2h"]) == 4 and snap.series_dropped == 6


def test_averages_are_exported_as_aht_seconds_only() -> None:
    store = AverageStore(Duration.parse("2h"))
    store.publish(AverageUpdate({A1: 157.0}))
    health = SourceHealth("oz", "ozonetel", 3, up=True, polled=True)
    series = parse_exposition(render([SourceView(health, store.snapshot(T0))]).text.decode())
    assert samples(series, "aht_seconds") == {
        (("agent", "a1"), ("media_type", "voice"), ("provider", "ozonetel"), ("source", "oz"), ("window", "2h")): 157.0
    }
    assert samples(series, "aht_handle_time_seconds") == {}
    assert samples(series, "aht_contacts_handled") == {}


class FixedWindowConfig(SourceConfig):
    """A provider whose window is fixed: it takes only some keys from `defaults`."""

    fixed_keys: ClassVar[frozenset[str]] = frozenset({"windows", "refresh"})
    provider: str = "fixed"


class Scripted(AverageProvider[FixedWindowConfig]):
    name = "fixed"
    config_model = FixedWindowConfig
    data_age = DataAge(bucket=300, delay=0)

    def __init__(self, config: FixedWindowConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        self.updates: list[AverageUpdate | Exception] = []

    def client_needs(self) -> ClientNeeds:
        return ClientNeeds(error_message=lambda body: None)

    async def fetch(self, start: int, end: int) -> AverageUpdate:
        item = self.updates.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def names(self) -> Names:
        return Names(agents={"a1": "Ann"})


class OneByOne(Scripted):
    """Publishes each average as it 'arrives', waiting for `next` between them, as a paced round does."""

    def __init__(self, config: FixedWindowConfig, health: SourceHealth, **kwargs: Any) -> None:
        super().__init__(config, health, **kwargs)
        self.next = asyncio.Event()

    async def fetch(self, start: int, end: int) -> AverageUpdate:
        got: dict[Labels, float | None] = {}
        for labels, value in ((A1, 100.0), (A2, 50.0)):
            await self.next.wait()
            self.next.clear()
            got[labels] = value
            self.publish(AverageUpdate({labels: value}))
        return AverageUpdate(got)


@pytest.fixture
def fixed_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROVIDERS, "fixed", Scripted)


@pytest.mark.usefixtures("fixed_provider")
def test_defaults_a_provider_does_not_take_are_not_merged_into_it() -> None:
    config = build_config(
        {"defaults": {"windows": ["30m"], "every": "10m"}, "sources": [{"name": "f", "provider": "fixed"}]}, "t", {}
    )
    (source,) = config.sources
    assert source.every.seconds == 600
    assert [w.text for w in source.windows] == ["30m", "1h"]  # the model's own default, not `defaults`
    assert "windows" not in source.model_fields_set


@pytest.mark.usefixtures("fixed_provider")
@pytest.mark.asyncio
async def test_the_runner_polls_an_average_provider_and_keeps_unrefreshed_targets() -> None:
    config = build_config({"sources": [{"name": "f", "provider": "fixed", "windows": ["2h"]}]}, "t", {}).sources[0]
    assert isinstance(config, FixedWindowConfig)
    provider = Scripted(config, SourceHealth("f", "fixed", 2))
    provider.updates = [
        AverageUpdate({A1: 100.0, A2: 50.0}),
        ProviderError("userName or apiKey is Invalid"),
        AverageUpdate({A2: 60.0}),
    ]
    clock = FakeClock(T0)
    runner = SourceRunner(config, provider, clock=clock, redactor=Redactor([]))
    assert await runner.poll()
    assert runner.snapshot is not None and runner.snapshot.data_end == T0
    assert averages(runner.snapshot) == {"2h": {A1: 100.0, A2: 50.0}}
    assert runner.snapshot.names == Names(agents={"a1": "Ann"})
    clock.advance(300)
    assert not await runner.poll()
    assert runner.health.last_error == "userName or apiKey is Invalid"
    clock.advance(300)
    assert await runner.poll()
    assert averages(runner.snapshot) == {"2h": {A1: 100.0, A2: 60.0}}
    assert runner.health.data_end == T0 + 600
    await provider.aclose()


@pytest.mark.usefixtures("fixed_provider")
@pytest.mark.asyncio
async def test_answers_are_shown_as_they_arrive_not_when_the_round_ends() -> None:
    config = build_config({"sources": [{"name": "f", "provider": "fixed", "windows": ["2h"]}]}, "t", {}).sources[0]
    assert isinstance(config, FixedWindowConfig)
    provider = OneByOne(config, SourceHealth("f", "fixed", 2))
    renders: list[dict[Labels, float]] = []
    runner: SourceRunner

    def on_update() -> None:
        assert runner.snapshot is not None
        renders.append(averages(runner.snapshot)["2h"])

    gap = 0.0
    runner = SourceRunner(
        config, provider, clock=FakeClock(T0), redactor=Redactor([]), on_update=on_update, publish_gap=lambda: gap
    )
    poll = asyncio.ensure_future(runner.poll())
    provider.next.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert renders == [{A1: 100.0}]  # the first answer is on /metrics while the round goes on
    assert not poll.done() and not runner.health.polled
    gap = 3600.0  # renders are dear now: the next part waits for the end of the poll
    provider.next.set()
    assert await poll
    assert renders == [{A1: 100.0}, {A1: 100.0, A2: 50.0}]  # the second one came with the poll's end
    await provider.aclose()
