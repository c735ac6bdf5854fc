"""The service against its targets and its physical floor: stages, HTTP latency, throughput,
cost against image size, cold start and memory, on this machine.

    python bench/serve_bench.py [--model artifacts/emotion.onnx] [--soak-requests 10000]

Starts the real service (`python -m service`, its default settings plus whatever the environment
sets: `DETECTION_MAX_SIDE=480 python bench/serve_bench.py` measures another setting) on a free
port, talks to it over loopback, and also runs its pipeline in this process to time each stage.
Prints a markdown table and writes bench/results/serve_bench.{json,md}. The photos are built at
run time from the real portrait (harness/photos.py). Figures name the machine; a busy
machine (a training run) makes them slower and noisier: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
# Starlette asks TestClient users to move from httpx to httpx2; httpx is what is pinned.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

from fastapi.testclient import TestClient  # noqa: E402
from model_latency import per_face_ms, session_on_one_thread  # noqa: E402
from serve_report import markdown, versions, write_results  # noqa: E402

import service.pipeline  # noqa: E402
from harness.load import LoadRun, run_load  # noqa: E402
from harness.photos import VIDEO_SIZES, face_crop_png, face_in_scene, scene_jpeg  # noqa: E402
from harness.server import ServiceProcess, service_process  # noqa: E402
from service.app import create_app  # noqa: E402
from service.images import decode_upright  # noqa: E402
from service.pipeline import EmotionPipeline  # noqa: E402
from service.schemas import DetectMode  # noqa: E402
from service.settings import Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
PHOTO_SIZE = (640, 480)
CONCURRENCY = (1, 4, 16)
PHONE_SIZE = (4032, 3024)
"""A 12-megapixel phone photo: not one of the video sizes the cost target compares."""


def percentiles(seconds: list[float], cpu: list[float] | None = None) -> dict[str, float]:
    """p50/p95/p99 in milliseconds, and the median CPU time when given: CPU time is what a busy
    machine inflates least, so it says where the time goes when the wall clock is noisy."""
    values = np.asarray(seconds) * 1000
    figures = {f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}
    if cpu:
        figures["cpu_p50_ms"] = round(float(np.median(cpu)) * 1000, 2)
    return figures | {"n": len(seconds)}


# --- in process: the pipeline's own stages ------------------------------------------------------


@contextmanager
def recording_stages() -> Iterator[Callable[[dict[str, list[float]]], None]]:
    """Time every stage the pipeline runs, through its own stage hook (so the stage boundaries
    are the pipeline's, not a copy of them here), into the record dict last given to the
    function yielded: wall time under the stage's name, CPU time of this process (every thread:
    OpenCV's and onnxruntime's too) under `cpu:` and the name."""
    original = service.pipeline.stage
    target: list[dict[str, list[float]]] = [defaultdict(list)]

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        with original(name):
            yield
        target[0][name].append(time.perf_counter() - started)
        target[0][f"cpu:{name}"].append(time.process_time() - cpu)

    def record_into(record: dict[str, list[float]]) -> None:
        target[0] = record

    service.pipeline.stage = timed
    try:
        yield record_into
    finally:
        service.pipeline.stage = original


Case = tuple[bytes, DetectMode]


def stage_times(pipeline: EmotionPipeline, cases: dict[str, Case], runs: int) -> dict[str, Any]:
    """Per case: p50/p95 of each stage and of the whole analysis of its upload, and the floor
    (decode + detect of the same runs: what no pipeline on this decoder and detector can beat).
    The cases take turns, run after run, so a change in the machine's load hits all alike."""
    records: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in cases}
    with recording_stages() as record_into:
        for run in range(max(5, runs // 10) + runs):
            for name, (data, detect) in cases.items():
                record = records[name] if run >= runs // 10 else defaultdict(list)  # warm-up
                record_into(record)
                started, cpu = time.perf_counter(), time.process_time()
                pipeline.predict([data], detect, 20)
                record["total"].append(time.perf_counter() - started)
                record["cpu:total"].append(time.process_time() - cpu)
    return {name: _stage_figures(record) for name, record in records.items()}


def _stage_figures(record: dict[str, list[float]]) -> dict[str, Any]:
    stages = {
        name: percentiles(times, record[f"cpu:{name}"])
        for name, times in record.items()
        if not name.startswith("cpu:")
    }
    floor = percentiles(
        _sums(record, "decode", "detect"), _sums(record, "cpu:decode", "cpu:detect")
    )
    return {"stages": stages, "floor": floor}


def _sums(record: dict[str, list[float]], *names: str) -> list[float]:
    """Run by run, the time of the stages named (those the runs went through)."""
    present = [record[name] for name in names if name in record]
    return [sum(times) for times in zip(*present, strict=True)]


# --- over HTTP ----------------------------------------------------------------------------------


class RawBody(bytes):
    """A file sent as the request body itself (`Content-Type: image/jpeg`), not multipart."""


Request = tuple[str, bytes | None, dict[str, str]]
"""A path, the file to upload (None: a GET; a `RawBody`: as the body) and the query
parameters."""


def http_latency(url: str, cases: dict[str, Request], requests: int) -> dict[str, Any]:
    """One client, one request at a time, keep-alive: the latency a caller sees, per case. The
    cases take turns, so each sees the same background load."""
    timings: dict[str, list[float]] = {name: [] for name in cases}
    faces: dict[str, set[int]] = {name: set() for name in cases}
    warm_up = max(5, requests // 10)
    with httpx.Client(base_url=url, timeout=60) as http:
        for index in range(warm_up + requests):
            for name, (path, data, params) in cases.items():
                started = time.perf_counter()
                if data is None:
                    response = http.get(path, params=params)
                elif isinstance(data, RawBody):
                    headers = {"Content-Type": "image/jpeg"}
                    response = http.post(path, params=params, content=data, headers=headers)
                else:
                    response = http.post(path, params=params, files={"file": ("photo", data)})
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if index >= warm_up:
                    timings[name].append(elapsed)
                if "faces" in response.json():
                    faces[name].add(len(response.json()["faces"]))
    return {name: percentiles(timings[name]) | {"faces": sorted(faces[name])} for name in cases}


def throughput(url: str, photo: bytes, seconds: float, rounds: int = 3) -> list[dict[str, Any]]:
    """Photos per second and latency at 1, 4 and 16 closed-loop clients, `seconds` each; the
    three take turns in `rounds` rounds, so a change in the machine's load hits all alike."""
    runs: dict[int, list[LoadRun]] = {clients: [] for clients in CONCURRENCY}
    for _ in range(rounds):
        for clients in CONCURRENCY:
            runs[clients].append(run_load(url, [photo], clients=clients, seconds=seconds / rounds))
    rows = []
    for clients, parts in runs.items():
        outcomes = [outcome for run in parts for outcome in run.outcomes]
        answered = [outcome for outcome in outcomes if outcome.status == 200]
        rows.append(
            {
                "clients": clients,
                "photos_per_s": round(len(answered) / sum(run.seconds for run in parts), 1),
                "errors": len(outcomes) - len(answered),
                **percentiles([outcome.seconds for outcome in answered]),
            }
        )
    return rows


def size_costs(
    url: str, pipeline: EmotionPipeline, requests: int, runs: int
) -> list[dict[str, Any]]:
    """One scene at each video size (and a phone photo): in-process analysis and HTTP latency,
    the sizes taking turns, and the faces found (exactly one, where the portrait's face is)."""
    sizes = {f"{width}x{height}": (width, height) for width, height in (*VIDEO_SIZES, PHONE_SIZE)}
    photos = {name: scene_jpeg(*size) for name, size in sizes.items()}
    in_process = stage_times(
        pipeline, {name: (data, DetectMode.auto) for name, data in photos.items()}, runs
    )
    http = http_latency(
        url, {name: ("/predict", data, {}) for name, data in photos.items()}, requests
    )
    rows = []
    for name, data in photos.items():
        answer = httpx.post(f"{url}/predict", files={"file": data}, timeout=60).json()
        rows.append(
            {
                "size": name,
                "jpeg_kb": round(len(data) / 1024),
                "in_process": in_process[name]["stages"],
                "http": http[name],
                "faces": [face["box"] for face in answer["faces"]],
                "face_in_place": _face_in_place(answer["faces"], *sizes[name]),
            }
        )
    return rows


def _face_in_place(faces: list[dict[str, Any]], width: int, height: int) -> bool:
    """One face, detected where the portrait's face is."""
    if len(faces) != 1 or not faces[0]["detected"]:
        return False
    box = faces[0]["box"]
    return face_in_scene(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, width, height)


def reduced_decoding(pipeline: EmotionPipeline, runs: int) -> list[dict[str, Any]]:
    """Decode + detect of large JPEGs decoded in full (as before) and reduced (as the pipeline
    does), taking turns: libjpeg's scaled decoding against a full decode and a larger resize
    for detection."""
    side = pipeline.decode_side(DetectMode.auto)
    ways = {"full": None, "reduced": side}
    rows = []
    for width, height in (VIDEO_SIZES[-1], PHONE_SIZE):
        data = scene_jpeg(width, height)
        timings: dict[str, list[float]] = {way: [] for way in ways}
        shapes = {}
        for _ in range(runs):
            for way, min_side in ways.items():
                started = time.process_time()
                decoded = decode_upright(data, pipeline.limits, min_side=min_side)
                pipeline.detector.detect(decoded.pixels)
                timings[way].append(time.process_time() - started)
                shapes[way] = list(decoded.pixels.shape[::-1])
        row: dict[str, Any] = {"size": f"{width}x{height}", "decode_side": side}
        for way in ways:
            row[way] = {"decoded": shapes[way], "cpu_ms": _median_ms(timings[way])}
        rows.append(row)
    return rows


def _median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


# --- the process: start, memory -----------------------------------------------------------------


def cold_starts(model: Path, times: int) -> dict[str, Any]:
    """Process start to the first 200 from /ready (polled every 20 ms), `times` fresh processes;
    and the CPU time the process had used by then (imports, model load, warm-up)."""
    seconds, cpu = [], []
    for _ in range(times):
        with service_process(model, settings={"LOG_LEVEL": "warning"}, poll_seconds=0.02) as run:
            seconds.append(run.startup_seconds)
            used = psutil.Process(run.process.pid).cpu_times()
            cpu.append(used.user + used.system)
    return {
        "runs_s": [round(value, 3) for value in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "cpu_median_s": round(statistics.median(cpu), 3),
    }


def rss_mb(run: ServiceProcess) -> float:
    """Resident memory of the server process and any children (workers), in MB."""
    process = psutil.Process(run.process.pid)
    total = process.memory_info().rss
    total += sum(child.memory_info().rss for child in process.children(recursive=True))
    return round(total / 1e6, 1)


def memory_soak(model: Path, photo: bytes, requests: int, samples: int = 10) -> dict[str, Any]:
    """A fresh server: resident memory at rest (ready, no request yet), then sampled along
    `requests` requests of the photo from 4 clients. Growth over the soak is what a leak would
    show; the first sample also holds what serving allocates once (thread arenas, buffers)."""
    with service_process(model, settings={"LOG_LEVEL": "warning"}) as run:
        at_rest = rss_mb(run)
        trace = []
        step = max(1, requests // samples)
        done = 0
        while done < requests:
            budget = min(step, requests - done)
            chunk = run_load(run.url, [photo], clients=4, seconds=3600, requests=budget)
            errors = len(chunk.outcomes) - len(chunk.with_status(200))
            done += len(chunk.outcomes)
            trace.append({"requests": done, "rss_mb": rss_mb(run), "errors": errors})
    return {
        "at_rest_mb": at_rest,
        "soak": trace,
        "growth_mb": round(trace[-1]["rss_mb"] - at_rest, 1),
        "growth_after_first_sample_mb": round(trace[-1]["rss_mb"] - trace[0]["rss_mb"], 1),
    }


# --- putting it together ------------------------------------------------------------------------


@contextmanager
def in_process_pipeline(settings: Settings) -> Iterator[EmotionPipeline]:
    """The pipeline exactly as the server builds it (the app's own lifespan, same settings)."""
    with TestClient(create_app(settings)) as client:
        yield client.app.state.service.pipeline


def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(model_path=args.model)
    photo, crop = scene_jpeg(*PHOTO_SIZE), face_crop_png()
    result: dict[str, Any] = {"machine": versions(), "settings": _settings_used(settings)}
    step = _progress()

    session = session_on_one_thread(args.model)
    result["model"] = {
        "batch_1": per_face_ms(session, 1, args.runs * 2),
        "batch_32": per_face_ms(session, 32, max(20, args.runs // 8)),
    }
    step("per-face model latency")

    with in_process_pipeline(settings) as pipeline:
        cases = {"photo": (photo, DetectMode.auto), "crop": (crop, DetectMode.never)}
        in_process = stage_times(pipeline, cases, args.runs)
        result["photo_in_process"], result["crop_in_process"] = (
            in_process["photo"],
            in_process["crop"],
        )
        result["reduced_decoding"] = reduced_decoding(pipeline, max(5, args.runs // 10))
        step("stages in process")

        with service_process(args.model, settings={"LOG_LEVEL": "warning"}) as run:
            busy = {"at_rest_mb": rss_mb(run)}
            requests = {
                "photo": ("/predict", photo, {}),
                "photo_raw": ("/predict", RawBody(photo), {}),
                "crop": ("/predict", crop, {"detect": "never"}),
                "health": ("/health", None, {}),
            }
            http = http_latency(run.url, requests, args.requests)
            result["photo_http"], result["crop_http"] = http["photo"], http["crop"]
            result["health_http"], result["photo_raw_http"] = http["health"], http["photo_raw"]
            step("latency over HTTP")
            result["sizes"] = size_costs(run.url, pipeline, args.requests // 2, args.runs // 2)
            step("cost against image size")
            result["throughput"] = throughput(run.url, photo, args.seconds)
            step("throughput")
            busy["after_mb"] = rss_mb(run)
    result["memory"] = memory_soak(args.model, photo, args.soak_requests)
    result["memory"]["measurement_server"] = busy
    step(f"memory over a soak of {args.soak_requests} requests")
    result["cold_start"] = cold_starts(args.model, args.cold_starts)
    step("cold start")
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _settings_used(settings: Settings) -> dict[str, Any]:
    names = ("detection_max_side", "min_face_pixels", "worker_threads", "workers")
    return {name: getattr(settings, name) for name in names} | {"model": settings.model_path.name}


def _progress() -> Callable[[str], None]:
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {what}", file=sys.stderr, flush=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "artifacts" / "emotion.onnx")
    parser.add_argument("--requests", type=int, default=200, help="per HTTP latency figure")
    parser.add_argument("--runs", type=int, default=200, help="per in-process figure")
    parser.add_argument("--seconds", type=float, default=10, help="per throughput figure")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    result = measure(args)
    report = markdown(result)
    write_results(args.out, "serve_bench", result, report)


if __name__ == "__main__":
    main()
