"""Slow and idle clients against a real `python -m service` over loopback: uploads trickled a
byte a second, connections that never finish their headers, thousands of idle connections. Each
test asserts what the service does (statuses, counts in /metrics, connections cut), never how
fast; `bench/hostile_clients.py` measures the times.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from harness.raw_http import idle_connections, open_upload, trickling_uploads
from harness.server import service_process
from service.upload_gate import too_many_bytes_detail, too_many_uploads_detail
from tests.system.test_limits import _count, read_response

SLOW_UPLOADS = 40
"""As in the report that started this: 40 uploads sent a byte a second."""
IDLE_CONNECTIONS = 3000


def metric(url: str, name: str, **labels: str) -> float:
    return _count(httpx.get(f"{url}/metrics", timeout=10).text, name, **labels)


def wait_for_metric(url: str, name: str, value: float, seconds: float = 30, **labels: str) -> None:
    """Until the metric reads `value` (a fixed sleep could be too short on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while (current := metric(url, name, **labels)) != value:
        assert time.monotonic() < deadline, f"{name}{labels} is {current}, not {value}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def patient(model_path) -> Iterator[str]:
    """Room for two analyses, for 41 arriving uploads, and a grace longer than any test here:
    slow uploads stay for as long as a test holds them."""
    settings = {
        "WORKER_THREADS": "1",
        "MAX_QUEUED_REQUESTS": "1",
        "MAX_ARRIVING_UPLOADS": str(SLOW_UPLOADS + 1),
        "UPLOAD_RATE_GRACE_SECONDS": "120",
        "LOG_LEVEL": "warning",
    }
    with service_process(model_path, settings=settings) as service:
        yield service.url


@pytest.fixture(scope="module")
def strict(model_path) -> Iterator[str]:
    """Every bound on slow and idle clients short or small."""
    settings = {
        "UPLOAD_RATE_GRACE_SECONDS": "1",
        "MIN_UPLOAD_BYTES_PER_SECOND": "1024",
        "HEADER_TIMEOUT_SECONDS": "3",
        "KEEP_ALIVE_TIMEOUT_SECONDS": "1",
        "MAX_HEADER_BYTES": "2048",
        "MAX_CONNECTIONS": "60",
        "MAX_ARRIVING_UPLOAD_BYTES": "200000",
        "LOG_LEVEL": "warning",
    }
    with service_process(model_path, settings=settings) as service:
        yield service.url


def test_trickling_uploads_hold_no_analysis_place(patient, portrait_bytes):
    """40 uploads trickling on a service with room for two analyses: every photo sent whole is
    analysed, and one more upload than the bound allows is refused at once."""
    with trickling_uploads(patient, SLOW_UPLOADS) as trickle:
        wait_for_metric(patient, "emotion_uploads_arriving", SLOW_UPLOADS)
        with httpx.Client(base_url=patient, timeout=30) as http:
            for _ in range(5):
                answer = http.post("/predict", files={"file": portrait_bytes})
                assert answer.status_code == 200
                assert len(answer.json()["faces"]) == 1
            refused_before = metric(patient, "emotion_uploads_refused_total", reason="count")
            with open_upload(patient):  # the 41st arriving upload
                wait_for_metric(patient, "emotion_uploads_arriving", SLOW_UPLOADS + 1)
                refused = http.post("/predict", files={"file": portrait_bytes})
            assert refused.status_code == 503
            assert refused.json() == {"detail": too_many_uploads_detail(SLOW_UPLOADS + 1)}
            assert refused.headers["retry-after"] == "1"
            after = metric(patient, "emotion_uploads_refused_total", reason="count")
            assert after - refused_before == 1
            assert http.get("/health").status_code == 200
        assert trickle.cut == 0  # the grace is long: none was cut
    wait_for_metric(patient, "emotion_uploads_arriving", 0)


def test_uploads_slower_than_the_minimum_rate_are_cut_with_408(strict):
    """A byte a second is under 1 kB/s: every upload is answered 408 (or its connection closed)
    after the grace, and counted."""
    cut_before = metric(strict, "emotion_slow_uploads_cut_total")
    with trickling_uploads(strict, SLOW_UPLOADS, every=0.5) as trickle:
        wait_for_metric(strict, "emotion_slow_uploads_cut_total", cut_before + SLOW_UPLOADS)
        deadline = time.monotonic() + 10
        while trickle.cut < SLOW_UPLOADS:  # the client notices at its next byte
            assert time.monotonic() < deadline, f"{trickle.cut} uploads cut"
            time.sleep(0.1)
        assert {status for status in trickle.statuses() if status} <= {408}
    wait_for_metric(strict, "emotion_uploads_arriving", 0)


def test_a_stalled_upload_gets_a_408_that_says_why(strict):
    with open_upload(strict) as sock:
        status, headers, body = read_response(sock)
        assert sock.recv(1) == b""  # then the connection is closed
    assert status == 408
    detail = httpx.Response(status, content=body).json()["detail"]
    assert "arrived too slowly" in detail and "MIN_UPLOAD_BYTES_PER_SECOND" in detail
    assert headers["connection"] == "close"


def test_the_minimum_rate_applies_to_every_body_not_only_multipart(strict, portrait_bytes):
    """A raw image body (`Content-Type: image/jpeg`) sent in part and then stalled is cut the
    same way: the bound is on the request body, whatever the endpoint makes of it."""
    with idle_connections(
        strict,
        1,
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
        + f"Content-Length: {len(portrait_bytes)}\r\n\r\n".encode()
        + portrait_bytes[:100],
    ) as (sock,):
        status, _, body = read_response(sock)
    assert status == 408
    assert "arrived too slowly" in httpx.Response(status, content=body).json()["detail"]


def test_arriving_bytes_past_their_bound_are_refused_at_once(strict, portrait_bytes):
    """150 kB of one upload held while it arrives: with room for 200 kB, a second upload is
    refused as its bytes pass the bound."""
    refused_before = metric(strict, "emotion_uploads_refused_total", reason="bytes")
    with open_upload(strict, declared=1_000_000) as holding:
        holding.sendall(b"\xff" * 150_000)
        wait_for_metric(strict, "emotion_upload_bytes_arriving", pytest.approx(150_000, abs=200))
        big = portrait_bytes + b"\0" * 100_000  # JPEG decoders ignore bytes after the image
        refused = httpx.post(f"{strict}/predict", files={"file": big}, timeout=30)
    assert refused.status_code == 503
    assert refused.json() == {"detail": too_many_bytes_detail(200_000)}
    assert refused.headers["retry-after"] == "1"
    assert metric(strict, "emotion_uploads_refused_total", reason="bytes") - refused_before == 1
    wait_for_metric(strict, "emotion_upload_bytes_arriving", 0)
    assert httpx.post(f"{strict}/predict", files={"file": big}, timeout=30).status_code == 200


def test_connections_that_never_finish_their_headers_are_closed(strict):
    """Silent connections are closed without a word, one that began a request with a 408."""
    before = metric(strict, "emotion_connections_closed_total", reason="header_timeout")
    with (
        idle_connections(strict, 3) as silent,
        idle_connections(strict, 1, b"GET /health HTTP/1.1\r\nHost: te") as begun,
    ):
        for sock in silent:
            assert sock.recv(1) == b""
        (sock,) = begun
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
    assert metric(strict, "emotion_connections_closed_total", reason="header_timeout") >= before + 4


def test_headers_past_their_size_bound_are_a_431(strict):
    with idle_connections(strict, 1, b"GET /health HTTP/1.1\r\n") as (sock,):
        sock.sendall(b"X-Padding: " + b"a" * 1500 + b"\r\n")
        sock.sendall(b"X-Padding: " + b"a" * 1500 + b"\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"MAX_HEADER_BYTES" in answer


def test_an_idle_keep_alive_connection_is_closed(strict):
    with idle_connections(strict, 1, b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n") as (sock,):
        status, _, _ = read_response(sock)
        assert status == 200
        assert sock.recv(1) == b""  # closed by the keep-alive (or header) timeout


def test_past_the_connection_limit_the_longest_idle_connection_makes_room(strict, portrait_bytes):
    """60 connections at most: 60 idle ones open, a client that sends a request is still
    served, and the oldest idle connection was closed to make room for it."""
    evicted_before = metric(strict, "emotion_connections_closed_total", reason="evicted")
    with idle_connections(strict, 60) as idle:
        answer = httpx.post(f"{strict}/predict", files={"file": portrait_bytes}, timeout=30)
        assert answer.status_code == 200
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b""
    assert metric(strict, "emotion_connections_closed_total", reason="evicted") > evicted_before


def test_connections_past_the_open_files_limit_evict_idle_ones(model_path, portrait_bytes):
    """A process allowed 256 open files (hard limit) takes fewer connections than
    MAX_CONNECTIONS: 300 idle ones do not exhaust its descriptors, and a client that sends a
    request is served while the longest idle make room."""
    with service_process(
        model_path,
        python="sh",
        command=("-c", f"ulimit -n 256 && exec {sys.executable} -m service"),
        settings={"LOG_LEVEL": "warning"},
    ) as service:
        with idle_connections(service.url, 300):
            with httpx.Client(base_url=service.url, timeout=30) as http:
                for _ in range(3):
                    assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200
            evicted = metric(service.url, "emotion_connections_closed_total", reason="evicted")
        assert evicted >= 300 - 128
        assert "Too many open files" not in service.output()


@pytest.fixture
def many_open_files() -> None:
    """Room in this process for the idle connections' sockets (the service raises its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE_CONNECTIONS + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is under {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_3000_idle_connections_do_not_stop_normal_requests(
    model_path, portrait_bytes, many_open_files
):
    """Default bounds but a header timeout longer than the test: 3000 connections that never
    finish their headers are all open at once, normal requests are answered, and once they go
    the service holds no more open files than before."""
    settings = {"HEADER_TIMEOUT_SECONDS": "120", "LOG_LEVEL": "warning"}
    with service_process(model_path, settings=settings) as service:
        url = service.url
        resting = _open_files(service.process.pid)
        with idle_connections(url, IDLE_CONNECTIONS, b"GET /health HTTP/1.1\r\n"):
            wait_for_metric(url, "emotion_connections_open", IDLE_CONNECTIONS + 1)
            with httpx.Client(base_url=url, timeout=30) as http:
                for _ in range(5):
                    assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200
        wait_for_metric(url, "emotion_connections_open", 1)  # the one asking
        assert _open_files(service.process.pid) <= resting + 2


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
