"""The service's Prometheus metrics, and their exposition at GET /metrics.

With several server processes (`WORKERS` > 1) each process writes its samples to memory-mapped
files in `PROMETHEUS_MULTIPROC_DIR` (on the tmpfs), and /metrics, whichever process answers it,
adds up all of them; `python -m service` sets that directory up before it starts the workers.
The directory must be set before `prometheus_client` is first imported, which is why it is an
environment variable and not a setting.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

STAGES = ("decode", "detect", "crop", "infer")
"""The pipeline's stages, as timed by `service.stages.stage`."""

REJECTION_REASONS = (
    "empty",
    "corrupt",
    "too_large",
    "too_many_pixels",
    "not_an_image",
    "unsupported_depth",
    "aspect_ratio",
    "not_a_video",
    "image_as_video",
    "too_long",
    "too_many_frames",
    "text",
    "decoding_busy",
)
"""The reasons `ImageRejected` carries (then videos', a text frame on /stream, and a 503 when the
decoding memory stayed taken); listed so that each series exists from the start."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 1000)

REQUESTS = Counter(
    "emotion_http_requests",
    "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "emotion_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, upload included, by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
IN_PROGRESS = Gauge(
    "emotion_http_requests_in_progress",
    "Requests being answered now, all processes together.",
    multiprocess_mode="livesum",
)
SHED = Counter(
    "emotion_requests_shed",
    "Prediction requests answered 503 at once because the process had no room for them.",
)
UPLOADS_ARRIVING = Gauge(
    "emotion_uploads_arriving",
    "Request bodies being read now (they hold no analysis place yet), all processes together.",
    multiprocess_mode="livesum",
)
UPLOAD_BYTES_ARRIVING = Gauge(
    "emotion_upload_bytes_arriving",
    "Bytes of the request bodies being read now, all processes together.",
    multiprocess_mode="livesum",
)
ANALYSIS_PLACES_TAKEN = Gauge(
    "emotion_analysis_places_taken",
    "Prediction requests whose body has arrived, being analysed or waiting their turn.",
    multiprocess_mode="livesum",
)
UPLOADS_REFUSED = Counter(
    "emotion_uploads_refused",
    "Uploads answered 503 because too many (`count`) or too many bytes (`bytes`) were arriving, "
    "or 507 because the temporary directory was full (`disk_full`).",
    ["reason"],
)
SLOW_UPLOADS = Counter(
    "emotion_slow_uploads_cut",
    "Uploads cut off with 408 for arriving slower than MIN_UPLOAD_BYTES_PER_SECOND.",
)
CONNECTIONS_OPEN = Gauge(
    "emotion_connections_open",
    "HTTP connections open now (WebSockets aside), all processes together.",
    multiprocess_mode="livesum",
)
CONNECTIONS_CLOSED = Counter(
    "emotion_connections_closed",
    "Connections the server closed itself, by reason: `header_timeout`, `header_too_large`, "
    "`evicted` (idle, to make room under MAX_CONNECTIONS), `refused` (no room).",
    ["reason"],
)
STAGE_SECONDS = Histogram(
    "emotion_stage_duration_seconds",
    "Time per pipeline stage: decode and detect per image, crop per image, infer per batch.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
FACES = Histogram(
    "emotion_faces_per_image",
    "Faces found per image (before the MAX_FACES_PER_IMAGE cap).",
    buckets=_FACE_BUCKETS,
)
REJECTED = Counter(
    "emotion_images_rejected",
    "Uploaded images refused, by reason.",
    ["reason"],
)
MODEL = Gauge(
    "emotion_model_info",
    "The model served: 1, labelled with its id (sha256 of the ONNX file).",
    ["model_id"],
    multiprocess_mode="max",
)

for _stage in STAGES:
    STAGE_SECONDS.labels(stage=_stage)
for _reason in REJECTION_REASONS:
    REJECTED.labels(reason=_reason)
for _reason in ("count", "bytes", "disk_full"):
    UPLOADS_REFUSED.labels(reason=_reason)
for _reason in ("header_timeout", "header_too_large", "evicted", "refused"):
    CONNECTIONS_CLOSED.labels(reason=_reason)


def image_rejected(reason: str) -> None:
    REJECTED.labels(reason=reason).inc()


def faces_found(count: int) -> None:
    FACES.observe(count)


def serving_model(model_id: str) -> None:
    MODEL.labels(model_id=model_id).set(1)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type: of this process alone, or
    of every process of the server in multi-process mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def prepare_multiprocess_dir(path: Path) -> None:
    """Create `path`, or empty it of the sample files a previous run left (they would be added
    to this run's numbers). Only `*.db` files are removed: the directory may be shared."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def process_exiting() -> None:
    """Drop this process's live gauges (requests in progress) from the shared numbers."""
    directory = multiprocess_dir()
    if directory:
        multiprocess.mark_process_dead(os.getpid(), directory)
