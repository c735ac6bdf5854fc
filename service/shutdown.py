"""Graceful shutdown: at SIGTERM (or Ctrl+C) /ready turns 503 at once, before anything stops.

uvicorn does the rest of a graceful shutdown itself: it stops accepting connections, lets the
requests in flight finish (for up to `SHUTDOWN_TIMEOUT_SECONDS`), closes idle keep-alive
connections and then runs the app's lifespan shutdown. That last step is too late to tell a
load balancer that polls /ready, so this hooks the signal itself: the service's handler marks
the process as draining and then hands the signal to the handler that was there (uvicorn's).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def drain_on_signals(on_drain: Callable[[], None]) -> Iterator[None]:
    """While inside, `on_drain()` runs first at SIGTERM and SIGINT, then whatever handled the
    signal before. Signals can only be handled in the main thread: elsewhere (an app run by a
    test client in a thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    originals = {}
    for signum in SHUTDOWN_SIGNALS:
        original = signal.getsignal(signum)
        if callable(original):
            originals[signum] = original
            signal.signal(signum, _chained(on_drain, original))
    try:
        yield
    finally:
        for signum, original in originals.items():
            signal.signal(signum, original)


def _chained(
    first: Callable[[], None], then: Callable[[int, FrameType | None], object]
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        first()
        then(signum, frame)

    return handler
