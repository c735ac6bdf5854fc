"""The serving benchmark's results as markdown: the targets first (pass/fail), then each figure.

Kept apart from the measuring (bench/serve_bench.py) so a results file can be rendered again:

    python bench/serve_report.py bench/results/serve_bench.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy
import onnxruntime
import PIL

from contract.provenance import machine_description

VIDEO_SIZES = ("427x240", "854x480", "1280x720", "1920x1080")

# The latest bar set for each figure: the ensemble's per-face budget (issue 37) and the one-client
# photo latency (issue 38); the rest from the first serving issue.
TARGETS = {
    "per-face inference, batch 1, one thread (p50)": 6.0,
    "end to end, 640x480 photo, one client (p50)": 8.0,
    "cold start, process start to /ready 200": 2.0,
    "resident memory growth over the soak": 50.0,
    "1080p time over 240p time (HTTP p50)": 3.0,
}


def versions() -> dict[str, Any]:
    """The machine and the software the figures belong to."""
    return {
        "cpu": machine_description(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def _verdict(value: float, limit: float) -> str:
    return "pass" if value <= limit else "**fail**"


def _targets(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    growth = result["memory"]["growth_mb"]
    sizes = {row["size"]: row for row in result["sizes"]}
    video = [sizes[size] for size in VIDEO_SIZES]
    ratio = video[-1]["http"]["p50_ms"] / video[0]["http"]["p50_ms"]
    measured = {
        "per-face inference, batch 1, one thread (p50)": (
            result["model"]["batch_1"]["p50_ms"],
            "ms",
        ),
        "end to end, 640x480 photo, one client (p50)": (result["photo_http"]["p50_ms"], "ms"),
        "cold start, process start to /ready 200": (result["cold_start"]["median_s"], "s"),
        "resident memory growth over the soak": (growth, "MB"),
        "1080p time over 240p time (HTTP p50)": (ratio, "x"),
    }
    rows = []
    for name, limit in TARGETS.items():
        value, unit = measured[name]
        bound = "<" if unit == "MB" else "≤"
        rows.append(
            (name, f"{value:.2f} {unit}", f"{bound} {limit:g} {unit}", _verdict(value, limit))
        )
    placed = all(row["face_in_place"] for row in video)
    faces = ", ".join(str(len(row["faces"])) for row in video)
    rows.append(
        (
            "faces found at 240p, 480p, 720p, 1080p",
            faces,
            "1 each, in place",
            "pass" if placed else "**fail**",
        )
    )
    return rows


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


STAGES = ("decode", "detect", "crop", "infer", "total")


def _stage(stages: dict[str, dict[str, float]], name: str) -> str:
    if name not in stages:
        return "-"
    figure = stages[name]
    return f"{_p(figure, 50, 95)} (CPU {figure['cpu_p50_ms']:.2f})"


def _p(figure: dict[str, float], *quantiles: int) -> str:
    return " / ".join(f"{figure[f'p{q}_ms']:.2f}" for q in quantiles)


def markdown(result: dict[str, Any]) -> str:
    machine, settings = result["machine"], result["settings"]
    photo, crop = result["photo_in_process"], result["crop_in_process"]
    http, health = result["photo_http"], result["health_http"]
    stages = photo["stages"]
    gap = http["p50_ms"] - photo["floor"]["p50_ms"]
    work = stages["crop"]["p50_ms"] + stages["infer"]["p50_ms"]
    rest = gap - work - health["p50_ms"]
    memory = result["memory"]
    busy = memory["measurement_server"]
    parts = [
        "## Serving benchmark",
        f"{machine['cpu']} ({machine['usable_cpus']} of {machine['logical_cpus']} logical CPUs "
        f"usable); Python {machine['python']}, onnxruntime {machine['onnxruntime']}, OpenCV "
        f"{machine['opencv']}, NumPy {machine['numpy']}, Pillow {machine['pillow']}; "
        f"{machine['date']}. Load average {machine['load_average_before']} before, "
        f"{machine['load_average_after']} after. Model `{settings['model']}`; "
        f"DETECTION_MAX_SIDE={settings['detection_max_side']}, "
        f"MIN_FACE_PIXELS={settings['min_face_pixels']}, WORKERS={settings['workers']}, "
        f"WORKER_THREADS={settings['worker_threads']}.",
        "### Targets",
        _table(["figure", "measured", "target", ""], [list(row) for row in _targets(result)]),
        "### Time per stage, in process (ms: wall p50 / p95, and CPU p50 of all threads)",
        _table(
            ["stage", "640x480 JPEG, one face", "48x48 PNG crop, detect=never"],
            [[name, _stage(stages, name), _stage(crop["stages"], name)] for name in STAGES],
        ),
        "### End to end over HTTP, one client (ms)",
        _table(
            ["request", "p50", "p95", "p99"],
            [
                ["640x480 JPEG, one face", *_p(http, 50, 95, 99).split(" / ")],
                *(
                    [["the same, as the raw body", *_p(raw, 50, 95, 99).split(" / ")]]
                    if (raw := result.get("photo_raw_http"))
                    else []
                ),
                ["48x48 PNG crop, detect=never", *_p(result["crop_http"], 50, 95, 99).split(" / ")],
                ["GET /health (the HTTP round trip alone)", *_p(health, 50, 95, 99).split(" / ")],
            ],
        ),
        f"**Floor and gap.** Decode + detect alone (the physical floor of this decoder and "
        f"detector) take {photo['floor']['p50_ms']:.2f} ms at p50 for the 640x480 photo; end to "
        f"end takes {http['p50_ms']:.2f} ms. The {gap:.2f} ms between: cropping and inference "
        f"{work:.2f} ms, an HTTP round trip {health['p50_ms']:.2f} ms, and {rest:.2f} ms of "
        f"multipart upload parsing, moving the work to a worker thread and back, and the JSON "
        f"answer (plus the client's own time: it is Python, on the same CPUs).",
        "### Per-face model latency, one onnxruntime thread (ms per face)",
        _table(
            ["batch", "p50", "p95"],
            [
                [batch[6:], result["model"][batch]["p50_ms"], result["model"][batch]["p95_ms"]]
                for batch in ("batch_1", "batch_32")
            ],
        ),
        "### Throughput, 640x480 photo, closed loop",
        _table(
            ["clients", "photos/s", "p50 ms", "p95 ms", "p99 ms", "errors"],
            [
                [
                    row["clients"],
                    row["photos_per_s"],
                    *_p(row, 50, 95, 99).split(" / "),
                    row["errors"],
                ]
                for row in result["throughput"]
            ],
        ),
        "### Cost against image size (one portrait scene; ms, p50; the target: 240p against 1080p)",
        _table(
            ["size", "JPEG", "decode", "detect", "in process", "HTTP", "faces"],
            [
                [
                    row["size"],
                    f"{row['jpeg_kb']} KB",
                    row["in_process"]["decode"]["p50_ms"],
                    row["in_process"]["detect"]["p50_ms"],
                    row["in_process"]["total"]["p50_ms"],
                    row["http"]["p50_ms"],
                    len(row["faces"]),
                ]
                for row in result["sizes"]
            ],
        ),
        "JPEG decoding at reduced size (decode + detect, ms of CPU, median): libjpeg decodes "
        "a large JPEG at 1/2, 1/4 or 1/8 while it reads it; the pipeline asks for the least "
        "that keeps its smallest detectable face 48 pixels wide.",
        _table(
            ["photo", "decoded in full", "decoded reduced", ""],
            [
                [
                    row["size"],
                    f"{row['full']['cpu_ms']} ({'x'.join(map(str, row['full']['decoded']))})",
                    f"{row['reduced']['cpu_ms']} ({'x'.join(map(str, row['reduced']['decoded']))})",
                    f"{row['full']['cpu_ms'] / row['reduced']['cpu_ms']:.1f}x less",
                ]
                for row in result["reduced_decoding"]
            ],
        ),
        "### Cold start and memory",
        f"Process start to `/ready` 200: {result['cold_start']['median_s']:.2f} s (median of "
        f"{result['cold_start']['runs_s']} s), of which the process used "
        f"{result['cold_start']['cpu_median_s']:.2f} s of CPU (imports, model load, warm-up).",
        _table(
            ["resident memory of a fresh server", "MB", "failed requests"],
            [
                ["at rest (ready, before any request)", memory["at_rest_mb"], ""],
                *[
                    [
                        f"after {point['requests']} requests (4 clients)",
                        point["rss_mb"],
                        point["errors"],
                    ]
                    for point in memory["soak"]
                ],
            ],
        ),
        f"Growth: {memory['growth_mb']} MB from rest, {memory['growth_after_first_sample_mb']} MB "
        f"after the first sample (what serving allocates once: a malloc arena and buffers per "
        f"worker thread, onnxruntime's and OpenCV's scratch memory). The server that ran the "
        f"measurements above (16 clients at once, 12-megapixel photos) went from "
        f"{busy['at_rest_mb']} to {busy['after_mb']} MB.",
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()


def write_results(out: Path, name: str, result: dict[str, Any], report: str) -> None:
    """`out/<name>.json` and `out/<name>.md`, and the report printed: what every bench leaves."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(report)
    print(report)
