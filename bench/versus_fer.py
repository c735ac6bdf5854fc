"""This service over HTTP against the `fer` package in process, on the same photos, in one run.

    python bench/versus_fer.py [--rounds 5] [--requests 100] [--baseline CHECKOUT] [--model FILE]

People compare this service with `fer` (a Haar cascade and a mini-Xception network, run in the
caller's process). `fer` runs from its own environment, bench/.fer-venv (made on first use from
bench/fer-requirements.txt: `fer` itself without the MTCNN and video extras it never imports
for Haar), in one long-lived process that times each photo on request: JPEG bytes decoded by
OpenCV, then `FER().detect_emotions`. The service (`python -m service`, default settings) is timed
by one keep-alive client (Python's http.client, each request built once, so that little of each
figure is the client's own Python), with the photo posted as multipart and as a raw
`image/jpeg` body, and by 16 closed-loop clients; the HTTP round trip alone (GET /health) is
reported too. With `--baseline`, the service of another checkout (e.g. a `git worktree add
/tmp/baseline HEAD`) is measured in the same rounds, for an A/B; with `--model FILE`
(repeatable), this checkout's service serving that model file instead of the shipped one (e.g.
the one-network fast choice) is too.

Photos: the real portrait (tests/data) at 256x256, and framed in a 640x480 photo. Each round
measures every contender on every photo back to back; the figures are medians over rounds of
each round's p50, so a change in the machine's load hits all alike. Writes
bench/results/versus_fer.{json,md}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]

from serve_report import versions, write_results  # noqa: E402

from harness.load import run_load  # noqa: E402
from harness.photos import jpeg, scene  # noqa: E402
from harness.server import ServiceProcess, service_process  # noqa: E402

FER_VENV = REPO / "bench" / ".fer-venv"
FER_REQUIREMENTS = REPO / "bench" / "fer-requirements.txt"
FER_PACKAGE = "fer==25.10.3"
"""Installed with --no-deps: its own requirements pull in torch (MTCNN) and video tools."""
PHOTOS = {"portrait 256x256": (256, 256), "frame 640x480": (640, 480)}
LOAD_CLIENTS = 16
FER = "fer, in process"

FER_WORKER = r"""
import json, sys, time
import cv2, numpy as np
from fer.fer import FER
detector = FER()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    data = np.frombuffer(open(request["path"], "rb").read(), np.uint8)
    seconds, cpu, faces = [], 0.0, 0
    for index in range(request["warm_up"] + request["runs"]):
        started, cpu_started = time.perf_counter(), time.process_time()
        found = detector.detect_emotions(cv2.imdecode(data, cv2.IMREAD_COLOR))
        if index >= request["warm_up"]:
            seconds.append(time.perf_counter() - started)
            cpu += time.process_time() - cpu_started
        faces = len(found)
    answer = {"seconds": seconds, "cpu_per_photo": cpu / request["runs"], "faces": faces}
    print(json.dumps(answer), flush=True)
"""


@dataclass(frozen=True)
class Timing:
    """Photos answered one after another: each one's wall time, the CPU time a photo took (all
    the threads of the process that did the work: fer's, or the server's), the faces found."""

    seconds: list[float]
    cpu_per_photo: float
    faces: int


def fer_python() -> Path:
    """bench/.fer-venv's Python, the environment made first if it is not there."""
    python = FER_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {FER_VENV} (once)", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FER_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(FER_REQUIREMENTS)], check=True)
        subprocess.run([*pip, "--no-deps", FER_PACKAGE], check=True)
    return python


class FerProcess:
    """One `fer` process, kept for the whole run (TensorFlow takes seconds to start)."""

    def __init__(self, python: Path) -> None:
        self._process = subprocess.Popen(
            [str(python), "-c", FER_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        )
        self._answer()

    def time(self, path: Path, runs: int) -> Timing:
        request = {"path": str(path), "runs": runs, "warm_up": max(3, runs // 10)}
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return Timing(**self._answer())

    def _answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fer process ended ({self._process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=20)


@contextmanager
def fer_process() -> Iterator[FerProcess]:
    fer = FerProcess(fer_python())
    try:
        yield fer
    finally:
        fer.close()


def http_times(service: ServiceProcess, photo: bytes, runs: int, raw: bool) -> Timing:
    """One keep-alive client, one request at a time, on Python's own `http.client`, the request
    built once (httpx, building each request anew, added 0.5-1.5 ms of its own a request on this
    machine: docs/experiments.md, "The benchmark's client")."""
    if raw:
        request = httpx.Request("POST", f"{service.url}/predict", content=photo)
        request.headers["Content-Type"] = "image/jpeg"
    else:
        request = httpx.Request(
            "POST", f"{service.url}/predict", files={"file": ("photo.jpg", photo)}
        )
    body, headers = request.read(), dict(request.headers)
    seconds: list[float] = []
    server = psutil.Process(service.process.pid)
    warm_up = max(3, runs // 10)
    connection = _connection(service)
    try:
        for index in range(warm_up + runs):
            if index == warm_up:
                cpu_started = sum(server.cpu_times()[:2])
            started = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"/predict answered {response.status}: {answer[:200]!r}")
            if index >= warm_up:
                seconds.append(elapsed)
    finally:
        connection.close()
    faces = len(json.loads(answer)["faces"])
    return Timing(seconds, (sum(server.cpu_times()[:2]) - cpu_started) / runs, faces)


def _connection(service: ServiceProcess) -> http.client.HTTPConnection:
    host, port = service.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=60)


def round_trip_ms(service: ServiceProcess, runs: int) -> float:
    """GET /health on the same kind of connection: the HTTP round trip alone, the floor under
    every figure of this service."""
    connection = _connection(service)
    seconds = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            connection.request("GET", "/health")
            connection.getresponse().read()
            seconds.append(time.perf_counter() - started)
    finally:
        connection.close()
    return median_ms(seconds[runs // 10 :])


def takes_raw_body(url: str, files: dict[str, Path]) -> bool:
    """Whether the service answers an `image/jpeg` body (a checkout from before it may not)."""
    photo = next(iter(files.values())).read_bytes()
    headers = {"Content-Type": "image/jpeg"}
    return httpx.post(f"{url}/predict", content=photo, headers=headers, timeout=60).is_success


def photos_per_second(url: str, photo: bytes, seconds: float) -> float:
    run = run_load(url, [photo], clients=LOAD_CLIENTS, seconds=seconds)
    return len(run.with_status(200)) / run.seconds


def median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": versions(), "rounds": args.rounds}
    contenders: dict[str, tuple[Path, Path | None]] = {"service": (REPO, None)}
    if args.baseline:
        contenders["baseline"] = (args.baseline.resolve(), None)
    for model in args.model:
        contenders[f"service with {_shown(model)}"] = (REPO, model.resolve())
    timings: dict[str, dict[str, list[Timing]]] = defaultdict(lambda: defaultdict(list))
    rates: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    round_trips: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        files = {}
        for photo, size in PHOTOS.items():
            files[photo] = Path(folder) / f"{size[0]}x{size[1]}.jpg"
            files[photo].write_bytes(jpeg(scene(*size)))
        fer = stack.enter_context(fer_process())
        services = {
            name: stack.enter_context(
                service_process(model, cwd=checkout, settings={"LOG_LEVEL": "warning"})
            )
            for name, (checkout, model) in contenders.items()
        }
        ways = {
            f"{name}, HTTP {way}": (service, way == "raw body")
            for name, service in services.items()
            for way in ("multipart", "raw body")
            if way == "multipart" or takes_raw_body(service.url, files)
        }
        for round_ in range(args.rounds):
            for photo, path in files.items():
                data = path.read_bytes()
                timings[FER][photo].append(fer.time(path, args.requests))
                for name, (service, raw) in ways.items():
                    timings[name][photo].append(http_times(service, data, args.requests, raw))
                for name, service in services.items():
                    rates[name][photo].append(
                        photos_per_second(service.url, data, args.load_seconds)
                    )
            for name, service in services.items():
                round_trips[name].append(round_trip_ms(service, args.requests))
            print(f"round {round_ + 1} of {args.rounds} measured", file=sys.stderr, flush=True)
    result["contenders"] = {
        name: {photo: _figures(runs) for photo, runs in by_photo.items()}
        for name, by_photo in timings.items()
    }
    result["round_trip_ms"] = {
        name: round(statistics.median(values), 2) for name, values in round_trips.items()
    }
    result["photos_per_s_16_clients"] = {
        name: {photo: round(statistics.median(values), 1) for photo, values in by_photo.items()}
        for name, by_photo in rates.items()
    }
    return result


def _shown(model: Path) -> str:
    """A model file as the report names it: relative to the checkout where it is inside."""
    path = model.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _figures(runs: list[Timing]) -> dict[str, Any]:
    """Medians over rounds of each round's p50 and CPU time a photo, and the faces found."""
    return {
        "p50_ms": round(statistics.median(median_ms(run.seconds) for run in runs), 2),
        "cpu_ms": round(statistics.median(run.cpu_per_photo for run in runs) * 1000, 2),
        "p50_ms_per_round": [median_ms(run.seconds) for run in runs],
        "faces": runs[-1].faces,
    }


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    contenders = result["contenders"]
    fer = contenders[FER]
    header = "| p50 wall / CPU a photo (x fer's) | " + " | ".join(PHOTOS) + " |"
    lines = [header, "|---" * (len(PHOTOS) + 1) + "|"]
    for name, by_photo in contenders.items():
        cells = []
        for photo in PHOTOS:
            figures, theirs = by_photo[photo], fer[photo]
            cells.append(
                f"{figures['p50_ms']:.1f} ms ({figures['p50_ms'] / theirs['p50_ms']:.2f}x) / "
                f"{figures['cpu_ms']:.1f} ms ({figures['cpu_ms'] / theirs['cpu_ms']:.2f}x), "
                f"{figures['faces']} face{'s' if figures['faces'] != 1 else ''}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, by_photo in result["photos_per_s_16_clients"].items():
        cells = [f"{by_photo[photo]:.1f}" for photo in PHOTOS]
        lines.append(f"| {name}, photos/s, {LOAD_CLIENTS} clients | " + " | ".join(cells) + " |")
    trips = ", ".join(f"{name} {ms:.2f} ms" for name, ms in result["round_trip_ms"].items())
    return (
        f"{machine['cpu']}, {machine['usable_cpus']} usable CPUs, {machine['date']} (load average "
        f"before: {machine['load_average_before']}). Medians over {result['rounds']} rounds of "
        "each round's p50 and CPU time a photo (fer: its process; the service: the server "
        f"process, not the client); `{FER_PACKAGE}` (its Haar cascade, its default) in its own "
        "process and environment (bench/.fer-venv), "
        "the service over loopback HTTP, one keep-alive client (Python's http.client, each "
        f"request built once). The HTTP round trip alone (GET /health, same client): {trips}."
        "\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=30, help="timed per photo and round")
    parser.add_argument("--load-seconds", type=float, default=4.0, help="16 clients, per round")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alike")
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="also this checkout's service serving this model file (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    result = measure(args)
    report = markdown(result)
    write_results(args.out, "versus_fer", result, report)


if __name__ == "__main__":
    main()
