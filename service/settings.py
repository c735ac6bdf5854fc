"""The service's one settings object, read from environment variables (names are case-insensitive).

Every field here is an environment variable of the same name in upper case (`MODEL_PATH`,
`PORT`, ...); the README's configuration table is checked against this class by the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The repository root, or `/app` in the Docker image: both hold `service/` and `artifacts/`."""

DEFAULT_MODEL_PATH = PROJECT_ROOT / "artifacts" / "emotion.onnx"
DEFAULT_FACE_DETECTOR_PATH = PROJECT_ROOT / "artifacts" / "face_detector.onnx"
DEFAULT_YUNET_PATH = PROJECT_ROOT / "artifacts" / "yunet.onnx"

MEGABYTE = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    model_path: Path = Field(
        DEFAULT_MODEL_PATH,
        description="The ONNX model to serve; it must carry the emotion contract in its metadata. "
        "`artifacts/fast/emotion.onnx` is the fast choice: one network, about a quarter of the "
        "default ensemble's time a face, for 1.4 points less accuracy (README).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in Docker).")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and uvicorn."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`: one readable line per event; `json`: one JSON object per line, "
        "for a log collector.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, every endpoint but /health, /ready and the docs needs this value "
        "in the `X-API-Key` header (401 otherwise).",
    )

    max_upload_bytes: int = Field(
        10 * MEGABYTE, ge=1, description="Largest image file accepted, in bytes (413 above)."
    )
    max_batch_bytes: int = Field(
        64 * MEGABYTE,
        ge=1,
        description="Largest whole request body accepted by /predict/batch, in bytes (413 above).",
    )
    max_batch_files: int = Field(
        32, ge=1, le=1000, description="Most files one /predict/batch request may carry."
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Most pixels (width x height) an image may have; checked on the header, "
        "before decoding (413 above).",
    )
    max_decoding_bytes: int = Field(
        384 * MEGABYTE,
        ge=16 * MEGABYTE,
        description="Memory that image and video decodes in flight may hold at once in each "
        "process, estimated from each header (a 150 KB PNG can claim 48 megapixels and need "
        "~450 MB; an open video holds 32 of its frames). An image waits up to 10 s for room, a "
        "video not at all, then 503; at most WORKER_THREADS - 1 decodes over a quarter of it are "
        "under way or waiting at once, so a thread stays free for small photos. One decode "
        "larger than this still runs, alone. Keep it well under the container's memory limit.",
    )
    max_aspect_ratio: float = Field(
        20.0, ge=1.0, description="Longest side over shortest side allowed (422 above)."
    )
    max_faces_per_image: int = Field(
        100,
        ge=1,
        le=1000,
        description="Most faces classified and answered per image, whatever `max_faces` asks: "
        "the largest are kept, and `faces_found` says how many there were.",
    )
    request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest a request may take, upload included: past it the answer is 503 "
        "(408 while the upload is still arriving).",
    )
    min_upload_bytes_per_second: int = Field(
        1024,
        ge=0,
        description="Slowest an upload may arrive, averaged from the request's start once "
        "UPLOAD_RATE_GRACE_SECONDS have passed: a slower one is cut off with 408 (0: no minimum).",
    )
    upload_rate_grace_seconds: float = Field(
        5.0,
        ge=0,
        description="How long an upload may arrive at any pace before MIN_UPLOAD_BYTES_PER_SECOND "
        "applies.",
    )
    max_arriving_uploads: int = Field(
        1024,
        ge=1,
        description="Request bodies each process reads at the same time; past that a new one is "
        "answered 503 with Retry-After at once. Uploads hold no analysis place while they arrive.",
    )
    max_arriving_upload_bytes: int = Field(
        256 * MEGABYTE,
        ge=1,
        description="Bytes of request bodies still arriving that each process holds (in memory, "
        "spooled to the temporary directory over 1 MB a file); past it: 503 with Retry-After.",
    )
    max_connections: int = Field(
        10_000,
        ge=1,
        description="Open connections per process (fewer if its open-files limit is lower); past "
        "it the connection that has waited longest for a request's headers is closed to make room "
        "(a new one is refused when none waits).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest a connection may take to send a request's headers, from when it opens "
        "or its last answer ends; past it the connection is closed.",
    )
    keep_alive_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="How long an idle keep-alive connection stays open after an answer.",
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="Largest request head (request line and headers), in bytes: past it 431 and "
        "the connection is closed.",
    )

    face_detector: Literal["yunet", "blazeface", "haar"] = Field(
        "yunet",
        description="`yunet`: OpenCV Zoo's YuNet CNN, ~1 ms of CPU for a 256-pixel portrait, ~6 "
        "for a 640x480 photo, and the most faces found from 48 pixels up; `blazeface`: "
        "MediaPipe's BlazeFace CNN, ~1.5 and ~8 ms, which finds more faces under 40 pixels; "
        "`haar`: OpenCV's Haar cascade, no model file, over 10x the CPU time.",
    )
    face_detector_path: Path | None = Field(
        None,
        description="The network's ONNX file; unset: the shipped one, `artifacts/yunet.onnx` "
        "(built by `python -m training.yunet`) or `artifacts/face_detector.onnx` (built by "
        "`python -m training.face_detector`); unused with FACE_DETECTOR=haar.",
    )
    detection_max_side: int = Field(
        640,
        ge=64,
        le=4096,
        description="Faces are reported down to MIN_FACE_PIXELS on a copy of the image shrunk to "
        "at most this many pixels on its longest side; boxes are mapped back to the full image. "
        "Haar searches that copy; YuNet sees it whole and, where it is over 1280 pixels, also "
        "in overlapping tiles of 1280 (which bound one run's memory); BlazeFace sees it shrunk "
        "2x (at most 320 pixels, and at 128 beside it) and, over 640 pixels, also in tiles of "
        "640. Raise it for small faces in large photos: at 1920, faces of 64 pixels and up in a "
        "1080p photo are found, for about 14x the detection time (BlazeFace: 7x). At most 4096.",
    )
    min_face_pixels: int = Field(
        24,
        ge=12,
        description="Smallest face side, in pixels of that shrunk copy, that detection reports.",
    )

    cors_origins: str = Field(
        "",
        description="Comma-separated origins that browsers may call the API from "
        "(e.g. https://app.example.com); empty: no CORS headers.",
    )

    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes, each with its own model and threads; with more than "
        "one, /metrics adds up all of them.",
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="onnxruntime threads per inference in each process; 0: the process's share "
        "of the CPUs, max(1, CPUs // WORKERS), for the emotion model and the face detector. "
        "1 gives up ~12 % of one-client latency for ~10 % more photos/s at saturation "
        '(docs/experiments.md, "Serving threads").',
    )
    opencv_threads: int = Field(
        0,
        ge=0,
        description="OpenCV threads (face detection, resizing) in each process; 0: the same "
        "share of the CPUs.",
    )
    max_inference_batch: int = Field(
        512,
        ge=1,
        description="Most face crops per onnxruntime call; a batch with more faces is run in "
        "slices of this size, which bounds the memory one request can take.",
    )
    worker_threads: int = Field(
        4,
        ge=1,
        description="Requests analysed at the same time in each process (decode, detect, "
        "infer); more wait.",
    )
    max_queued_requests: int = Field(
        16,
        ge=0,
        description="Prediction requests each process takes beyond WORKER_THREADS, to wait "
        "their turn; past that it answers 503 with Retry-After at once.",
    )
    shutdown_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, how long requests in flight may take to finish before the "
        "process exits anyway.",
    )

    max_video_bytes: int = Field(
        200 * MEGABYTE, ge=1, description="Largest video file accepted, in bytes (413 above)."
    )
    max_video_pixels: int = Field(
        4096 * 2160,
        ge=1,
        description="Most pixels a video frame may have (DCI 4K; 413 above): a decoder holds up "
        "to ~30 frames at once, so an 8K clip of a few hundred KB could take over a gigabyte.",
    )
    max_video_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest video accepted, in seconds of video, from its header or, when that "
        "lies, while it is decoded (413 above).",
    )
    max_video_frames: int = Field(
        3000,
        ge=1,
        description="Most frames one /predict/video request analyses (its duration times `fps`); "
        "past it 422, which says to ask for a lower `fps`.",
    )
    video_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest a /predict/video request may take, upload included, in place of "
        "REQUEST_TIMEOUT_SECONDS: past it 503, or an NDJSON answer ends with an `error` line.",
    )
    max_streams: int = Field(
        4,
        ge=1,
        description="Live streams (/stream WebSockets) each process serves at once; one more is "
        "closed at once with code 1013 (try again later).",
    )
    stream_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="A live stream that sends no frame for this long is closed (code 1001).",
    )

    @property
    def face_detector_file(self) -> Path:
        """FACE_DETECTOR_PATH, or the shipped file of the network FACE_DETECTOR names."""
        if self.face_detector_path is not None:
            return self.face_detector_path
        return DEFAULT_YUNET_PATH if self.face_detector == "yunet" else DEFAULT_FACE_DETECTOR_PATH

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def api_key_value(self) -> str | None:
        """The key clients must send, or None when the API is open (unset or empty)."""
        if self.api_key is None or not self.api_key.get_secret_value():
            return None
        return self.api_key.get_secret_value()
