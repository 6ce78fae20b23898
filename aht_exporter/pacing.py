"""Paced requests, for vendors that count requests per minute.

A `Pacer` gives each request a slot, first come first served, so that no window of 60 seconds (plus a
slack) holds more than `per_minute` of them; it can also pause when the vendor says "slow down".
Evenly (the default), each slot is at least `interval` after the previous one, so requests never
burst: Ozonetel asks for that. With `burst=True` a slot is only held back when the window already
holds `per_minute` requests: a poll of a few pages (Kore.ai) goes out at once instead of one a second,
and a long backfill still never exceeds the limit. Installed as an httpx request hook (httpclient.ApiClient's
`pacer`), it sees every request the client sends: retries, token calls and redirects included, whatever
transport or proxy carries them. Time is the event loop's (monotonic), so fast-forwarded test loops drive it too.

Why not `aiolimiter.AsyncLimiter(1, interval)`: its leaky bucket is float arithmetic, and a drained
bucket can keep a residue (2e-16) that re-arms its wake-up timer at the same instant. On a real loop
that costs microseconds of spinning; on a fast-forwarded loop (looptime, our tests) time never moves
on and the bucket never drains. Handing out slots needs no arithmetic feedback and makes a pause a
matter of moving the next slot.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import TypeVar

# Pace as if a minute had 61 seconds: `per_minute` requests then span 61 s, so the vendor still sees at
# most `per_minute` in any 60 s of its own clock when network latency shifts arrivals by up to 1 s.
SLACK_SECONDS = 1.0

T = TypeVar("T")


class Pacer:
    def __init__(self, per_minute: float, *, slack: float = SLACK_SECONDS, burst: bool = False) -> None:
        if per_minute < 1 or slack < 0:
            raise ValueError("per_minute must be at least 1 and slack not negative")
        self.per_minute = per_minute
        self.window = 60.0 + slack
        self.burst = burst
        self.interval = 0.0 if burst else self.window / per_minute  # between consecutive slots
        self._next_slot = -math.inf  # loop time of the earliest slot not yet handed out
        self._resume_at = -math.inf  # loop time at which a pause ends
        # The latest slots handed out, in order: a new one comes a window after the oldest of them.
        self._slots: deque[float] = deque(maxlen=math.floor(per_minute))

    def requests_within(self, seconds: float) -> int:
        """How many requests can start within `seconds` of an idle pacer."""
        if seconds < 0:
            return 0
        if self.burst:
            return (math.floor(seconds / self.window) + 1) * math.floor(self.per_minute)
        return math.floor(seconds / self.interval) + 1

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` from now."""
        self._resume_at = max(self._resume_at, asyncio.get_running_loop().time() + seconds)

    def resume(self) -> None:
        """End a pause now (the operator, or a test, knows the vendor's minute has passed)."""
        self._resume_at = -math.inf

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause; 0 when not paused."""
        return max(0.0, self._resume_at - asyncio.get_running_loop().time())

    async def wait_turn(self) -> None:
        """Take the next free slot (after any pause) and wait for it.

        A waiter cancelled before its slot leaves a gap, never a burst; one whose slot falls in a pause
        that began after it took the slot takes another after the pause.
        """
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            slot = max(now, self._next_slot, self._resume_at)
            if len(self._slots) == self._slots.maxlen:
                slot = max(slot, self._slots[0] + self.window)
            self._slots.append(slot)
            self._next_slot = slot + self.interval
            if slot > now:
                await asyncio.sleep(slot - now)
            if self._resume_at <= loop.time():
                return
            # A pause began while this request waited for its slot: it waits for a slot after the pause.


class Accounts:
    """What the sources of one vendor account share: its pacer (one request budget), its token.

    The exporter makes one and hands it to every provider it builds (and keeps it across reloads, so a
    reloaded source goes on with its account's budget); a provider asks it for its account's objects by a
    key of its own, e.g. `("ozonetel", api_url, user)`. Everything in it belongs to the event loop the
    exporter runs on: a pacer counts that loop's time.
    """

    def __init__(self) -> None:
        self._shared: dict[Hashable, object] = {}

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """The account's one object for `key`, made by `make` on first use."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]  # type: ignore[return-value]

    def pacer(self, key: Hashable, per_minute: float, *, slack: float = SLACK_SECONDS, burst: bool = False) -> Pacer:
        """The account's pacer for `key`, made with the first asker's `per_minute` (later ones share it)."""
        return self.shared(("pacer", key), lambda: Pacer(per_minute, slack=slack, burst=burst))
