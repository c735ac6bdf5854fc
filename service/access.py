"""One log line and the request metrics for every request, tied together by a request id.

The outermost middleware, so that it sees every answer, the ones the other middlewares give
(401, 413, 503, 408) included. The request id is the client's `X-Request-ID` when it is sane
(so a trace started by a gateway carries on here), a fresh one otherwise; it is echoed in the
answer's `X-Request-ID` header and stamped on every log record the request causes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import REQUEST_ID_HEADER, set_request_id
from service.metrics import IN_PROGRESS, REQUEST_SECONDS, REQUESTS
from service.middleware import HttpMiddleware

log = logging.getLogger("service.access")

OTHER_ROUTE = "other"
"""The route label of paths the app does not serve: a scanner's guesses must not each become a
time series."""


class AccessLog(HttpMiddleware):
    """ASGI middleware: request id, then after the answer one log line and the metrics."""

    def __init__(self, app: ASGIApp, routes: Collection[str]) -> None:
        super().__init__(app)
        self.routes = frozenset(routes)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = set_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        status = 500  # what the client gets when the app fails before answering
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            IN_PROGRESS.dec()
            elapsed = time.perf_counter() - start
            path = scope["path"]
            route = path if path in self.routes else OTHER_ROUTE
            REQUESTS.labels(route=route, method=scope["method"], status=str(status)).inc()
            REQUEST_SECONDS.labels(route=route).observe(elapsed)
            client = scope.get("client")
            log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                path,
                status,
                elapsed * 1000,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "client": client[0] if client else None,
                },
            )
