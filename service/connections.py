"""Connections that never send a whole request: a header timeout, a header size bound and a
connection limit, which uvicorn does not have.

uvicorn closes a keep-alive connection left idle after an answer (`KEEP_ALIVE_TIMEOUT_SECONDS`),
but it waits forever for the headers of a request, on a fresh connection or after a byte of a new
request arrived, and keeps appending whatever a client sends as headers. `GuardedHttpProtocol`
is uvicorn's httptools protocol with three more bounds, per process:

- **`HEADER_TIMEOUT_SECONDS`**: from when a connection opens or its last answer ends, the next
  request's headers must be complete in this time, or the connection is closed (with a 408 when
  part of a request came, silently when nothing did: browsers open spare connections).
- **`MAX_HEADER_BYTES`**: a longer request head is answered 431 and the connection closed.
- **`MAX_CONNECTIONS`**: past it, the connection that has waited longest for a request's headers
  is closed to make room, as nginx reuses idle keep-alive connections when it runs short; a new
  connection is refused only when every open one is in the middle of a request. A flood of idle
  connections thus never shuts out a client that sends a request.

Request bodies are paced by `service.upload_gate`; these bounds end where a request's headers do.
"""

from __future__ import annotations

import asyncio
import functools
import json
import resource
from collections import deque
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.metrics import CONNECTIONS_CLOSED, CONNECTIONS_OPEN
from service.settings import Settings


def _raw_answer(status: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a header size bound and a connection
    limit that evicts the longest-idle connection. The bounds are read from the environment's
    settings, in each worker process (uvicorn starts them afresh, not forked)."""

    _awaiting_headers: ClassVar[dict[GuardedHttpProtocol, None]] = {}
    """Connections waiting for a request's headers, oldest first (a dict keeps insertion order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.header_timeout_seconds = settings.header_timeout_seconds
        self.max_header_bytes = settings.max_header_bytes
        self.max_connections = connection_limit(settings.max_connections)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        """Between the start of a request and the end of its headers."""
        self._head_bytes = 0
        self._late = False
        """Its headers timed out; it waits its turn to be closed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        CONNECTIONS_OPEN.inc()
        self._await_headers()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_awaiting_headers()
        CONNECTIONS_OPEN.dec()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def data_received(self, data: bytes) -> None:
        """Counted once the parser has taken the data: a head that arrives whole in one read is
        bounded by the read's size, one that keeps arriving is cut here. (A read that ends one
        request's body and begins the next one's head counts whole: an overestimate by less
        than a read.)"""
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._close(
                "header_too_large",
                _raw_answer(
                    "431 Request Header Fields Too Large",
                    f"the request's head is over {self.max_header_bytes} bytes (MAX_HEADER_BYTES)",
                ),
            )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._late = False
        self._stop_awaiting_headers()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        """The connection becomes a WebSocket, served by another protocol object from now on
        (still counted against MAX_CONNECTIONS by uvicorn's own list of connections)."""
        self._stop_awaiting_headers()
        CONNECTIONS_OPEN.dec()
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        next_request_waiting = bool(self.pipeline)  # its headers are in: it starts now
        super().on_response_complete()
        if not next_request_waiting and not self.transport.is_closing():
            self._await_headers()

    def _await_headers(self) -> None:
        self._stop_awaiting_headers()
        self._header_timer = self.loop.call_later(self.header_timeout_seconds, self._timed_out)
        self._awaiting_headers[self] = None

    def _stop_awaiting_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._awaiting_headers.pop(self, None)

    def _timed_out(self) -> None:
        self._stop_awaiting_headers()
        self._late = True
        _closing_in_turns.add(self)

    def close_timed_out(self) -> None:
        if not self._late:  # its headers came in while it waited its turn
            return
        answer = b""
        if self._in_head:
            answer = _raw_answer(
                "408 Request Timeout",
                f"the request's headers did not arrive within {self.header_timeout_seconds:g} s "
                "(HEADER_TIMEOUT_SECONDS)",
            )
        self._close("header_timeout", answer)

    def _make_room(self) -> None:
        """Close the connection that has waited longest for headers, this one last."""
        for waiting in self._awaiting_headers:
            if waiting is not self:
                waiting._close("evicted")
                return
        self._close("refused")

    def _close(self, reason: str, answer: bytes = b"") -> None:
        self._stop_awaiting_headers()
        CONNECTIONS_CLOSED.labels(reason=reason).inc()
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()


class _ClosingInTurns:
    """Connections whose headers timed out, closed `PER_TURN` per turn of the event loop.

    Thousands of connections opened together time out together; closing them all in one turn
    (a write and a close each) would hold up every request for that long. Between turns the loop
    reads and answers the others."""

    PER_TURN = 100

    def __init__(self) -> None:
        self._waiting: deque[GuardedHttpProtocol] = deque()

    def add(self, connection: GuardedHttpProtocol) -> None:
        if not self._waiting:
            connection.loop.call_soon(self._close_some, connection.loop)
        self._waiting.append(connection)

    def _close_some(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(min(self.PER_TURN, len(self._waiting))):
            self._waiting.popleft().close_timed_out()
        if self._waiting:
            loop.call_soon(self._close_some, loop)


_closing_in_turns = _ClosingInTurns()


OPEN_FILES_BESIDES_CONNECTIONS = 1024
"""Room for the model, spooled uploads, metrics files and libraries' own descriptors."""


@functools.cache
def connection_limit(max_connections: int) -> int:
    """MAX_CONNECTIONS, or fewer where the process may not open that many files: connections are
    then evicted before accepting one fails for want of a descriptor (which stops all accepting
    for a second)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    spare = min(OPEN_FILES_BESIDES_CONNECTIONS, soft // 2)
    return max(1, min(max_connections, soft - spare))


@functools.cache
def _settings() -> Settings:
    return Settings()
