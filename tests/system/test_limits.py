"""Faces per image, request time and work in flight: each bounded, each answered clearly.

The faces cap runs through the real app in process. The deadline and load shedding are about
time and connections, so they run against a real `python -m service` over loopback. The slow
clients are raw sockets that send a request's head and part of its body, then wait: an upload
still arriving, for as long as the test wants. A place for analysis is taken only once a body
has arrived, so the tests that fill the places send batches that take a while to analyse.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from harness.background import in_background
from harness.server import service_process
from service.deadline import timed_out_detail, upload_timed_out_detail
from tests.fixtures.service import encode

BOUNDARY = "sl0wb0undary"


def test_faces_over_the_cap_keep_the_largest_and_say_how_many_there_were(make_client, two_faces):
    with make_client() as client:
        everything = client.post("/predict", files={"file": two_faces}).json()
        asked_for_one = client.post("/predict?max_faces=1", files={"file": two_faces}).json()
    assert everything["faces_found"] == 2 and len(everything["faces"]) == 2
    assert asked_for_one["faces_found"] == 2
    assert asked_for_one["faces"] == everything["faces"][:1]  # the largest
    with make_client(max_faces_per_image=1) as capped:
        answer = capped.post("/predict?max_faces=50", files={"file": two_faces}).json()
        batch = capped.post("/predict/batch", files=[("files", two_faces)] * 2).json()
    assert answer["faces"] == everything["faces"][:1]
    assert answer["faces_found"] == 2
    assert [len(result["faces"]) for result in batch["results"]] == [1, 1]


def test_a_whole_image_classified_as_one_face_counts_one(client, portrait_bytes):
    answer = client.post("/predict?detect=never", files={"file": portrait_bytes}).json()
    assert answer["faces_found"] == 1 and len(answer["faces"]) == 1


def _small_photos(portrait: Image.Image, count: int) -> list[tuple[str, bytes]]:
    """`count` copies of the portrait at 320x320 (about 10 MB in all): each costs the pipeline
    a decode and a detection."""
    photo = encode(portrait.resize((320, 320)), "JPEG")
    return [("files", photo)] * count


def _crowded_photos(portrait: Image.Image, count: int) -> list[tuple[str, bytes]]:
    """`count` photos of nine portraits in a 3x3 grid at 480x480 (60 KB each): each costs a
    detection and nine classifications. 150 of them hold the one analysis thread ~3 s here, far
    longer than a short batch takes to arrive behind them and two requests take to be shed.
    (Two equal batches sent together left a window of one batch's analysis minus the gap
    between their arrivals: on a fast machine too short, and CI once saw a 200 there.)"""
    crowd = Image.new("RGB", (480, 480), (190, 190, 190))
    face = portrait.resize((160, 160))
    for row in range(3):
        for column in range(3):
            crowd.paste(face, (column * 160, row * 160))
    return [("files", encode(crowd, "JPEG"))] * count


def _wide_photos(portrait: Image.Image, count: int) -> list[tuple[str, bytes]]:
    """`count` copies of a 1280x960 photo, the portrait small in a plain room (31 KB each): each
    costs about three times a `_small_photos` one (a larger decode, detection on a shrunk copy)
    for 1.6 times the bytes, so a batch of them outlasts a deadline on a fast machine without
    an upload that a busy one cannot receive in time."""
    room = Image.new("RGB", (1280, 960), (190, 190, 190))
    room.paste(portrait.resize((240, 240)), (520, 360))
    return [("files", encode(room, "JPEG"))] * count


def _count(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


HURRIED_SECONDS = 2.0
"""Long enough for a 19 MB upload to arrive on a machine busy with a training run (0.5 s was
not), far shorter than the ~18 s that 600 wide photos take to analyse there."""


@pytest.fixture(scope="module")
def hurried(model_path) -> Iterator[str]:
    """A service with two seconds per request, and room for batches of up to 1000 files."""
    settings = {
        "REQUEST_TIMEOUT_SECONDS": str(HURRIED_SECONDS),
        "MAX_BATCH_FILES": "1000",
        "LOG_LEVEL": "warning",
    }
    with service_process(model_path, settings=settings) as service:
        yield service.url


def test_work_past_the_deadline_stops_between_stages_and_is_a_503(
    hurried, portrait, portrait_bytes
):
    """600 large images take seconds to analyse; the answer comes at the deadline and the
    pipeline stops there instead of finishing the batch."""
    photos = _wide_photos(portrait, 600)
    with httpx.Client(base_url=hurried, timeout=30) as http:
        decoded_before = _count(
            http.get("/metrics").text, "emotion_stage_duration_seconds_count", stage="decode"
        )
        response = http.post("/predict/batch", files=photos)
        decoded = (
            _count(
                http.get("/metrics").text, "emotion_stage_duration_seconds_count", stage="decode"
            )
            - decoded_before
        )
        assert response.status_code == 503, response.text
        assert response.json() == {"detail": timed_out_detail(HURRIED_SECONDS)}
        assert response.headers["retry-after"]
        assert decoded < len(photos)  # stopped at the deadline, not after the whole batch
        # and it keeps serving
        assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200


@contextmanager
def slow_upload(url: str, path: str = "/predict", headers: str = "") -> Iterator[socket.socket]:
    """A connection that has sent a POST's head and the start of its body, and then waits."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="slow.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: test\r\n{headers}"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(head) + 100_000}\r\n\r\n".encode()
            + head
        )
        yield sock


def wait_until_in_progress(url: str, count: int, seconds: float = 10) -> None:
    """Until exactly `count` requests are in progress in the service, besides the asking one:
    slow uploads have reached the app, or the service has noticed that they went away (a fixed
    sleep could be too short on a loaded machine). With several workers the gauge adds up all
    of them."""
    deadline = time.monotonic() + seconds
    while True:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        if _count(metrics, "emotion_http_requests_in_progress") - 1 == count:
            return
        assert time.monotonic() < deadline, f"not {count} requests in progress"
        time.sleep(0.05)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_an_upload_that_does_not_arrive_in_time_is_a_408(hurried):
    with slow_upload(hurried) as sock:
        status, headers, body = read_response(sock)
    assert status == 408
    detail = upload_timed_out_detail(HURRIED_SECONDS)
    assert httpx.Response(status, content=body).json() == {"detail": detail}
    assert headers["connection"] == "close"


@pytest.fixture(scope="module")
def tiny(model_path) -> Iterator[str]:
    """One request analysed at a time and one waiting: room for two; batches big enough to keep
    the one thread busy for a while."""
    settings = {
        "WORKER_THREADS": "1",
        "MAX_QUEUED_REQUESTS": "1",
        "MAX_BATCH_FILES": "1000",
        "UPLOAD_RATE_GRACE_SECONDS": "60",  # slow uploads stay as long as a test holds them
        "LOG_LEVEL": "warning",
    }
    with service_process(model_path, settings=settings) as service:
        yield service.url


def wait_until_places_taken(url: str, count: int, seconds: float = 30) -> None:
    """Until exactly `count` requests hold a place for analysis (their body has arrived)."""
    deadline = time.monotonic() + seconds
    while True:
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        if _count(metrics, "emotion_analysis_places_taken") == count:
            return
        assert time.monotonic() < deadline, f"not {count} places taken"
        time.sleep(0.02)


@contextmanager
def analysing(url: str, photos: list[tuple[str, bytes]]) -> Iterator[list[int]]:
    """A batch posted from a thread, holding a place while it is analysed; yields the list its
    status goes into once answered (the block waits for it at the end)."""
    statuses: list[int] = []

    def post() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            statuses.append(http.post("/predict/batch", files=photos).status_code)

    with in_background(post, "batch"):
        yield statuses


def test_a_saturated_service_sheds_at_once_keeps_its_probes_and_recovers(
    tiny, portrait, portrait_bytes
):
    """Both places held by batches being analysed (their bodies are in): the next requests are
    refused before their analysis, the probes answer, and the places free up afterwards."""
    with httpx.Client(base_url=tiny, timeout=30) as http:
        shed_before = _count(http.get("/metrics").text, "emotion_requests_shed_total")
        with ExitStack() as batches:
            first = batches.enter_context(analysing(tiny, _crowded_photos(portrait, 150)))
            wait_until_places_taken(tiny, 1)  # the long batch is analysed first,
            second = batches.enter_context(analysing(tiny, _small_photos(portrait, 20)))
            wait_until_places_taken(tiny, 2)  # and a short one waits its turn behind it
            refused = http.post("/predict", files={"file": portrait_bytes})
            refused_batch = http.post("/predict/batch", files={"files": portrait_bytes})
            for response in (refused, refused_batch):
                assert response.status_code == 503
                assert "saturated" in response.json()["detail"]
                assert response.headers["retry-after"] == "1"
            assert http.get("/health").json() == {"status": "ok"}
            assert http.get("/ready").status_code == 200
            metrics = http.get("/metrics").text
            assert _count(metrics, "emotion_requests_shed_total") - shed_before == 2
        assert first == second == [200]
        wait_until_places_taken(tiny, 0)
        recovered = http.post("/predict", files={"file": portrait_bytes})
        assert recovered.status_code == 200
        assert len(recovered.json()["faces"]) == 1


def test_requests_within_the_room_wait_their_turn_instead_of_being_shed(
    tiny, portrait, portrait_bytes
):
    """Room for two: a batch being analysed holds a place, a second request still gets through."""
    with analysing(tiny, _small_photos(portrait, 150)) as batch:
        wait_until_places_taken(tiny, 1)
        with httpx.Client(base_url=tiny, timeout=30) as http:
            assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200
    assert batch == [200]


def test_uploads_still_arriving_hold_no_place(tiny, portrait_bytes):
    """Slow uploads on every place and more: they are arriving, not analysed, so a photo sent
    whole is analysed at once."""
    with ExitStack() as holding:
        for _ in range(4):
            holding.enter_context(slow_upload(tiny))
        wait_until_in_progress(tiny, 4)
        with httpx.Client(base_url=tiny, timeout=30) as http:
            assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200
            assert _count(http.get("/metrics").text, "emotion_uploads_arriving") == 4


def _high_water_and_resident_mb(pid: int) -> tuple[float, float]:
    """The process's peak resident memory so far (VmHWM) and its resident memory now, in MB."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(status[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS"))  # type: ignore[return-value]


def test_large_images_at_once_stay_within_the_decoding_memory_and_are_answered(
    model_path, portrait_bytes
):
    """Eight 24-megapixel RGBA PNGs of 100 KB each, all at once: without the decoding budget the
    four worker threads decode four of them together (~170 MB each at the peak; 640 MB above
    rest, measured). With MAX_DECODING_BYTES at 256 MB they decode one after another, each is
    answered 200 (or a clear 503 if its wait ran out), the process keeps serving, and its
    memory goes back near its rest (glibc kept ~470 MB before `service.allocator`)."""
    gray = np.full((4000, 6000), 128, np.uint8)
    gray[::40] = 0
    large = encode(np.dstack([gray, gray, gray, 255 - gray]), "PNG")
    budget_mb = 256
    settings = {"MAX_DECODING_BYTES": str(budget_mb * 1024 * 1024), "WORKER_THREADS": "4"}
    with service_process(model_path, settings=settings) as run:
        httpx.post(f"{run.url}/predict", files={"file": portrait_bytes}).raise_for_status()
        _, at_rest = _high_water_and_resident_mb(run.process.pid)
        post = lambda _: httpx.post(  # noqa: E731
            f"{run.url}/predict",
            content=large,
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        with ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(post, range(8)))
        high_water, resident = _high_water_and_resident_mb(run.process.pid)
        after = httpx.post(f"{run.url}/predict", files={"file": portrait_bytes})
    assert {answer.status_code for answer in answers} <= {200, 503}
    assert any(answer.status_code == 200 for answer in answers)
    assert all("detail" in a.json() for a in answers if a.status_code == 503)
    assert after.status_code == 200 and after.json()["faces_found"] == 1
    # the budget, the four decoded 24 MB images the workers go on with, and room for the rest
    assert high_water - at_rest < budget_mb + 4 * 24 + 100, (high_water, at_rest)
    assert resident - at_rest < 100, (resident, at_rest)
