"""Bounded work in flight: a saturated process answers 503 at once instead of queueing forever.

Each process admits at most `WORKER_THREADS + MAX_QUEUED_REQUESTS` prediction requests for
analysis at a time; the next one is answered 503 with `Retry-After`. A load balancer then retries
elsewhere, a client later. Nothing else goes through this gate: /health, /ready and /metrics
always answer.

A request takes its place once its body has arrived, not before: an upload still arriving holds
no place (`service.upload_gate` bounds those on their own), so clients that trickle uploads cannot
keep everyone else's photos from being analysed. A request refused here has sent its whole body,
so its connection stays open for the next request.

The count is a plain integer: the event loop runs one coroutine at a time, so there is no race.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ANALYSIS_PLACES_TAKEN, SHED
from service.middleware import HttpMiddleware, Refusal, has_body
from service.retry import BUSY_SECONDS, retry_after


def saturated_detail(capacity: int) -> str:
    return (
        f"the service is saturated ({capacity} requests in progress in this process): "
        f"retry after {BUSY_SECONDS} s"
    )


class LoadShedding(HttpMiddleware):
    """ASGI middleware: at most `capacity` requests at once on `paths` past the arrival of their
    body, 503 beyond."""

    def __init__(self, app: ASGIApp, capacity: int, paths: Collection[str]) -> None:
        super().__init__(app)
        self.capacity = capacity
        self.paths = frozenset(paths)
        self.in_progress = 0

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].rstrip("/") not in self.paths:
            await self.app(scope, receive, send)
            return
        taken = False
        refusal = Refusal()

        async def receive_then_take_place() -> Message:
            nonlocal taken
            message = await receive()
            arrived = message["type"] == "http.request" and not message.get("more_body", False)
            if arrived and not taken:
                if not self._take():
                    await refusal.refuse(self._saturated())
                taken = True
            return message

        try:
            if not has_body(scope):
                if not self._take():
                    await self._saturated()(scope, receive, send)
                    return
                taken = True
            await refusal.run(self.app, scope, receive_then_take_place, send)
        finally:
            if taken:
                self.in_progress -= 1
                ANALYSIS_PLACES_TAKEN.dec()

    def _take(self) -> bool:
        if self.in_progress >= self.capacity:
            return False
        self.in_progress += 1
        ANALYSIS_PLACES_TAKEN.inc()
        return True

    def _saturated(self) -> JSONResponse:
        SHED.inc()
        return JSONResponse(
            {"detail": saturated_detail(self.capacity)},
            status_code=503,
            headers=retry_after(),
        )
