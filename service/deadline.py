"""A deadline per request (`REQUEST_TIMEOUT_SECONDS`): past it the client gets an answer, never
a hang.

`RequestDeadline` runs the rest of the app under a cancel scope, which stops whatever awaits:
reading a slow upload (answered 408) or waiting for a worker thread (503). Work already running
in a worker thread cannot be interrupted, so the pipeline calls `check_deadline` between its
stages (through `service.stages.stage`) and gives up there: an overrun lasts at most one stage,
which the other limits (pixels, faces) keep short, and a thread is never abandoned while still
busy, so the number of busy threads stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar

import anyio
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.middleware import HttpMiddleware, has_body
from service.retry import retry_after

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("deadline", default=None)
"""(monotonic() time by which the current request must be answered, the limit in seconds);
copied into the worker threads the request starts."""


def timed_out_detail(seconds: float) -> str:
    return (
        f"the request took longer than the limit of {seconds:g} s (REQUEST_TIMEOUT_SECONDS): "
        "the service is busy or the images are very large; retry, or send smaller images"
    )


def upload_timed_out_detail(seconds: float) -> str:
    return (
        f"the upload did not arrive within {seconds:g} s (REQUEST_TIMEOUT_SECONDS): "
        "send it faster, or send a smaller file"
    )


class DeadlineExceeded(HTTPException):
    """Raised by `check_deadline` in a worker thread; answered as a JSON 503."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status_code=503,
            detail=timed_out_detail(seconds),
            headers=retry_after(),
        )


def time_left() -> tuple[float, float] | None:
    """(seconds left, the limit in seconds) of the current request; None outside a request. For
    work that answers as it goes (a video's NDJSON lines), to end its answer itself while it can
    still say why, before the deadline cuts the connection."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return deadline[0] - time.monotonic(), deadline[1]


def check_deadline() -> None:
    """Raise `DeadlineExceeded` when the current request's time is up; nothing outside a
    request (tests, benchmarks calling the pipeline directly)."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline[0]:
        raise DeadlineExceeded(deadline[1])


class RequestDeadline(HttpMiddleware):
    """ASGI middleware: every HTTP request is answered within `seconds` (plus at most one
    pipeline stage), 408 when the upload is still arriving then, 503 otherwise."""

    def __init__(
        self, app: ASGIApp, seconds: float, per_path: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(app)
        self.seconds = seconds
        self.per_path = dict(per_path or {})
        """Paths whose requests take longer by nature (a whole video), with their own limit."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        body_complete = not has_body(scope)

        async def tracked_receive() -> Message:
            nonlocal body_complete
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        seconds = self.per_path.get(scope["path"].rstrip("/"), self.seconds)
        token = _deadline.set((time.monotonic() + seconds, seconds))
        try:
            with anyio.move_on_after(seconds) as cancel_scope:
                await self.app(scope, tracked_receive, tracked_send)
        finally:
            _deadline.reset(token)
        if not cancel_scope.cancelled_caught or started:
            return
        if body_complete:
            status, detail = 503, timed_out_detail(seconds)
        else:
            status, detail = 408, upload_timed_out_detail(seconds)
        response = JSONResponse(
            {"detail": detail},
            status_code=status,
            headers=retry_after() | {"Connection": "close"},
        )
        await response(scope, receive, send)
