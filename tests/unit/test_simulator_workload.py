"""The simulated workload: reproducible from its seed, and its truth is the sum of its contacts."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest

from aht_exporter.simulator.workload import (
    GROUP_LABELS,
    SLOT_SECONDS,
    Contact,
    Totals,
    Workload,
    total_by_group,
)

DAY0 = 1767225600  # 2026-01-01T00:00:00Z
LATER = DAY0 + 30 * 86400  # an as_of after every contact of the tests is visible
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ALL_GROUPINGS = [list(combo) for n in range(len(GROUP_LABELS) + 1) for combo in itertools.combinations(GROUP_LABELS, n)]


def by_hand(contacts: list[Contact], group_by: list[str]) -> dict[tuple[tuple[str, str], ...], Totals]:
    """The truth computed the slow, obvious way, to check `truth` against."""
    attr = {"media_type": "media_type", "queue": "queue_id", "agent": "agent_id"}
    groups: dict[tuple[tuple[str, str], ...], list[Contact]] = {}
    for c in contacts:
        if "agent" in group_by and c.agent_id is None:
            continue
        key = tuple(sorted((label, str(getattr(c, attr[label]))) for label in group_by))
        groups.setdefault(key, []).append(c)
    out = {}
    for key, cs in groups.items():
        handled = [c for c in cs if not c.abandoned]
        out[key] = Totals(
            handle_seconds=sum(c.handle_ms for c in handled) / 1000,
            contacts_handled=len(handled),
            talk_seconds=sum(c.talk_ms for c in handled) / 1000,
            hold_seconds=sum(c.hold_ms for c in handled) / 1000,
            acw_seconds=sum(c.acw_ms for c in handled) / 1000,
            contacts_offered=len(cs),
            contacts_answered=len(handled),
            contacts_abandoned=len(cs) - len(handled),
        )
    return out


def test_same_seed_gives_the_same_contacts_queues_and_agents() -> None:
    a, b = Workload(seed=7), Workload(seed=7)
    assert a.queues == b.queues
    assert a.agents == b.agents
    assert a.contacts(DAY0, DAY0 + 86400, LATER) == b.contacts(DAY0, DAY0 + 86400, LATER)


def test_a_different_seed_gives_different_contacts() -> None:
    assert Workload(seed=1).contacts(DAY0, DAY0 + 3600, LATER) != Workload(seed=2).contacts(DAY0, DAY0 + 3600, LATER)


def test_contacts_do_not_depend_on_the_order_slots_are_asked_for() -> None:
    forward = Workload(seed=3).contacts(DAY0, DAY0 + 6 * 3600, LATER)
    backward_workload = Workload(seed=3)
    backward: list[Contact] = []
    for k in reversed(range(6 * 3600 // SLOT_SECONDS)):
        backward = backward_workload.contacts(DAY0 + k * SLOT_SECONDS, DAY0 + (k + 1) * SLOT_SECONDS, LATER) + backward
    assert forward == backward
    assert len(forward) > 100


def test_contacts_of_a_window_straddling_slots_are_those_ending_in_it() -> None:
    w = Workload()
    start, end = DAY0 + 130.5, DAY0 + 1234.25  # not slot-aligned on either side
    everything = w.contacts(DAY0, DAY0 + 1800, LATER)
    assert w.contacts(start, end, LATER) == [c for c in everything if start <= c.ended_at < end]


def test_queue_and_agent_ids_look_like_genesys_uuids_and_names_are_set() -> None:
    w = Workload(queues=10, agents=30)
    assert len(w.queues) == 10 and len(w.agents) == 30
    for ident, name in w.queues + w.agents:
        assert UUID_RE.match(ident), ident
        assert name
    assert len({q for q, _ in w.queues}) == 10
    assert len({a for a, _ in w.agents}) == 30


def test_contacts_have_realistic_whole_millisecond_times() -> None:
    w = Workload(contacts_per_slot=20)
    contacts = w.contacts(DAY0, DAY0 + 86400, LATER)
    queue_ids, agent_ids = {q for q, _ in w.queues}, {a for a, _ in w.agents}
    for c in contacts:
        assert c.queue_id in queue_ids
        assert c.media_type in w.media_types
        assert 0 <= c.wait_ms <= 180_000
        assert c.offered_at == (round(c.ended_at * 1000) - c.wait_ms - c.handle_ms) / 1000
        assert round(c.ended_at * 1000) == c.ended_at * 1000  # whole ms
        if c.abandoned:
            assert c.agent_id is None and c.handle_ms == 0
        else:
            assert c.agent_id in agent_ids
            assert 30_000 <= c.talk_ms <= 900_000
            assert 0 <= c.hold_ms <= 180_000
            assert 0 <= c.acw_ms <= 120_000
        for value in (c.talk_ms, c.hold_ms, c.acw_ms, c.wait_ms):
            assert isinstance(value, int)
    abandoned = sum(c.abandoned for c in contacts) / len(contacts)
    assert 0.07 < abandoned < 0.13
    handled = [c for c in contacts if not c.abandoned]
    assert 0.5 < sum(c.hold_ms == 0 for c in handled) / len(handled) < 0.7
    # ~Poisson(20) per slot over a day's 288 slots
    assert 288 * 20 * 0.9 < len(contacts) < 288 * 20 * 1.1


@pytest.mark.parametrize("group_by", ALL_GROUPINGS, ids=lambda g: "+".join(g) or "none")
def test_truth_equals_the_contacts_summed_by_hand(group_by: list[str]) -> None:
    w = Workload(seed=5)
    start, end = DAY0 + 3600, DAY0 + 5 * 3600
    truth = w.truth(start, end, group_by, LATER)
    assert truth == by_hand(w.contacts(start, end, LATER), group_by)
    assert truth  # and the comparison was not of two empty dicts


def test_truth_keys_are_sorted_label_pairs() -> None:
    w = Workload()
    queue_id = w.queues[0][0]
    truth = w.truth(DAY0, DAY0 + 86400, ["queue", "media_type"], LATER)
    assert (("media_type", "voice"), ("queue", queue_id)) in truth
    assert list(w.truth(DAY0, DAY0 + 86400, [], LATER)) == [()]


def test_grouped_by_agent_abandoned_contacts_are_in_no_group() -> None:
    w = Workload(seed=9)
    overall = w.truth(DAY0, DAY0 + 86400, [], LATER)[()]
    per_agent = w.truth(DAY0, DAY0 + 86400, ["agent"], LATER).values()
    assert overall.contacts_abandoned > 0
    assert sum(t.contacts_abandoned for t in per_agent) == 0
    assert sum(t.contacts_offered for t in per_agent) == overall.contacts_handled
    assert sum(t.contacts_handled for t in per_agent) == overall.contacts_handled
    assert sum(t.handle_seconds for t in per_agent) == pytest.approx(overall.handle_seconds)


def test_totals_are_exact_to_the_millisecond() -> None:
    w = Workload()
    contacts = w.contacts(DAY0, DAY0 + 86400, LATER)
    total = w.truth(DAY0, DAY0 + 86400, [], LATER)[()]
    assert total.handle_seconds == sum(c.handle_ms for c in contacts) / 1000
    assert total.handle_seconds == pytest.approx(total.talk_seconds + total.hold_seconds + total.acw_seconds)
    assert total.contacts_offered == total.contacts_answered + total.contacts_abandoned


def test_empty_windows_and_groups_are_absent() -> None:
    w = Workload(contacts_per_slot=0)
    assert w.contacts(DAY0, DAY0 + 3600, LATER) == []
    assert w.truth(DAY0, DAY0 + 3600, ["queue"], LATER) == {}


def test_contacts_become_visible_after_the_report_lag() -> None:
    lag = 600.0
    w = Workload(report_lag=lag)
    start, end = DAY0, DAY0 + 3600
    everything = w.contacts(start, end, LATER)
    assert all(c.ended_at <= c.visible_at <= c.ended_at + lag for c in everything)
    assert any(c.visible_at > c.ended_at for c in everything)
    seen_at_end = w.contacts(start, end, end)
    assert 0 < len(seen_at_end) < len(everything)
    assert seen_at_end == [c for c in everything if c.visible_at <= end]
    assert w.contacts(start, end, end + lag) == everything
    counts = [w.truth(start, end, [], end + t)[()].contacts_offered for t in (0, 200, 400, 600)]
    assert counts == sorted(counts) and counts[-1] == len(everything)


def test_report_lag_changes_when_contacts_show_up_and_nothing_else() -> None:
    def strip(cs: list[Contact]) -> list[tuple[object, ...]]:
        return [(c.queue_id, c.agent_id, c.ended_at, c.handle_ms, c.wait_ms) for c in cs]

    assert strip(Workload(report_lag=0).contacts(DAY0, DAY0 + 3600, LATER)) == strip(
        Workload(report_lag=900).contacts(DAY0, DAY0 + 3600, LATER)
    )


def test_unknown_group_label_is_refused() -> None:
    with pytest.raises(ValueError, match="skill"):
        total_by_group([], ["skill"])


def count_generated(w: Workload, monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times each slot is generated from here on: the costly step, that the memo saves.
    (How fast generating is belongs to a benchmark, not to a test's assertion.)"""
    generated: Counter[int] = Counter()
    generate = w._generate

    def counting(k: int) -> object:
        generated[k] += 1
        return generate(k)

    monkeypatch.setattr(w, "_generate", counting)
    return generated


def test_a_day_generates_each_of_its_slots_once_and_its_truth_reuses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Workload(agents=20)
    generated = count_generated(w, monkeypatch)
    contacts = w.contacts(DAY0, DAY0 + 86400, LATER)
    day = range(DAY0 // SLOT_SECONDS, (DAY0 + 86400) // SLOT_SECONDS)
    assert generated == Counter(day)  # 288 slots, each once
    truth = w.truth(DAY0, DAY0 + 86400, ["media_type", "queue", "agent"], LATER)
    assert generated == Counter(day)  # the truth of the same day generated nothing more
    assert sum(t.contacts_offered for t in w.truth(DAY0, DAY0 + 86400, [], LATER).values()) == len(contacts)
    assert truth


def test_repeated_queries_are_served_from_the_slot_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Workload()
    first = w.contacts(DAY0, DAY0 + 86400, LATER)
    generated = count_generated(w, monkeypatch)
    for _ in range(10):
        assert w.contacts(DAY0, DAY0 + 86400, LATER) == first
    assert not generated


def test_the_slot_memo_is_bounded_and_regenerates_the_same_contacts(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Workload(cache_slots=16)
    first = w.contacts(DAY0, DAY0 + 86400, LATER)  # 288 slots through a memo of 16
    generated = count_generated(w, monkeypatch)
    w.contacts(DAY0 + 86400 - 16 * SLOT_SECONDS, DAY0 + 86400, LATER)
    assert not generated  # the newest 16 are kept
    assert w.contacts(DAY0, DAY0 + 86400, LATER) == first  # the others, generated again, are the same
    assert sum(generated.values()) == 288
