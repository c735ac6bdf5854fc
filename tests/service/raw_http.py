"""Uploads written byte by byte on a socket, to see what a server does before a body has arrived.

An HTTP client library sends the whole body before it reads the answer; these send a multipart
upload's head and then its body piece by piece, watching for the server's answer between pieces,
so a test can tell a server that refuses an upload while it streams in from one that reads it all.
"""

from __future__ import annotations

import json
import select
import socket

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
