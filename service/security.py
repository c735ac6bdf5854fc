"""The optional API key (`API_KEY`): every endpoint but the probes and the docs needs it.

`ApiKeyGate` checks the `X-API-Key` header before anything else happens to a request (before a
byte of the upload is read, before it takes a place in the queue), with a constant-time
comparison so the answer's timing says nothing about how much of a guess was right. The routes
that need the key also declare `api_key_header`, an `APIKeyHeader` security scheme, so that the
OpenAPI docs show the lock and let a reader try the API with a key; the declaration checks the
key again, which costs nothing and keeps a route safe if the gate is ever misconfigured.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.middleware import HttpMiddleware

API_KEY_HEADER = "X-API-Key"
PUBLIC_PATHS = frozenset(
    {"/", "/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
"""Open without a key: the probes (a load balancer has no key) and the docs and demo page (they
say how to use the API; the key is needed to call it). Everything else, unknown paths included,
needs the key."""
PUBLIC_PREFIXES = ("/static/", "/static-offline-docs/")
"""The files of the demo page and of the docs pages, which load them."""

MISSING = f"this API needs a key: send it in the {API_KEY_HEADER} header"
WRONG = f"the key in the {API_KEY_HEADER} header is not valid"
CHALLENGE = {"WWW-Authenticate": f'APIKey header="{API_KEY_HEADER}"'}

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The service's API key (set with API_KEY); needed only where the service has one.",
)


def key_problem(given: str | None, expected: str) -> str | None:
    """Why `given` does not open the API, or None when it does.

    The digests are compared, not the keys: `compare_digest` takes constant time only for
    inputs of equal length, and a digest does not tell the key's length either. Header values
    arrive decoded as latin-1, so encoding them back gives the bytes that were sent.
    """
    if not given:
        return MISSING
    sent = hashlib.sha256(given.encode("latin-1")).digest()
    if not hmac.compare_digest(sent, hashlib.sha256(expected.encode()).digest()):
        return WRONG
    return None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ApiKeyGate(HttpMiddleware):
    """ASGI middleware: 401 with a JSON `detail` and `WWW-Authenticate` for a request to a
    non-public path without the right key. CORS preflights (OPTIONS) pass: browsers send them
    without custom headers, and the CORS middleware outside this one answers them."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        super().__init__(app)
        self.key = key

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        problem = key_problem(Headers(scope=scope).get(API_KEY_HEADER), self.key)
        if problem is None:
            await self.app(scope, receive, send)
            return
        # The connection stays open: closing it with the client's body still unread would reset
        # it (TCP RST), and the client could lose the answer (see service/shedding.py).
        response = JSONResponse({"detail": problem}, status_code=401, headers=CHALLENGE)
        await response(scope, receive, send)


async def require_api_key(
    request: Request, given: Annotated[str | None, Depends(api_key_header)]
) -> None:
    """The declared security of the protected routes (see the module's docstring)."""
    expected = request.app.state.service.settings.api_key_value
    if expected is None:
        return
    problem = key_problem(given, expected)
    if problem is not None:
        raise HTTPException(status_code=401, detail=problem, headers=CHALLENGE)
