"""Bounded work in flight: a saturated process answers 503 at once instead of queueing forever.

Each process admits at most `WORKER_THREADS + MAX_QUEUED_REQUESTS` prediction requests at a
time (counted from the moment the request arrives, so uploads being read count too); the next
one is answered 503 with `Retry-After` before its body is read, and the connection is closed so
its unread body costs nothing. A load balancer then retries elsewhere, a client later. Nothing
else goes through this gate: /health, /ready and /metrics always answer.

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
                headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"},
            )
            await response(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1
