"""Closed-loop HTTP load: N clients, each posting photos one after another for a fixed time.

Shared by the load test (tests/system/test_load.py) and the benchmark (bench/serve_bench.py).
Each client is one keep-alive connection that sends its next request as soon as the last one is
answered, as a webcam loop or a batch job does; every request's outcome is recorded, failures
(timeouts, dropped connections) included, so a caller can count them instead of losing them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from harness.background import in_background


@dataclass(frozen=True)
class Outcome:
    """One request: its status (None when no answer came: `error` says why), how long it took,
    its `Retry-After` header, and the number of faces of a 200 answer."""

    status: int | None
    seconds: float
    error: str | None = None
    retry_after: str | None = None
    detail: str | None = None
    faces: int | None = None


@dataclass
class LoadRun:
    clients: int
    seconds: float
    """Wall time from the first request sent to the last answer received."""
    outcomes: list[Outcome] = field(default_factory=list)

    def with_status(self, status: int | None) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts


def run_load(
    base_url: str,
    photos: Sequence[bytes],
    *,
    clients: int,
    seconds: float,
    params: dict[str, str] | None = None,
    timeout: float = 30.0,
    requests: int | None = None,
) -> LoadRun:
    """`clients` clients post `photos` (in turn) to /predict for `seconds` (or until `requests`
    have been sent, whichever comes first), then finish the requests in flight."""
    budget = _Budget(requests)
    return asyncio.run(_load(base_url, photos, clients, seconds, params or {}, timeout, budget))


@dataclass
class _Budget:
    """Requests left to send, shared by the clients (one event loop: no lock needed)."""

    left: int | None

    def take(self) -> bool:
        if self.left is None:
            return True
        self.left -= 1
        return self.left >= 0


async def _load(
    base_url: str,
    photos: Sequence[bytes],
    clients: int,
    seconds: float,
    params: dict[str, str],
    timeout: float,
    budget: _Budget,
) -> LoadRun:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as http:
        started = time.perf_counter()
        stop_at = started + seconds
        runs = await asyncio.gather(
            *(_client(http, photos, index, stop_at, params, budget) for index in range(clients))
        )
        elapsed = time.perf_counter() - started
    return LoadRun(clients, elapsed, [outcome for run in runs for outcome in run])


async def _client(
    http: httpx.AsyncClient,
    photos: Sequence[bytes],
    index: int,
    stop_at: float,
    params: dict[str, str],
    budget: _Budget,
) -> list[Outcome]:
    outcomes = []
    sent = index  # clients start on different photos
    while time.perf_counter() < stop_at and budget.take():
        photo = photos[sent % len(photos)]
        sent += 1
        started = time.perf_counter()
        try:
            response = await http.post(
                "/predict", params=params, files={"file": ("photo", photo, "image/jpeg")}
            )
        except httpx.HTTPError as error:
            outcomes.append(Outcome(None, time.perf_counter() - started, type(error).__name__))
            continue
        outcomes.append(_outcome(response, time.perf_counter() - started))
    return outcomes


def _outcome(response: httpx.Response, seconds: float) -> Outcome:
    try:
        body = response.json()
    except ValueError:
        body = {}
    faces = body.get("faces") if response.status_code == 200 else None
    return Outcome(
        response.status_code,
        seconds,
        retry_after=response.headers.get("retry-after"),
        detail=body.get("detail") if isinstance(body.get("detail"), str) else None,
        faces=len(faces) if isinstance(faces, list) else None,
    )


@dataclass
class HealthWatch:
    """What /health answered while something else ran: a status (None: no answer) per poll."""

    statuses: list[int | None] = field(default_factory=list)
    slowest: float = 0.0


@contextmanager
def watching_health(
    base_url: str, every: float = 0.1, timeout: float = 10.0
) -> Iterator[HealthWatch]:
    """Poll /health from a thread while the block runs (a liveness probe under load)."""
    watch = HealthWatch()
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as http:
            while not done.is_set():
                started = time.perf_counter()
                try:
                    watch.statuses.append(http.get("/health").status_code)
                except httpx.HTTPError:
                    watch.statuses.append(None)
                watch.slowest = max(watch.slowest, time.perf_counter() - started)
                done.wait(every)

    with in_background(poll, "health-watch", stop=done):
        yield watch
