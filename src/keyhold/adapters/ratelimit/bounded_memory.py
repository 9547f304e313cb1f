"""Moving-window counters in this process's memory, within a fixed number of entries.

`limits`' own MemoryStorage keeps a window for every key it is ever shown until the
window expires, and rate-limit keys carry values the caller chooses: one client sending
random `client_id`s grows it without bound. This storage remembers at most
`max_entries` entries, where an entry is one counted call or one key's window holding
them (a key counted once costs two). Keys are kept as a keyed 128-bit digest, so an
entry's size does not depend on how long the caller's value was.

When full, it forgets the window with the fewest calls still inside their window among
a few picked at random (the oldest last call breaks a tie). Forgetting a window lets
that key start again from zero, which is what an attacker would want for a key they
are being limited on: but a key near its limit holds many calls, so to make it the
one forgotten they must first fill the storage with windows holding as many calls
each, a multiple of the limit in accepted calls, within one window, and the per-peer
limits are counted before the per-value ones. Keys of one call each, the cheap flood,
only ever push out each other and idle keys.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable

from limits.aio.storage import MovingWindowSupport, Storage

# Windows compared per eviction: more finds the emptiest window more surely, and costs
# a little more per eviction.
EVICTION_SAMPLE = 8


class _Window:
    __slots__ = ("expiry", "hits", "slot")

    def __init__(self, slot: int, expiry: int) -> None:
        self.slot = slot  # its index in the storage's list of keys, for sampling
        self.expiry = expiry
        self.hits = array("d")  # times of counted calls, oldest first


class BoundedMemoryStorage(Storage, MovingWindowSupport):
    """`limits` async storage with moving-window support (what MovingWindowRateLimiter
    needs), and fixed-window counters to complete the interface, in bounded memory.

    Each method runs without awaiting, so one call's check-and-count cannot interleave
    with another's on the event loop."""

    STORAGE_SCHEME = None  # built directly, never from a storage URI

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock  # wall-clock seconds: `limits` reports reset times in them
        if max_entries < 2:
            raise ValueError("the storage must hold at least one key and one call")
        self._max_entries = max_entries
        self._digest_key = secrets.token_bytes(16)
        self._windows: dict[bytes, _Window] = {}
        self._keys: list[bytes] = []  # the same keys, for sampling by index
        self._hits = 0  # calls held across every window
        # Picks eviction candidates; seeded secretly, and no pick is ever shown to a caller.
        self._random = random.Random(secrets.randbits(64))  # noqa: S311
        self.evictions = 0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    @property
    def entries(self) -> int:
        """What counts against the ceiling: one per key plus one per call held."""
        return len(self._keys) + self._hits

    def _digest(self, key: str) -> bytes:
        data = key.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16, key=self._digest_key).digest()

    # --- moving window -------------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self._clock()
        digest = self._digest(key)
        window = self._windows.get(digest)
        if window is None:
            window = self._add(digest, expiry)
        else:
            window.expiry = expiry
            self._drop_expired(window, now)
        if len(window.hits) + amount > limit:
            return False
        window.hits.extend([now] * amount)
        self._hits += amount
        self._shrink(keep=digest, now=now)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self._clock()
        window = self._windows.get(self._digest(key))
        if window is None:
            return now, 0
        hits = window.hits
        first = bisect_left(hits, now - expiry)
        if first == len(hits):
            return now, 0
        return hits[first], len(hits) - first

    # --- fixed window ----------------------------------------------------------------

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Fixed-window counting, stored as `amount` calls in a window that ends
        `expiry` seconds after its first call."""
        now = self._clock()
        digest = self._digest(key)
        window = self._windows.get(digest)
        if window is None or self._fixed_window_over(window, now):
            if window is not None:
                self._forget(digest)
            window = self._add(digest, expiry)
        window.hits.extend([now] * amount)
        self._hits += amount
        self._shrink(keep=digest, now=now)
        return len(window.hits)

    async def get(self, key: str) -> int:
        window = self._windows.get(self._digest(key))
        if window is None or self._fixed_window_over(window, self._clock()):
            return 0
        return len(window.hits)

    async def get_expiry(self, key: str) -> float:
        window = self._windows.get(self._digest(key))
        if window is None or not window.hits:
            return self._clock()
        return window.hits[0] + window.expiry

    @staticmethod
    def _fixed_window_over(window: _Window, now: float) -> bool:
        return not window.hits or window.hits[0] + window.expiry <= now

    # --- housekeeping ----------------------------------------------------------------

    async def check(self) -> bool:
        return True

    async def clear(self, key: str) -> None:
        digest = self._digest(key)
        if digest in self._windows:
            self._forget(digest)

    async def reset(self) -> int | None:
        keys = len(self._keys)
        self._windows.clear()
        self._keys.clear()
        self._hits = 0
        return keys

    def _add(self, digest: bytes, expiry: int) -> _Window:
        window = _Window(len(self._keys), expiry)
        self._windows[digest] = window
        self._keys.append(digest)
        return window

    def _drop_expired(self, window: _Window, now: float) -> None:
        stale = bisect_left(window.hits, now - window.expiry)
        if stale:
            del window.hits[:stale]
            self._hits -= stale

    def _forget(self, digest: bytes) -> None:
        window = self._windows.pop(digest)
        self._hits -= len(window.hits)
        last = self._keys.pop()
        if last != digest:  # move the last key into the freed slot
            self._keys[window.slot] = last
            self._windows[last].slot = window.slot

    def _shrink(self, keep: bytes, now: float) -> None:
        while self.entries > self._max_entries and len(self._keys) > 1:
            self._forget(self._emptiest(keep, now))
            self.evictions += 1

    def _emptiest(self, keep: bytes, now: float) -> bytes:
        """Among a few keys picked at random (never `keep`), the one whose window holds
        the fewest calls still counting, the oldest last call breaking a tie."""
        keys, windows, pick = self._keys, self._windows, self._random.randrange
        best: bytes | None = None
        best_rank = (0, 0.0)
        for _ in range(EVICTION_SAMPLE):
            digest = keys[pick(len(keys))]
            if digest == keep:
                continue
            hits = windows[digest].hits
            counting = len(hits) - bisect_left(hits, now - windows[digest].expiry)
            rank = (counting, hits[-1] if hits else 0.0)
            if best is None or rank < best_rank:
                best, best_rank = digest, rank
        if best is None:  # every pick was `keep`: any other key will do
            best = keys[0] if keys[0] != keep else keys[1]
        return best
