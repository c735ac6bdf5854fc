"""Uploads written byte by byte on a socket, to see what a server does before a body has arrived;
and the connections of slow or idle clients, for the tests and the hostile-clients benchmark.

An HTTP client library sends the whole body before it reads the answer; these send a multipart
upload's head and then its body piece by piece, watching for the server's answer between pieces,
so a test can tell a server that refuses an upload while it streams in from one that reads it all.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.background import in_background

BOUNDARY = "b0undary"
PIECE = b"\xff" * 65536


def http_response(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the answer waiting on `sock`."""
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body[body.index(b"{") :])


def _open(server: str) -> socket.socket:
    host, port = server.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _multipart_head() -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def declare_and_wait(server: str, declared: int, path: str = "/predict") -> tuple[int, dict]:
    """Announce a `declared`-byte upload, send only its head, and read the answer: a server that
    answers has refused the upload without waiting for the body."""
    with _open(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: test\r\n".encode()
            + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
            + f"Content-Length: {declared}\r\n\r\n".encode()
            + _multipart_head()
        )
        return http_response(sock)


def stream_until_answered(server: str, total: int, path: str = "/predict") -> tuple[int, dict, int]:
    """Stream an upload of up to `total` bytes in chunked transfer (no Content-Length), stopping
    as soon as the server answers or closes; the answer, and how many bytes were sent by then.
    Raises AssertionError if the server let the whole body in without answering."""
    sent = 0
    with _open(server) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n".encode()
            + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
        )
        head = _multipart_head()
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        answered = False
        try:
            while sent < total:
                sock.sendall(f"{len(PIECE):x}\r\n".encode() + PIECE + b"\r\n")
                sent += len(PIECE)
                if select.select([sock], [], [], 0)[0]:
                    answered = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            answered = True
        assert answered, f"the server read the whole {total}-byte body"
        status, body = http_response(sock)
    return status, body, sent


def open_upload(server: str, declared: int = 100_000, path: str = "/predict") -> socket.socket:
    """A connection that has announced a `declared`-byte multipart upload and sent only the head
    of its file part: an upload just begun, which the caller goes on sending (or not)."""
    sock = _open(server)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: test\r\n".encode()
        + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + _multipart_head()
    )
    return sock


@dataclass
class Trickle:
    """Uploads sent a byte at a time, and what the server did to each: the start of its answer
    (`answers`, empty while none came) or its connection closed (`closed`)."""

    sockets: list[socket.socket]
    answers: list[bytes] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)

    @property
    def cut(self) -> int:
        """Uploads the server answered or closed."""
        return sum(
            bool(answer) or closed for answer, closed in zip(self.answers, self.closed, strict=True)
        )

    def statuses(self) -> list[int | None]:
        return [int(answer.split()[1]) if answer else None for answer in self.answers]


@contextmanager
def trickling_uploads(server: str, count: int, every: float = 1.0) -> Iterator[Trickle]:
    """`count` uploads begun (`open_upload`), each sent one more byte every `every` seconds from
    a thread until the block ends or the server answers or closes it."""
    trickle = Trickle([open_upload(server) for _ in range(count)])
    trickle.answers = [b""] * count
    trickle.closed = [False] * count
    stop = threading.Event()

    def send_bytes() -> None:
        while not stop.wait(every):
            for index, sock in enumerate(trickle.sockets):
                if trickle.answers[index] or trickle.closed[index]:
                    continue
                try:
                    if select.select([sock], [], [], 0)[0]:
                        data = sock.recv(65536)
                        trickle.answers[index] = data
                        trickle.closed[index] = not data
                        continue
                    sock.sendall(b"\xff")
                except OSError:
                    trickle.closed[index] = True

    try:
        with in_background(send_bytes, "trickle", stop=stop):
            yield trickle
    finally:
        for sock in trickle.sockets:
            sock.close()


@contextmanager
def idle_connections(server: str, count: int, send: bytes = b"") -> Iterator[list[socket.socket]]:
    """`count` connections that send `send` (the start of a request, or nothing) and then wait."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _open(server)
            if send:
                sock.sendall(send)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
