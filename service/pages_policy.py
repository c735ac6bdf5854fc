"""A Content-Security-Policy on every HTML page the service serves: the browser may fetch from
this service and nowhere else.

The demo page and the docs must work on a machine without internet, and must not call out from
one that has it. Their own assets are all served here, but ReDoc's bundle still loads the
Redocly logo from a CDN: the policy stops such a request in the browser before it is sent.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.middleware import HttpMiddleware

_SAME_ORIGIN_ONLY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'self'"
)

PAGE_POLICY = _SAME_ORIGIN_ONLY
"""The demo page: its scripts and styles are files of this service, nothing inline."""

DOCS_POLICY = (
    f"{_SAME_ORIGIN_ONLY}; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
)
"""Swagger UI and ReDoc: FastAPI starts them with an inline script, ReDoc injects its styles and
compiles JSON-schema validators at run time, and runs its search in a blob worker."""


class PagesPolicy(HttpMiddleware):
    """ASGI middleware: the policy header on every `text/html` answer, `DOCS_POLICY` on the
    paths in `docs_paths` and `PAGE_POLICY` elsewhere."""

    def __init__(self, app: ASGIApp, docs_paths: Collection[str]) -> None:
        super().__init__(app)
        self.docs_paths = frozenset(docs_paths)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = DOCS_POLICY if scope["path"] in self.docs_paths else PAGE_POLICY

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, send_with_policy)
