"""A process-wide budget of bytes that image decodes in flight may hold at once.

The pixel limit bounds one image, not several at once: a 150 KB PNG can claim 48 megapixels and
take ~300 MB to decode, and four worker threads decoding four of them would take a 1 GB container
past its memory limit, where the kernel kills the whole service. So each decode first reserves
what its header says it will need, and waits, a bounded time, while others hold the budget;
past that wait the upload is answered 503 ("retry"), never a crash. A decode that needs more
than the whole budget still runs, alone.

A decode waits in a worker thread, so large decodes queued behind each other could hold every
thread a small photo needs: twelve such PNGs at once kept a normal client waiting 5.8 s
(bench/hostile_clients.py). So at most `max_large` large reservations (over `LARGE_SHARE` of the
budget) are held or awaited at once, one fewer than the worker threads; one more is refused at
once, and a thread stays free for everything else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class BudgetExhausted(Exception):
    """The reservation did not fit within the wait."""


LARGE_SHARE = 0.25
"""A reservation over this share of the capacity is large: at most four of them fit at once."""


class MemoryBudget:
    """Reservations of bytes against a fixed capacity, shared by the threads of one process."""

    def __init__(
        self, capacity_bytes: int, wait_seconds: float, max_large: int | None = None
    ) -> None:
        self.capacity_bytes = capacity_bytes
        self.wait_seconds = wait_seconds
        self._free = capacity_bytes
        self._changed = threading.Condition()
        self._large = threading.BoundedSemaphore(max_large) if max_large else None

    @property
    def reserved_bytes(self) -> int:
        with self._changed:
            return self.capacity_bytes - self._free

    @contextmanager
    def reserve(self, nbytes: int, *, wait: bool = True) -> Iterator[None]:
        """Hold `nbytes` (at most the whole capacity) while inside; `BudgetExhausted` if they do
        not come free within `wait_seconds`, or at once without `wait`: a reservation held
        across several worker-thread steps (a video's) must not wait in a worker thread, or the
        holder may find no thread to finish on."""
        held = min(max(0, nbytes), self.capacity_bytes)
        seconds = self.wait_seconds if wait else 0.0
        large = self._large is not None and held > LARGE_SHARE * self.capacity_bytes
        if large and not self._large.acquire(blocking=False):
            raise BudgetExhausted("as many large decodes as may hold worker threads are under way")
        try:
            with self._changed:
                if not self._changed.wait_for(lambda: self._free >= held, seconds):
                    raise BudgetExhausted(f"{held} bytes did not come free within {seconds:g} s")
                self._free -= held
            try:
                yield
            finally:
                with self._changed:
                    self._free += held
                    self._changed.notify_all()
        finally:
            if large:
                self._large.release()
