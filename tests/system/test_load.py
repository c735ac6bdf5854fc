"""Load on a real `python -m service` process over loopback: concurrent clients on real photos.

Within capacity, every request is answered 200 with the photo's one face. Past capacity (many
more clients than WORKER_THREADS + MAX_QUEUED_REQUESTS), the excess is answered 503 with
`Retry-After` and a JSON detail at once, not left to time out; the requests admitted are still
answered; /health answers throughout; and once the flood stops a normal request succeeds.
Bounded in time (a few seconds of load per phase); no assertion on speed: that is the benchmark's.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.load import LoadRun, run_load, watching_health
from harness.photos import scene_jpeg
from harness.server import ServiceProcess, service_process
from tests.fixtures.service import PORTRAIT
from tests.system.test_limits import _count

WORKER_THREADS = 2
MAX_QUEUED_REQUESTS = 10
CAPACITY = WORKER_THREADS + MAX_QUEUED_REQUESTS
STEADY_CLIENTS = 8
FLOOD_CLIENTS = 64
SECONDS = 4.0


@pytest.fixture(scope="module")
def service(model_path) -> Iterator[ServiceProcess]:
    settings = {
        "WORKER_THREADS": str(WORKER_THREADS),
        "MAX_QUEUED_REQUESTS": str(MAX_QUEUED_REQUESTS),
        "LOG_LEVEL": "warning",
    }
    with service_process(model_path, settings=settings) as started:
        yield started


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    """Real photos of one face, as a phone or a webcam sends them."""
    return [scene_jpeg(640, 480), scene_jpeg(854, 480), PORTRAIT.read_bytes()]


def _no_failures(run: LoadRun) -> None:
    failed = run.with_status(None)
    assert not failed, f"{len(failed)} requests got no answer: {failed[:3]}"


def test_concurrent_clients_within_capacity_all_get_their_face(service, photos):
    assert STEADY_CLIENTS <= CAPACITY
    with watching_health(service.url) as health:
        run = run_load(service.url, photos, clients=STEADY_CLIENTS, seconds=SECONDS)
    _no_failures(run)
    assert run.statuses == {200: len(run.outcomes)}
    assert len(run.outcomes) >= STEADY_CLIENTS  # every client was answered at least once
    assert {outcome.faces for outcome in run.outcomes} == {1}
    assert health.statuses and set(health.statuses) == {200}


def test_a_flood_is_shed_with_503_at_once_and_the_service_recovers(service, photos):
    before = httpx.get(f"{service.url}/metrics", timeout=10).text
    with watching_health(service.url) as health:
        run = run_load(service.url, photos, clients=FLOOD_CLIENTS, seconds=SECONDS, timeout=30)
    after_flood = httpx.get(f"{service.url}/metrics", timeout=10).text
    _no_failures(run)  # no timeouts, no dropped connections: every request was answered
    assert set(run.statuses) <= {200, 503}, run.statuses
    shed, served = run.with_status(503), run.with_status(200)
    assert shed, "no request was shed with more clients than the capacity"
    assert served, "the requests admitted were not answered"
    assert all(outcome.retry_after and int(outcome.retry_after) > 0 for outcome in shed)
    assert all(outcome.detail and "saturated" in outcome.detail for outcome in shed)
    assert {outcome.faces for outcome in served} == {1}

    # Shed at once: the refused requests were counted as shed and never reached the analysis,
    # which decoded exactly the photos of the requests it answered.
    def grew(name: str, **labels: str) -> float:
        return _count(after_flood, name, **labels) - _count(before, name, **labels)

    assert grew("emotion_requests_shed_total") == len(shed)
    assert grew("emotion_stage_duration_seconds_count", stage="decode") == len(served)
    assert health.statuses and set(health.statuses) == {200}

    after = httpx.post(f"{service.url}/predict", files={"file": photos[0]}, timeout=30)
    assert after.status_code == 200
    assert len(after.json()["faces"]) == 1
    assert httpx.get(f"{service.url}/ready", timeout=10).status_code == 200
