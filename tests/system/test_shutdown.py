"""Graceful shutdown, on a real process and a real SIGTERM: requests in flight finish, new
connections are refused, the process exits 0, and /ready says 503 from the signal on."""

from __future__ import annotations

import contextlib
import signal
import socket
import time

import httpx
import pytest

from harness.server import service_process
from tests.system.test_limits import (
    BOUNDARY,
    read_response,
    slow_upload,
    wait_until_in_progress,
)


def _finish_upload(sock: socket.socket, image: bytes) -> None:
    """Send the rest of a `slow_upload`'s body: the image, padding up to the declared length
    (inside the part, before its closing boundary), and the closing boundary."""
    closing = f"\r\n--{BOUNDARY}--\r\n".encode()
    padding = 100_000 - len(image) - len(closing)
    assert padding >= 0
    # JPEG decoders ignore bytes after the end-of-image marker
    sock.sendall(image + b"\0" * padding + closing)


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(
    model_path, portrait_bytes, workers
):
    # the upload in flight waits for the test, which could take longer than the rate's grace
    settings = {
        "WORKERS": workers,
        "SHUTDOWN_TIMEOUT_SECONDS": "20",
        "UPLOAD_RATE_GRACE_SECONDS": "60",
    }
    with service_process(model_path, settings=settings) as service:
        with slow_upload(service.url) as in_flight:
            wait_until_in_progress(service.url, 1)
            service.process.send_signal(signal.SIGTERM)
            service.wait_for_output("shutting down: /ready answers 503")
            deadline = time.monotonic() + 10
            while not _refused(service.url):
                assert time.monotonic() < deadline, "still accepting connections"
                time.sleep(0.1)
            assert service.process.poll() is None  # waiting for the request in flight
            _finish_upload(in_flight, portrait_bytes)
            status, headers, body = read_response(in_flight)
        assert status == 200
        assert len(httpx.Response(200, content=body).json()["faces"]) == 1
        assert headers["connection"] == "close"
        assert service.process.wait(timeout=15) == 0


def test_a_request_that_outlasts_the_shutdown_timeout_does_not_hold_the_process(model_path):
    settings = {"SHUTDOWN_TIMEOUT_SECONDS": "1"}
    with service_process(model_path, settings=settings) as service:
        with slow_upload(service.url) as in_flight:
            wait_until_in_progress(service.url, 1)
            service.process.send_signal(signal.SIGTERM)
            # The process ends while the upload is still open on the client's side: it was not
            # waited for, and its connection is closed (else reading it raises TimeoutError).
            assert service.process.wait(timeout=60) == 0
            _read_until_closed(in_flight)
        assert "timeout graceful shutdown exceeded" in service.output()


def _read_until_closed(sock: socket.socket) -> None:
    """Read whatever the server sent last, up to its end of the connection."""
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass


def test_ready_is_503_while_draining(make_client):
    with make_client() as client:
        assert client.get("/ready").status_code == 200
        client.app.state.service.drain()
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json() == {"status": "stopping", "model": None}
        assert response.headers["retry-after"]
        assert client.get("/health").status_code == 200
