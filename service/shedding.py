"""Bounded work in flight: a saturated process answers 503 at once instead of queueing forever.

Each process admits at most `WORKER_THREADS + MAX_QUEUED_REQUESTS` prediction requests at a
time (counted from the moment the request arrives, so uploads being read count too); the next
one is answered 503 with `Retry-After` before its body is read. A load balancer then retries
elsewhere, a client later. Nothing else goes through this gate: /health, /ready and /metrics
always answer.

The connection stays open: uvicorn reads the rest of the refused body and discards it (nothing is
buffered) before the next request. Closing it instead would lose the answer: a socket closed with
the client's body still unread in it is reset (TCP RST), and the client sees a dropped connection
instead of the 503 (the load test saw 649 of 650 shed requests lost that way).

The count is a plain integer: the event loop runs one coroutine at a time, so there is no race.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.metrics import SHED

RETRY_AFTER_SECONDS = 1


def saturated_detail(capacity: int) -> str:
    return (
        f"the service is saturated ({capacity} requests in progress in this process): "
        f"retry after {RETRY_AFTER_SECONDS} s"
    )


class LoadShedding:
    """ASGI middleware: at most `capacity` requests at once on `paths`, 503 beyond."""

    def __init__(self, app: ASGIApp, capacity: int, paths: Collection[str]) -> None:
        self.app = app
        self.capacity = capacity
        self.paths = frozenset(paths)
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.capacity:
            SHED.inc()
            response = JSONResponse(
                {"detail": saturated_detail(self.capacity)},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
