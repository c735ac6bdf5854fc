"""The FastAPI app: lifespan (load the model, warm it up), routes, limits and error handlers.

`service.app:app` is built from the environment's settings; `create_app` builds one from given
settings (and, optionally, a model already loaded by `python -m service`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import cv2
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.provenance import machine_description
from service import metrics
from service.access import AccessLog
from service.allocator import return_large_buffers_to_the_system
from service.blazeface import BlazeFaceDetector
from service.cpus import ThreadBudget
from service.deadline import RequestDeadline
from service.deps import ServiceState
from service.faces import FaceDetector
from service.haar import HaarDetector
from service.images import ImageLimits
from service.memory_budget import MemoryBudget
from service.model import EmotionModel
from service.pages_policy import PagesPolicy
from service.pipeline import EmotionPipeline
from service.routes import annotated, page, predict, status, stream, video
from service.routes import metrics as metrics_route
from service.routes import model as model_route
from service.security import ApiKeyGate, require_api_key
from service.settings import Settings
from service.shedding import LoadShedding
from service.shutdown import drain_on_signals
from service.upload_gate import UploadGate
from service.uploads import (
    MULTIPART_OVERHEAD,
    BodySizeLimit,
    answer_disk_full,
    answer_http_error,
)
from service.yunet import YuNetDetector

log = logging.getLogger("service")

DESCRIPTION = """
Upload an image; for every face in it, get where the face is and how likely each of seven
emotions is (angry, disgust, fear, happy, neutral, sad, surprise).

Faces are found with OpenCV Zoo's YuNet, cut out as 48x48 grayscale crops the way the model
was trained (the model file carries that contract), and classified by an ensemble of CNNs
trained on FER2013, both run with onnxruntime.

Every client mistake is answered with a 4xx status and a JSON body `{"detail": ...}`.
"""


DECODING_WAIT_SECONDS = 10.0
"""How long a decode waits for room in MAX_DECODING_BYTES before its image is answered 503: long
enough for the decodes ahead of it (a 48-megapixel PNG takes under a second), well within
REQUEST_TIMEOUT_SECONDS."""
PREDICT_PATHS = ("/predict", "/predict/batch", "/predict/annotated", video.PATH)
DOCS_URL = "/docs"
REDOC_URL = "/redoc"


def create_app(
    settings: Settings | None = None,
    model: EmotionModel | None = None,
    detector: FaceDetector | None = None,
) -> FastAPI:
    """The app; `model` and `detector`, when given (`python -m service` checked them before
    starting), are served instead of loading what the settings name. Also uvicorn's factory
    (`service.app:create_app`) for the worker processes of WORKERS > 1."""
    settings = settings or Settings()
    state = ServiceState(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with drain_on_signals(state.drain):
            await anyio.to_thread.run_sync(_start, state, model, detector)
            yield
        state.ready = False
        metrics.process_exiting()

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc served from the installed
    # fastapi-offline package instead of a CDN, so they work on a machine without internet.
    app = FastAPIOffline(
        docs_url=DOCS_URL,
        redoc_url=REDOC_URL,
        title="Facial emotion recognition",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # No "valid" badge fetched from validator.swagger.io (which would also be sent the
        # address of this service's OpenAPI document): nothing leaves the host.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.service = state
    protected = [Depends(require_api_key)] if settings.api_key_value else []
    app.include_router(predict.router, dependencies=protected)
    app.include_router(annotated.router, dependencies=protected)
    app.include_router(video.router, dependencies=protected)
    app.include_router(stream.router)  # the key is checked inside: browsers send it as a message
    app.include_router(status.router)
    app.include_router(model_route.router, dependencies=protected)
    app.include_router(metrics_route.router, dependencies=protected)
    app.include_router(page.router)
    app.mount(page.STATIC_PATH, StaticFiles(directory=page.STATIC_DIR), name="static")
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(StarletteHTTPException, answer_http_error)
    app.add_exception_handler(OSError, answer_disk_full)

    routers = (
        predict.router,
        annotated.router,
        video.router,
        stream.router,
        status.router,
        model_route.router,
        metrics_route.router,
        page.router,
    )
    served = {route.path for router in routers for route in router.routes}
    served |= {DOCS_URL, app.swagger_ui_oauth2_redirect_url, REDOC_URL, "/openapi.json"}
    _add_middleware(app, settings, served)
    return app


def _add_middleware(app: FastAPI, settings: Settings, served: set[str]) -> None:
    """Outermost last: the access log sees every answer; CORS answers preflights before the key
    is asked for; the key is checked before anything is read; the deadline covers the upload;
    a body announced too large is refused before it counts as arriving; an arriving body is
    paced and bounded, and takes a place for analysis only once it is in."""
    app.add_middleware(
        PagesPolicy, docs_paths=(DOCS_URL, REDOC_URL, app.swagger_ui_oauth2_redirect_url)
    )
    app.add_middleware(
        LoadShedding,
        capacity=settings.worker_threads + settings.max_queued_requests,
        paths=PREDICT_PATHS,
    )
    app.add_middleware(
        UploadGate,
        max_uploads=settings.max_arriving_uploads,
        max_bytes=settings.max_arriving_upload_bytes,
        min_rate=settings.min_upload_bytes_per_second,
        grace_seconds=settings.upload_rate_grace_seconds,
    )
    app.add_middleware(
        BodySizeLimit,
        limits={
            "/predict": settings.max_upload_bytes + MULTIPART_OVERHEAD,
            "/predict/annotated": settings.max_upload_bytes + MULTIPART_OVERHEAD,
            "/predict/batch": settings.max_batch_bytes,
            video.PATH: settings.max_video_bytes + MULTIPART_OVERHEAD,
        },
    )
    app.add_middleware(
        RequestDeadline,
        seconds=settings.request_timeout_seconds,
        per_path={video.PATH: settings.video_timeout_seconds},
    )
    if settings.api_key_value:
        app.add_middleware(ApiKeyGate, key=settings.api_key_value)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(AccessLog, routes=served)


def thread_budget(settings: Settings) -> ThreadBudget:
    return ThreadBudget.for_process(
        workers=settings.workers,
        intra_op_threads=settings.intra_op_threads,
        opencv_threads=settings.opencv_threads,
    )


def load_model(settings: Settings) -> EmotionModel:
    """The model the settings name, checked and warmed up; `ModelError` says why not."""
    return EmotionModel.load(
        settings.model_path,
        intra_op_threads=thread_budget(settings).onnxruntime,
        max_batch=settings.max_inference_batch,
    )


def load_detector(settings: Settings) -> FaceDetector:
    """The face detector FACE_DETECTOR names; `DetectorError` says why a network's file cannot
    be used. Its onnxruntime session gets the same thread budget as the emotion model: one
    client's photo gets faster, at the price of a few photos/s under saturation, where requests
    already run side by side (docs/experiments.md, "Serving threads"; INTRA_OP_THREADS=1 buys
    that back)."""
    if settings.face_detector == "haar":
        return HaarDetector(
            max_side=settings.detection_max_side, min_face_pixels=settings.min_face_pixels
        )
    network = YuNetDetector if settings.face_detector == "yunet" else BlazeFaceDetector
    threads = thread_budget(settings).onnxruntime
    return network(
        settings.face_detector_file,
        max_side=settings.detection_max_side,
        min_face_pixels=settings.min_face_pixels,
        intra_op_threads=threads,
        concurrent_runs=threads,
    )


def _start(state: ServiceState, model: EmotionModel | None, detector: FaceDetector | None) -> None:
    """Size the thread pools, load (unless given) and warm up the model, load (unless given) the
    detector, build the pipeline and warm it up at full concurrency, then declare ready."""
    settings = state.settings
    return_large_buffers_to_the_system()
    budget = thread_budget(settings)
    cv2.setNumThreads(budget.opencv)
    if model is None:
        model = load_model(settings)
    if detector is None:
        detector = load_detector(settings)
    limits = ImageLimits(
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_aspect_ratio=settings.max_aspect_ratio,
        memory=MemoryBudget(
            settings.max_decoding_bytes,
            DECODING_WAIT_SECONDS,
            max_large=max(1, settings.worker_threads - 1),
        ),
    )
    state.model = model
    state.pipeline = EmotionPipeline(model, detector, limits, settings.worker_threads)
    state.pipeline.warm_up()
    metrics.serving_model(model.model_id)
    state.ready = True
    contract = model.contract
    log.info(
        "process %d serving model %s from %s (crop margin %g, pixel scale %g), faces found by "
        "%s, with %d onnxruntime and %d OpenCV threads, %d requests at a time and %d waiting, "
        "on %s",
        os.getpid(),
        model.model_id[:12],
        model.path,
        contract.crop_margin,
        contract.pixel_scale,
        settings.face_detector,
        budget.onnxruntime,
        budget.opencv,
        settings.worker_threads,
        settings.max_queued_requests,
        machine_description(),  # its features set the int8 model's speed (see the model card)
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """A bug of ours, not the client's: a JSON 500. Starlette re-raises the error after this
    answer, so the server logs its traceback once."""
    log.error("unexpected %s on %s %s", type(error).__name__, request.method, request.url.path)
    return JSONResponse(
        {"detail": "internal error: the service logged it; please report it"}, status_code=500
    )


def __getattr__(name: str) -> FastAPI:
    """`service.app:app` (for `uvicorn service.app:app`), built from the environment on first use,
    so that importing this module never reads the settings."""
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
