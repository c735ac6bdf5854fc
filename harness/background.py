"""A piece of work run from a thread for the length of a `with` block: the load, the watchers and
the attackers that run beside what a test or benchmark measures."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def in_background(
    work: Callable[[], None], name: str, stop: threading.Event | None = None
) -> Iterator[None]:
    """Run `work` in a thread while the block runs; at its end set `stop` (the signal `work`
    watches, if it loops) and wait for the thread, so nothing outlives the block."""
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        if stop is not None:
            stop.set()
        thread.join()
