"""The service under slow and idle clients, and with a worker killed: what a normal client sees
meanwhile, how soon the attackers are cut, and whether memory and open files come back to rest.

    python bench/hostile_clients.py [--model artifacts/emotion.onnx] [--slow 40] [--idle 3000]
        [--large 12]

Starts the real service (`python -m service`, default settings plus the environment's) on a free
port and attacks it over loopback, one attack at a time:

- **slow uploads**: `--slow` connections each begin a `POST /predict` upload and send a byte a
  second (the slow-body attack of issue 39);
- **idle connections**: `--idle` connections each send the first line of a request and never
  finish its headers;
- **large images at once**: `--large` clients each post, at the same moment, a PNG of a
  few hundred KB that decodes to 48 megapixels (the decompression-bomb shape that
  MAX_DECODING_BYTES bounds), and the peak of the server's resident memory is sampled;
- **a worker killed**: with `WORKERS=2`, 4 clients post photos and one worker is sent SIGKILL.

During each, a normal client posts a 640x480 photo of a face on a new connection every
`--every` seconds and records the status and time of each answer (the target: 200 within 1 s,
every time). Resident memory and open files of the server are taken at rest before and after each
attack. Writes bench/results/hostile_clients.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

from serve_report import versions, write_results  # noqa: E402

from harness.background import in_background  # noqa: E402
from harness.load import run_load  # noqa: E402
from harness.photos import scene_jpeg  # noqa: E402
from harness.raw_http import idle_connections, trickling_uploads  # noqa: E402
from harness.server import ServiceProcess, service_process  # noqa: E402
from service.settings import Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
WARM_UP_REQUESTS = 200
"""Normal requests before the first measure at rest: what serving allocates once (thread arenas,
buffers) is not an attack's doing."""
TARGET_SECONDS = 1.0


def server_usage(run: ServiceProcess) -> dict[str, float]:
    """Resident memory (MB) and open files of the server and its workers."""
    processes = [psutil.Process(run.process.pid)]
    processes += processes[0].children(recursive=True)
    return {
        "rss_mb": round(sum(p.memory_info().rss for p in processes) / 1e6, 1),
        "open_files": sum(p.num_fds() for p in processes),
    }


def at_rest(run: ServiceProcess, settle: float = 3.0) -> dict[str, float]:
    """The usage once the server has had `settle` seconds to let go of what an attack left."""
    time.sleep(settle)
    return server_usage(run)


@contextmanager
def normal_client(url: str, photo: bytes, every: float) -> Iterator[list[dict[str, Any]]]:
    """A client posting `photo` on a new connection every `every` seconds while the block runs;
    yields the list its answers go into."""
    answers: list[dict[str, Any]] = []
    done = threading.Event()
    began = time.perf_counter()

    def post() -> None:
        while not done.is_set():
            started = time.perf_counter()
            try:
                with httpx.Client(base_url=url, timeout=30) as http:
                    status = http.post("/predict", files={"file": ("photo.jpg", photo)}).status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            answers.append(
                {
                    "status": status,
                    "seconds": time.perf_counter() - started,
                    "sent_at_s": round(started - began, 2),
                }
            )
            done.wait(every)

    with in_background(post, "normal-client", stop=done):
        yield answers


def summary(answers: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sorted(answer["seconds"] for answer in answers)
    statuses: dict[str, int] = {}
    for answer in answers:
        statuses[str(answer["status"])] = statuses.get(str(answer["status"]), 0) + 1
    return {
        "requests": len(answers),
        "statuses": statuses,
        "within_target": sum(
            answer["status"] == 200 and answer["seconds"] <= TARGET_SECONDS for answer in answers
        ),
        "p50_ms": round(seconds[len(seconds) // 2] * 1000, 1) if seconds else None,
        "max_ms": round(seconds[-1] * 1000, 1) if seconds else None,
        "slowest_sent_at_s": max(answers, key=lambda answer: answer["seconds"])["sent_at_s"]
        if answers
        else None,
    }


def wait_until(condition: Callable[[], bool], seconds: float, every: float = 0.05) -> float | None:
    """Seconds until `condition()` held (polled `every` seconds), or None if it did not in time."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return round(time.monotonic() - started, 2)
        time.sleep(every)
    return None


def open_connections(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    for line in metrics.splitlines():
        if line.startswith("emotion_connections_open "):
            return float(line.split()[1])
    raise AssertionError("no emotion_connections_open in /metrics")


def slow_uploads(run: ServiceProcess, photo: bytes, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    before = at_rest(run)
    with (
        trickling_uploads(run.url, args.slow, every=1.0) as trickle,
        normal_client(run.url, photo, args.every) as answers,
    ):
        all_cut = wait_until(lambda: trickle.cut == args.slow, args.seconds)
        remaining = args.seconds - (all_cut or args.seconds)
        time.sleep(max(0.0, remaining))  # the normal client goes on after the cut, as before
        statuses = trickle.statuses()
    return {
        "connections": args.slow,
        "grace_s": settings.upload_rate_grace_seconds,
        "min_rate_bytes_per_s": settings.min_upload_bytes_per_second,
        "all_cut_after_s": all_cut,
        "answered_408": statuses.count(408),
        "normal_client": summary(answers),
        "at_rest_before": before,
        "at_rest_after": at_rest(run),
    }


def idle(run: ServiceProcess, photo: bytes, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    before = at_rest(run)
    opened = time.monotonic()
    with idle_connections(run.url, args.idle, b"GET /health HTTP/1.1\r\n"):
        opened_in = round(time.monotonic() - opened, 2)
        peak_open = open_connections(run.url)
        during = server_usage(run)
        with normal_client(run.url, photo, args.every) as answers:
            all_closed = wait_until(
                lambda: open_connections(run.url) <= 1,
                settings.header_timeout_seconds + args.seconds,
                every=0.5,  # each look is a request: few, so as not to load the server
            )
    return {
        "connections": args.idle,
        "opened_in_s": opened_in,
        "open_at_peak": peak_open,
        "header_timeout_s": settings.header_timeout_seconds,
        "all_closed_by_server_after_s": all_closed,
        "normal_client": summary(answers),
        "at_rest_before": before,
        "during": during,
        "at_rest_after": at_rest(run),
    }


LARGE_IMAGE_SIZE = (8000, 6000)
"""48 megapixels: under MAX_IMAGE_PIXELS (50 MP), so each is decoded, not refused."""


def large_png() -> bytes:
    """A 48-megapixel RGB PNG that compresses to a few hundred KB (gray with a line every 40
    rows), as an attacker would send."""
    width, height = LARGE_IMAGE_SIZE
    gray = np.full((height, width), 128, np.uint8)
    gray[::40] = 0
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray] * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def peak_rss_mb(run: ServiceProcess, every: float = 0.02) -> Iterator[list[float]]:
    """The server's largest resident memory (MB) while the block runs, sampled; yields a list
    whose one item is set when the block ends."""
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server_usage(run)["rss_mb"])
            done.wait(every)

    with in_background(sample, "rss-sampler", stop=done):
        yield peak


def large_images(run: ServiceProcess, photo: bytes, args: argparse.Namespace) -> dict[str, Any]:
    image = large_png()
    before = at_rest(run)

    def post(_: int) -> int | str:
        try:
            return httpx.post(
                f"{run.url}/predict",
                content=image,
                headers={"Content-Type": "image/png"},
                timeout=120,
            ).status_code
        except httpx.HTTPError as error:
            return type(error).__name__

    with (
        normal_client(run.url, photo, args.every) as answers,
        peak_rss_mb(run) as peak,
        ThreadPoolExecutor(args.large) as clients,
    ):
        statuses = list(clients.map(post, range(args.large)))
    counted: dict[str, int] = {}
    for status in statuses:
        counted[str(status)] = counted.get(str(status), 0) + 1
    return {
        "clients": args.large,
        "megapixels": LARGE_IMAGE_SIZE[0] * LARGE_IMAGE_SIZE[1] / 1e6,
        "file_kb": len(image) // 1024,
        "statuses": counted,
        "peak_rss_mb": peak[0],
        "decoding_budget_mb": Settings().max_decoding_bytes // (1024 * 1024),
        "normal_client": summary(answers),
        "at_rest_before": before,
        "at_rest_after": at_rest(run),
    }


def worker_killed(model: Path, photo: bytes) -> dict[str, Any]:
    with service_process(model, settings={"WORKERS": "2", "LOG_LEVEL": "info"}) as run:
        wait_until(lambda: run.output().count("serving model") >= 2, 60)
        workers = [
            child.pid
            for child in psutil.Process(run.process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())
        ]
        runs = []
        loader = threading.Thread(
            target=lambda: runs.append(run_load(run.url, [photo], clients=4, seconds=10))
        )
        loader.start()
        time.sleep(3)
        os.kill(workers[0], signal.SIGKILL)
        killed_at = time.monotonic()
        replaced = wait_until(lambda: run.output().count("serving model") >= 3, 60)
        loader.join()
        (load,) = runs
    return {
        "clients": 4,
        "requests": len(load.outcomes),
        "statuses": {str(status): count for status, count in load.statuses.items()},
        "failed_requests": len(load.with_status(None)),
        "new_worker_serving_after_s": replaced,
        "measured_from_kill_s": round(time.monotonic() - killed_at, 1),
    }


def markdown(result: dict[str, Any]) -> str:
    killed = result["worker_killed"]

    def client(run: dict[str, Any]) -> str:
        normal = run["normal_client"]
        return (
            f"{normal['within_target']} of {normal['requests']} answered 200 within "
            f"{TARGET_SECONDS:g} s (statuses {normal['statuses']}; p50 {normal['p50_ms']} ms, "
            f"max {normal['max_ms']} ms)"
        )

    def rest(run: dict[str, Any]) -> str:
        before, after = run["at_rest_before"], run["at_rest_after"]
        return (
            f"{before['rss_mb']} -> {after['rss_mb']} MB, "
            f"{before['open_files']} -> {after['open_files']} open files"
        )

    machine = result["machine"]
    return "\n".join(
        [
            "## Hostile clients",
            f"{machine['cpu']}, {machine['date']}, load average before "
            f"{machine['load_average_before']}.",
            "",
            "| Attack | Attackers cut | Normal client meanwhile | Server at rest before -> after |",
            "| --- | --- | --- | --- |",
            *(row for attacks in result["rounds"] for row in _rows(attacks, client, rest)),
            "",
            f"A worker killed (SIGKILL) under load, WORKERS=2, {killed['clients']} clients: "
            f"{killed['failed_requests']} of {killed['requests']} requests failed "
            f"(statuses {killed['statuses']}); the new worker served "
            f"{killed['new_worker_serving_after_s']} s after the kill.",
            "",
        ]
    )


def _rows(
    attacks: dict[str, Any],
    client: Callable[[dict[str, Any]], str],
    rest: Callable[[dict[str, Any]], str],
) -> list[str]:
    slow, idle_run, large = attacks["slow_uploads"], attacks["idle"], attacks["large_images"]
    return [
        f"| {slow['connections']} uploads at 1 byte/s | all after {slow['all_cut_after_s']} s "
        f"(grace {slow['grace_s']:g} s), {slow['answered_408']} seen answered 408 | "
        f"{client(slow)} | {rest(slow)} |",
        f"| {idle_run['connections']} connections that never finish their headers "
        f"(opened in {idle_run['opened_in_s']} s, {idle_run['open_at_peak']:g} open) | "
        f"all closed after {idle_run['all_closed_by_server_after_s']} s (header timeout "
        f"{idle_run['header_timeout_s']:g} s) | {client(idle_run)} | {rest(idle_run)} "
        f"({idle_run['during']['rss_mb']} MB, {idle_run['during']['open_files']} files "
        "during) |",
        f"| {large['clients']} PNGs of {large['megapixels']:g} megapixels ({large['file_kb']} KB "
        f"each) at once | answered {large['statuses']}; server peak {large['peak_rss_mb']} MB "
        f"(decoding budget {large['decoding_budget_mb']} MB) | {client(large)} | {rest(large)} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Settings().model_path)
    parser.add_argument("--slow", type=int, default=40, help="slow uploads")
    parser.add_argument("--idle", type=int, default=3000, help="idle connections")
    parser.add_argument("--seconds", type=float, default=15, help="length of each attack")
    parser.add_argument("--every", type=float, default=0.25, help="the normal client's pace")
    parser.add_argument("--large", type=int, default=12, help="48-megapixel PNGs at once")
    parser.add_argument(
        "--rounds", type=int, default=2, help="each attack this many times: a leak would grow"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.idle + 1024)), hard))
    photo = scene_jpeg(640, 480)
    result: dict[str, Any] = {"machine": versions(), "rounds": []}
    with service_process(args.model, settings={"LOG_LEVEL": "warning"}) as run:
        run_load(run.url, [photo], clients=4, seconds=3600, requests=WARM_UP_REQUESTS)
        for _ in range(args.rounds):
            result["rounds"].append(
                {
                    "slow_uploads": slow_uploads(run, photo, args),
                    "idle": idle(run, photo, args),
                    "large_images": large_images(run, photo, args),
                }
            )
    result["worker_killed"] = worker_killed(args.model, photo)
    write_results(RESULTS, "hostile_clients", result, markdown(result))


if __name__ == "__main__":
    main()
