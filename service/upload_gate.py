"""Bounds on request bodies while they arrive: how many at once, how many bytes, how slowly.

A client that opens an upload and sends it a byte a second costs the service a connection and a
coroutine for as long as it likes, unless the service asks for a pace. `UploadGate` wraps the
`receive` of every request that has a body, whatever its endpoint (multipart, a raw image, a
video), and enforces three bounds per process:

- **A minimum rate** (`MIN_UPLOAD_BYTES_PER_SECOND`, averaged from the request's start once
  `UPLOAD_RATE_GRACE_SECONDS` have passed): a slower upload is cut off with 408 and the
  connection closed, as Kestrel's `MinRequestBodyDataRate` and Apache's `mod_reqtimeout` do.
- **How many bodies arrive at once** (`MAX_ARRIVING_UPLOADS`) and **how many of their bytes are
  held** (`MAX_ARRIVING_UPLOAD_BYTES`; Starlette keeps each file in memory up to 1 MB, then in the
  temporary directory): past either, 503 with `Retry-After` at once.

An arriving upload holds no place for analysis (`service.shedding` takes one once the body is
in), so slow uploads cannot keep others' photos from being analysed. What the service holds is
then bounded twice: the bodies arriving (these bounds) and the bodies arrived, which are at most
`WORKER_THREADS + MAX_QUEUED_REQUESTS` requests, each within its path's size limit.
"""

from __future__ import annotations

import math
import time

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import (
    SLOW_UPLOADS,
    UPLOAD_BYTES_ARRIVING,
    UPLOADS_ARRIVING,
    UPLOADS_REFUSED,
)
from service.middleware import HttpMiddleware, Refusal, has_body
from service.retry import BUSY_SECONDS, retry_after


def too_slow_detail(received: int, seconds: float, min_rate: int) -> str:
    return (
        f"the upload arrived too slowly ({received} bytes in {seconds:.1f} s; the minimum is "
        f"{min_rate} bytes/s, MIN_UPLOAD_BYTES_PER_SECOND): send it faster"
    )


def too_many_uploads_detail(limit: int) -> str:
    return (
        f"the service is reading as many uploads as it may ({limit}, MAX_ARRIVING_UPLOADS): "
        f"retry after {BUSY_SECONDS} s"
    )


def too_many_bytes_detail(limit: int) -> str:
    return (
        f"the service holds as many bytes of arriving uploads as it may ({limit}, "
        f"MAX_ARRIVING_UPLOAD_BYTES): retry after {BUSY_SECONDS} s"
    )


def _busy(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503, headers=retry_after())


class UploadGate(HttpMiddleware):
    """ASGI middleware: the bounds above on every request that has a body. The counts are plain
    integers: the event loop runs one coroutine at a time."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_uploads: int,
        max_bytes: int,
        min_rate: int,
        grace_seconds: float,
    ) -> None:
        super().__init__(app)
        self.max_uploads = max_uploads
        self.max_bytes = max_bytes
        self.min_rate = min_rate
        self.grace_seconds = grace_seconds
        self.arriving = 0
        self.arriving_bytes = 0

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not has_body(scope):
            await self.app(scope, receive, send)
            return
        if self.arriving >= self.max_uploads or self.arriving_bytes >= self.max_bytes:
            if self.arriving >= self.max_uploads:
                reason, detail = "count", too_many_uploads_detail(self.max_uploads)
            else:
                reason, detail = "bytes", too_many_bytes_detail(self.max_bytes)
            UPLOADS_REFUSED.labels(reason=reason).inc()
            await _busy(detail)(scope, receive, send)
            return
        arrival = _Arrival(self)
        refusal = Refusal()

        async def receive_paced() -> Message:
            if arrival.done:
                return await receive()
            with anyio.move_on_after(arrival.seconds_left()):
                message = await receive()
                arrival.took(message)
                if arrival.too_slow():
                    await refusal.refuse(arrival.cut_off())
                if arrival.done:
                    return message
                if self.arriving_bytes > self.max_bytes:
                    UPLOADS_REFUSED.labels(reason="bytes").inc()
                    await refusal.refuse(_busy(too_many_bytes_detail(self.max_bytes)))
                return message
            await refusal.refuse(arrival.cut_off())

        try:
            await refusal.run(self.app, scope, receive_paced, send)
        finally:
            arrival.finish()


class _Arrival:
    """One body arriving: its bytes so far, counted in the gate's totals until it is in."""

    def __init__(self, gate: UploadGate) -> None:
        self.gate = gate
        self.started = time.monotonic()
        self.received = 0
        self.done = False
        gate.arriving += 1
        UPLOADS_ARRIVING.inc()

    def took(self, message: Message) -> None:
        if message["type"] != "http.request":  # the client went away
            self.finish()
            return
        size = len(message.get("body", b""))
        self.received += size
        self.gate.arriving_bytes += size
        UPLOAD_BYTES_ARRIVING.inc(size)
        if not message.get("more_body", False):
            self.finish()

    def seconds_left(self) -> float:
        """Until the average rate falls below the minimum, at the earliest after the grace."""
        if self.gate.min_rate <= 0:
            return math.inf
        give_up_at = max(self.gate.grace_seconds, self.received / self.gate.min_rate)
        return max(0.0, self.started + give_up_at - time.monotonic())

    def too_slow(self) -> bool:
        if self.done or self.gate.min_rate <= 0:
            return False
        elapsed = time.monotonic() - self.started
        return elapsed > self.gate.grace_seconds and self.received < self.gate.min_rate * elapsed

    def cut_off(self) -> JSONResponse:
        """The 408 for an upload too slow; the connection is closed, not kept for the rest."""
        elapsed = time.monotonic() - self.started
        self.finish()
        SLOW_UPLOADS.inc()
        return JSONResponse(
            {"detail": too_slow_detail(self.received, elapsed, self.gate.min_rate)},
            status_code=408,
            headers={"Connection": "close"},
        )

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.gate.arriving -= 1
        self.gate.arriving_bytes -= self.received
        UPLOADS_ARRIVING.dec()
        UPLOAD_BYTES_ARRIVING.dec(self.received)
