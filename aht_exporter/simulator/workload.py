"""A deterministic contact-center workload: the ground truth every provider simulator serves.

Contacts are generated per 5-minute UTC slot of their attribution time (`ended_at`, when after-contact
work ended), each slot from its own random generator seeded by (seed, slot). So any window, past or
future, asked for in any order, always holds the same contacts, and a test can compare what the exporter
exports with `Workload.truth` over the same window. Nothing here knows any vendor: each simulator
renders these contacts in its vendor's format.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter

from aht_exporter.model import Labels

SLOT_SECONDS = 300
"""Contacts are generated per slot of this many seconds, aligned to UTC multiples of it."""

GROUP_LABELS = ("agent", "media_type", "queue")
"""The labels `Workload.truth` can group by (the exporter's `group_by` vocabulary)."""
_LABEL_ATTRS = {"agent": "agent_id", "media_type": "media_type", "queue": "queue_id"}

_SLOT_MS = SLOT_SECONDS * 1000
_ABANDON_RATE = 0.10
_HOLD_RATE = 0.4  # share of handled contacts that were put on hold at least once
_ACW_RATE = 0.85  # share of handled contacts with any after-contact work
_TALK_MEDIAN_MS = 240_000
_TALK_MS = (30_000, 900_000)  # 30 s .. 15 min
_HOLD_MS = (1_000, 180_000)  # 1 s .. 3 min, when held
_ACW_MS = (1_000, 120_000)  # 1 s .. 2 min, when any
_WAIT_MS = 180_000  # queue wait 0 .. 3 min
_CACHED_CONTACTS = 1_000_000  # memory bound of the slot memo: about 250 MB of contacts at most
_MAX_CACHED_SLOTS = 4096

_QUEUE_NAMES = ("Sales", "Support", "Billing", "Retention", "Technical", "Claims", "Onboarding", "Returns")
_FIRST_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lea")
_LAST_NAMES = ("Alvarez", "Brown", "Costa", "Dubois", "Eriksen", "Fischer", "Gupta", "Haddad", "Ito", "Jin")


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact (call, chat, email...) offered to a queue; times in Unix seconds, durations in ms."""

    queue_id: str
    agent_id: str | None  # None when abandoned
    media_type: str  # lower case: voice, chat, message, email, callback
    offered_at: float
    ended_at: float  # when after-contact work ended (or the contact was abandoned): the attribution time
    visible_at: float  # when the provider's analytics first reports it
    talk_ms: int
    hold_ms: int
    acw_ms: int
    wait_ms: int  # queue wait before answer or abandon
    abandoned: bool

    @property
    def handle_ms(self) -> int:
        return self.talk_ms + self.hold_ms + self.acw_ms


@dataclass(frozen=True, slots=True)
class Totals:
    """What a set of contacts adds up to; times in seconds, exact to the millisecond."""

    handle_seconds: float
    contacts_handled: int
    talk_seconds: float
    hold_seconds: float
    acw_seconds: float
    contacts_offered: int
    contacts_answered: int
    contacts_abandoned: int


@dataclass(frozen=True, slots=True)
class _Slot:
    contacts: tuple[Contact, ...]  # sorted by ended_at
    last_visible: float  # the slot is complete for any as_of at or after this


class Workload:
    """Queues, agents and the contacts they handled, reproducible from `seed` for any time."""

    def __init__(
        self,
        seed: int = 1,
        queues: int = 4,
        agents: int = 20,
        media_types: Sequence[str] = ("voice", "chat", "message", "email", "callback"),
        contacts_per_slot: float = 6.0,
        report_lag: float = 0.0,
        cache_slots: int | None = None,
    ) -> None:
        if queues < 1 or agents < 1 or not media_types:
            raise ValueError("a workload needs at least one queue, one agent and one media type")
        if contacts_per_slot < 0 or report_lag < 0:
            raise ValueError("contacts_per_slot and report_lag must not be negative")
        self.seed = seed
        self.media_types = tuple(m.lower() for m in media_types)
        self.contacts_per_slot = contacts_per_slot
        self.report_lag = report_lag
        self.queues = _make_queues(seed, queues)
        self.agents = _make_agents(seed, agents)
        self._queue_ids = tuple(q for q, _ in self.queues)
        self._agent_ids = tuple(a for a, _ in self.agents)
        self._slots: OrderedDict[int, _Slot] = OrderedDict()
        default_slots = max(16, min(_MAX_CACHED_SLOTS, int(_CACHED_CONTACTS / max(contacts_per_slot, 1.0))))
        # How many 5-minute slots to keep generated: what a long soak bounds to measure the exporter alone.
        self._max_slots = cache_slots if cache_slots is not None else default_slots

    def contacts(self, start: float, end: float, as_of: float) -> list[Contact]:
        """Contacts with start <= ended_at < end that the provider reports at `as_of`, by ended_at."""
        found: list[Contact] = []
        for k in range(math.floor(start / SLOT_SECONDS), math.ceil(end / SLOT_SECONDS)):
            slot = self._slot(k)
            whole = start <= k * SLOT_SECONDS and (k + 1) * SLOT_SECONDS <= end
            if whole and slot.last_visible <= as_of:
                found.extend(slot.contacts)  # the common case: no per-contact test
            else:
                found.extend(c for c in slot.contacts if start <= c.ended_at < end and c.visible_at <= as_of)
        return found

    def truth(self, start: float, end: float, group_by: Sequence[str], as_of: float) -> dict[Labels, Totals]:
        """What the exporter must compute over [start, end) at `as_of`, per group; empty groups absent.

        Abandoned contacts have no agent: grouped by agent, they are in no group at all.
        """
        return total_by_group(self.contacts(start, end, as_of), group_by)

    def _slot(self, k: int) -> _Slot:
        slot = self._slots.get(k)
        if slot is not None:
            self._slots.move_to_end(k)
            return slot
        slot = self._generate(k)
        self._slots[k] = slot
        if len(self._slots) > self._max_slots:
            self._slots.popitem(last=False)
        return slot

    def _generate(self, k: int) -> _Slot:
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes and
        # PYTHONHASHSEED, and slot k never depends on which slots were generated before it.
        rng = random.Random(f"{self.seed}:{k}")
        count = _poisson(rng, self.contacts_per_slot)
        contacts = sorted(self._draw(rng, count, k * _SLOT_MS), key=attrgetter("ended_at"))
        last_visible = max((c.visible_at for c in contacts), default=-math.inf)
        return _Slot(tuple(contacts), last_visible)

    def _draw(self, rng: random.Random, count: int, slot_start_ms: int) -> Iterator[Contact]:
        """`count` contacts ending in the slot. The hot loop of big benchmarks: locals only, few calls."""
        r, gauss = rng.random, rng.gauss
        queue_ids, agent_ids, media_types = self._queue_ids, self._agent_ids, self.media_types
        n_queues, n_agents, n_media = len(queue_ids), len(agent_ids), len(media_types)
        lag_ms, talk_mu = self.report_lag * 1000, math.log(_TALK_MEDIAN_MS)
        for _ in range(count):
            ended_ms = slot_start_ms + int(r() * _SLOT_MS)
            queue_id = queue_ids[int(r() * n_queues)]
            media_type = media_types[int(r() * n_media)]
            wait_ms = int(r() * (_WAIT_MS + 1))
            # Drawn for every contact, so report_lag changes when contacts show up and nothing else.
            visible_ms = ended_ms + int(r() * lag_ms)
            agent_id: str | None = None
            talk_ms = hold_ms = acw_ms = 0
            if r() >= _ABANDON_RATE:
                agent_id = agent_ids[int(r() * n_agents)]
                talk_ms = min(max(int(math.exp(gauss(talk_mu, 0.7))), _TALK_MS[0]), _TALK_MS[1])
                hold_ms = _uniform_ms(r(), _HOLD_MS) if r() < _HOLD_RATE else 0
                acw_ms = _uniform_ms(r(), _ACW_MS) if r() < _ACW_RATE else 0
            # Exact integer ms, divided once, so a boundary comparison sees the same float for the same
            # instant as the simulators' own ms arithmetic does. Positional: this runs millions of times.
            yield Contact(
                queue_id,
                agent_id,
                media_type,
                (ended_ms - wait_ms - talk_ms - hold_ms - acw_ms) / 1000,  # offered_at
                ended_ms / 1000,  # ended_at
                visible_ms / 1000,  # visible_at
                talk_ms,
                hold_ms,
                acw_ms,
                wait_ms,
                agent_id is None,  # abandoned
            )


def total_by_group(contacts: Iterable[Contact], group_by: Sequence[str]) -> dict[Labels, Totals]:
    """Sum contacts per group of `group_by` labels (any of GROUP_LABELS); see `Workload.truth`."""
    labels = sorted(set(group_by))
    unknown = [label for label in labels if label not in GROUP_LABELS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}: choose from {GROUP_LABELS}")
    attrs = [_LABEL_ATTRS[label] for label in labels]
    by_agent = "agent" in labels
    tallies: dict[Labels, _Tally] = {}
    for c in contacts:
        if by_agent and c.agent_id is None:
            continue
        key = tuple((label, str(getattr(c, attr))) for label, attr in zip(labels, attrs, strict=True))
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        tally.add(c)
    return {key: tally.totals() for key, tally in tallies.items()}


class _Tally:
    """Integer ms sums, converted to seconds once at the end so totals stay ms-exact."""

    __slots__ = ("abandoned", "acw_ms", "handle_ms", "handled", "hold_ms", "offered", "talk_ms")

    def __init__(self) -> None:
        self.handle_ms = self.handled = self.talk_ms = self.hold_ms = self.acw_ms = 0
        self.offered = self.abandoned = 0

    def add(self, c: Contact) -> None:
        self.offered += 1
        if c.abandoned:
            self.abandoned += 1
            return
        self.handled += 1
        self.handle_ms += c.talk_ms + c.hold_ms + c.acw_ms
        self.talk_ms += c.talk_ms
        self.hold_ms += c.hold_ms
        self.acw_ms += c.acw_ms

    def totals(self) -> Totals:
        return Totals(
            handle_seconds=self.handle_ms / 1000,
            contacts_handled=self.handled,
            talk_seconds=self.talk_ms / 1000,
            hold_seconds=self.hold_ms / 1000,
            acw_seconds=self.acw_ms / 1000,
            contacts_offered=self.offered,
            contacts_answered=self.handled,
            contacts_abandoned=self.abandoned,
        )


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: Knuth's product method for small means, a rounded normal for large ones."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, n, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        n += 1
        product *= rng.random()
    return n


def _uniform_ms(u: float, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return low + int(u * (high - low + 1))


def _uuid(rng: random.Random) -> str:
    """A random (version 4) UUID from `rng`: Genesys ids look like this, and it stays deterministic."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _make_queues(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(f"{seed}:queues")
    queues = []
    for i in range(n):
        base = _QUEUE_NAMES[i % len(_QUEUE_NAMES)]
        name = base if i < len(_QUEUE_NAMES) else f"{base} {i // len(_QUEUE_NAMES) + 1}"
        queues.append((_uuid(rng), name))
    return queues


def _make_agents(seed: int, n: int) -> list[tuple[str, str]]:
    rng = random.Random(f"{seed}:agents")
    # Names may repeat at scale, as real names do: ids are what identify agents.
    return [(_uuid(rng), f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}") for _ in range(n)]
