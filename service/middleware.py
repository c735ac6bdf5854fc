"""What the service's ASGI middlewares share: they act on HTTP requests only, and some must stop
the app while it reads an upload and answer in its place.

Starlette's `BaseHTTPMiddleware` does not fit them: it runs the app in a separate task behind a
stream, so a middleware could not see or pace the app's `receive` calls, and cancelling the app
from the outside (a deadline) is what it is known to handle badly. These are plain ASGI, with
this small base instead of the same opening lines in each.
"""

from __future__ import annotations

from typing import NoReturn

import anyio
import anyio.lowlevel
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMiddleware:
    """ASGI middleware acting on HTTP requests; lifespan and WebSocket scopes pass through
    untouched. Subclasses implement `handle`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class Refusal:
    """Lets a `receive` wrapper stop the app in the middle of reading the body and answer in its
    place: `run` runs the app under a cancel scope, and `refuse` (awaited inside the app's
    `receive`) cancels it, whatever the app does with exceptions (FastAPI turns most errors
    raised while it parses a body into a 400)."""

    def __init__(self) -> None:
        self.response: Response | None = None
        self._cancel_scope = anyio.CancelScope()
        self._answer_started = False

    async def refuse(self, response: Response) -> NoReturn:
        self.response = response
        self._cancel_scope.cancel()
        await anyio.lowlevel.checkpoint()  # the cancellation is delivered here
        raise AssertionError("unreachable: the app was cancelled")

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, or the refusal's answer when `refuse` stopped it before it began its own."""

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._answer_started = True
            await send(message)

        with self._cancel_scope:
            await app(scope, receive, tracked_send)
        if self.response is not None and not self._answer_started:
            await self.response(scope, receive, send)


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero length, or chunked transfer)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False
