"""The service against its targets and its physical floor: stages, HTTP latency, throughput,
cost against image size, cold start and memory, on this machine.

    python bench/serve_bench.py [--model artifacts/emotion.onnx] [--soak-requests 10000]

Starts the real service (`python -m service`, its default settings plus whatever the environment
sets: `DETECTION_MAX_SIDE=480 python bench/serve_bench.py` measures another setting) on a free
port, talks to it over loopback, and also runs its pipeline in this process to time each stage.
Prints a markdown table and writes bench/results/serve_bench.{json,md}. The photos are built at
run time from the real portrait (tests/service/photos.py). Figures name the machine; a busy
machine (a training run) makes them slower and noisier: the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402
from model_latency import per_face_ms, session_on_one_thread  # noqa: E402
from serve_report import markdown, versions  # noqa: E402

import service.pipeline  # noqa: E402  (after the path is set)
from service.app import create_app  # noqa: E402
from service.images import decode_upright  # noqa: E402
from service.pipeline import EmotionPipeline  # noqa: E402
from service.schemas import DetectMode  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.service.load import run_load  # noqa: E402
from tests.service.photos import VIDEO_SIZES, face_crop_png, scene_jpeg  # noqa: E402
from tests.service.server import ServiceProcess, service_process  # noqa: E402

RESULTS = REPO / "bench" / "results"
PHOTO_SIZE = (640, 480)
PHONE_SIZE = (4032, 3024)
"""A 12-megapixel phone photo: not one of the video sizes the cost target compares."""
PORTRAIT_FACE_CENTRE = (224, 113)
"""Where the face is in the 512x512 portrait the scenes are made of (tests/data/README.md)."""


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
def recording_stages(record: dict[str, list[float]]) -> Iterator[None]:
    """Time every stage the pipeline runs, through its own stage hook (so the stage boundaries
    are the pipeline's, not a copy of them here): wall time under the stage's name, CPU time of
    this process (every thread: OpenCV's and onnxruntime's too) under `cpu:` and the name."""
    original = service.pipeline.stage

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        with original(name):
            yield
        record[name].append(time.perf_counter() - started)
        record[f"cpu:{name}"].append(time.process_time() - cpu)

    service.pipeline.stage = timed
    try:
        yield
    finally:
        service.pipeline.stage = original


def stage_times(
    pipeline: EmotionPipeline, data: bytes, detect: DetectMode, runs: int
) -> dict[str, Any]:
    """p50/p95 of each stage and of the whole analysis of one upload, and the floor: decode +
    detect of the same runs, what no pipeline built on this decoder and detector can beat."""
    record: dict[str, list[float]] = defaultdict(list)
    with recording_stages(record):
        for _ in range(max(5, runs // 10)):
            pipeline.predict([data], detect, 20)
        record.clear()
        for _ in range(runs):
            started, cpu = time.perf_counter(), time.process_time()
            pipeline.predict([data], detect, 20)
            record["total"].append(time.perf_counter() - started)
            record["cpu:total"].append(time.process_time() - cpu)
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


def http_latency(
    url: str, data: bytes, requests: int, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """One client, one request at a time, keep-alive: the latency a caller sees."""
    timings, faces = [], set()
    with httpx.Client(base_url=url, timeout=60) as http:
        for index in range(requests + max(5, requests // 10)):
            started = time.perf_counter()
            response = http.post("/predict", params=params, files={"file": ("photo", data)})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            faces.add(len(response.json()["faces"]))
            if index >= requests // 10:
                timings.append(elapsed)
    return percentiles(timings[:requests]) | {"faces": sorted(faces)}


def health_latency(url: str, requests: int) -> dict[str, float]:
    """GET /health: an HTTP round trip through the same server with no work in it."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(10):
            http.get("/health")
        timings = []
        for _ in range(requests):
            started = time.perf_counter()
            http.get("/health").raise_for_status()
            timings.append(time.perf_counter() - started)
    return percentiles(timings)


def throughput(url: str, photo: bytes, clients: int, seconds: float) -> dict[str, Any]:
    run = run_load(url, [photo], clients=clients, seconds=seconds)
    answered = run.with_status(200)
    return {
        "clients": clients,
        "photos_per_s": round(len(answered) / run.seconds, 1),
        "errors": len(run.outcomes) - len(answered),
        **percentiles([outcome.seconds for outcome in answered]),
    }


def size_costs(
    url: str, pipeline: EmotionPipeline, requests: int, runs: int
) -> list[dict[str, Any]]:
    """One scene at each video size: in-process analysis, HTTP latency, and the faces found
    (exactly one, where the portrait's face is)."""
    rows = []
    for width, height in (*VIDEO_SIZES, PHONE_SIZE):
        data = scene_jpeg(width, height)
        answer = httpx.post(f"{url}/predict", files={"file": data}, timeout=60).json()
        rows.append(
            {
                "size": f"{width}x{height}",
                "jpeg_kb": round(len(data) / 1024),
                "in_process": stage_times(pipeline, data, DetectMode.auto, runs)["stages"],
                "http": http_latency(url, data, requests),
                "faces": [face["box"] for face in answer["faces"]],
                "face_in_place": _face_in_place(answer["faces"], width, height),
            }
        )
    return rows


def _face_in_place(faces: list[dict[str, Any]], width: int, height: int) -> bool:
    """One face, centred within a tenth of the frame's height of the portrait's face."""
    if len(faces) != 1 or not faces[0]["detected"]:
        return False
    scale = height / 512  # the portrait fills the frame's height, centred
    expected_x = (width - height) / 2 + PORTRAIT_FACE_CENTRE[0] * scale
    expected_y = PORTRAIT_FACE_CENTRE[1] * scale
    box = faces[0]["box"]
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    return abs(x - expected_x) < height / 10 and abs(y - expected_y) < height / 10


def reduced_decoding(pipeline: EmotionPipeline, runs: int) -> list[dict[str, Any]]:
    """Decode + detect of large JPEGs decoded in full (as before) and reduced (as the pipeline
    does): libjpeg's scaled decoding against a full decode and a larger resize for detection."""
    rows = []
    side = pipeline.decode_side(DetectMode.auto)
    for width, height in (VIDEO_SIZES[-1], PHONE_SIZE):
        data = scene_jpeg(width, height)
        row: dict[str, Any] = {"size": f"{width}x{height}", "decode_side": side}
        for name, min_side in (("full", None), ("reduced", side)):
            timings = []
            for _ in range(runs):
                started = time.process_time()
                decoded = decode_upright(data, pipeline.limits, min_side=min_side)
                pipeline.detector.detect(decoded.gray)
                timings.append(time.process_time() - started)
            row[name] = {"decoded": list(decoded.gray.shape[::-1]), "cpu_ms": _median_ms(timings)}
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
        result["photo_in_process"] = stage_times(pipeline, photo, DetectMode.auto, args.runs)
        result["crop_in_process"] = stage_times(pipeline, crop, DetectMode.never, args.runs)
        result["reduced_decoding"] = reduced_decoding(pipeline, max(5, args.runs // 10))
        step("stages in process")

        with service_process(args.model, settings={"LOG_LEVEL": "warning"}) as run:
            busy = {"at_rest_mb": rss_mb(run)}
            result["health_http"] = health_latency(run.url, args.requests)
            result["photo_http"] = http_latency(run.url, photo, args.requests)
            result["crop_http"] = http_latency(run.url, crop, args.requests, {"detect": "never"})
            step("latency over HTTP")
            result["sizes"] = size_costs(run.url, pipeline, args.requests // 2, args.runs // 2)
            step("cost against image size")
            result["throughput"] = [
                throughput(run.url, photo, clients, args.seconds) for clients in (1, 4, 16)
            ]
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve_bench.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
