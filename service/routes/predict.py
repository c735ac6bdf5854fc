"""Emotions of the faces in uploaded images."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile

from service import metrics
from service.deadline import timed_out_detail, upload_timed_out_detail
from service.deps import NOT_READY, PipelineDep, SettingsDep
from service.images import ImageRejected
from service.retry import retry_headers
from service.schemas import BatchPrediction, DetectMode, ErrorDetail, FileError, Prediction
from service.security import MISSING
from service.shedding import saturated_detail
from service.upload_gate import too_many_uploads_detail
from service.uploads import DISK_FULL, read_upload

router = APIRouter(tags=["emotions"])

FORMATS = "JPEG, PNG, WebP, BMP or TIFF; 8- or 16-bit; grayscale, RGB or RGBA"

DetectQuery = Annotated[
    DetectMode,
    Query(
        description="`auto`: find faces, and when none is found classify the whole image as one "
        "face. `always`: find faces; none found gives an empty list. `never`: the image is "
        "already a face crop (as in FER2013): classify it whole."
    ),
]
MaxFacesQuery = Annotated[
    int,
    Query(
        ge=1,
        le=1000,
        description="Most faces to answer per image, the largest first; the service answers at "
        "most MAX_FACES_PER_IMAGE (default 100) whatever is asked. `faces_found` says how "
        "many there were.",
    ),
]


def error_response(description: str, example: str) -> dict[str, Any]:
    return {
        "model": ErrorDetail,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
    }


UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_response("Empty, truncated or corrupt image.", "the uploaded file is empty"),
    413: error_response(
        "The file is over MAX_UPLOAD_BYTES, or its header claims more than MAX_IMAGE_PIXELS.",
        "the image is 100000x100000 = 10000000000 pixels; the limit is 50000000: "
        "send a smaller image",
    ),
    415: error_response(
        "Not a supported image (SVG, HTML, zip, GIF, PDF...).",
        "the file is not a supported image: send JPEG, PNG, WebP, BMP or TIFF",
    ),
    422: error_response(
        "No `file` field (nor an `image/*` body), a bad query parameter, or an absurd aspect "
        "ratio (over MAX_ASPECT_RATIO).",
        "the image is 4000x100: its aspect ratio 40.0 is over the limit of 20",
    ),
    503: {
        **error_response(
            "The model is not loaded yet, the service is saturated (more requests in progress "
            "than WORKER_THREADS + MAX_QUEUED_REQUESTS, or more uploads arriving than "
            "MAX_ARRIVING_UPLOADS or MAX_ARRIVING_UPLOAD_BYTES allow), or the request ran past "
            "REQUEST_TIMEOUT_SECONDS; retry after `Retry-After` seconds.",
            NOT_READY,
        ),
        "content": {
            "application/json": {
                "examples": {
                    "loading": {"value": {"detail": NOT_READY}},
                    "saturated": {"value": {"detail": saturated_detail(20)}},
                    "uploads": {"value": {"detail": too_many_uploads_detail(1024)}},
                    "timeout": {"value": {"detail": timed_out_detail(30)}},
                }
            }
        },
    },
}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_response(
        "The service has an API_KEY and the `X-API-Key` header does not carry it.", MISSING
    ),
    408: error_response(
        "The upload did not arrive within REQUEST_TIMEOUT_SECONDS, or arrived slower than "
        "MIN_UPLOAD_BYTES_PER_SECOND once UPLOAD_RATE_GRACE_SECONDS had passed.",
        upload_timed_out_detail(30),
    ),
    507: error_response(
        "The service's temporary directory, where files over 1 MB are spooled, is full; "
        "retry after `Retry-After` seconds.",
        DISK_FULL,
    ),
    503: UPLOAD_ERRORS.pop(503),
}
UPLOAD_ERRORS.update(COMMON_ERRORS)


RAW_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}
"""The other way to send the image, beside the multipart form FastAPI documents (`openapi_extra`
of every one-image endpoint)."""


@dataclass(frozen=True)
class AnalysedImage:
    """One uploaded image and what the pipeline found in it."""

    upload: bytes
    prediction: Prediction


async def analyse_one_image(
    request: Request,
    pipeline: PipelineDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile | None,
        File(
            description=f"The image: {FORMATS}. Or send the image itself as the request body, "
            "with `Content-Type: image/jpeg` (another `image/*` type, or "
            "`application/octet-stream`): no multipart to build or parse."
        ),
    ] = None,
    detect: DetectQuery = DetectMode.auto,
    max_faces: MaxFacesQuery = 20,
) -> AnalysedImage:
    """The input of every one-image endpoint, parsed and analysed in one place, so that they take
    the same field, body and parameters and refuse a bad file with the same status and message."""
    if file is None:
        file = await raw_image_body(request)
    upload = await read_upload(file, settings.max_upload_bytes)
    (result,) = await _run(pipeline, [upload], detect, max_faces, settings)
    if isinstance(result, FileError):
        raise HTTPException(result.status, result.detail, headers=retry_headers(result.status))
    assert isinstance(upload, bytes)  # a refused upload gave a FileError above
    return AnalysedImage(upload=upload, prediction=result)


AnalysedImageDep = Annotated[AnalysedImage, Depends(analyse_one_image)]

MULTIPART_SPOOL_BYTES = 1024 * 1024
"""Starlette's own spool size for a multipart file."""

NO_IMAGE = (
    "send the image as a multipart form field named `file`, or as the request body with "
    "`Content-Type: image/jpeg` (or another image/* type, or application/octet-stream)"
)


async def raw_image_body(request: Request) -> UploadFile:
    """An `image/*` request body as the upload it stands for, so that it meets the same checks
    (`read_upload`) and refusals as a multipart `file`. The body arrives through the same size
    limit and deadline as any other (the app's middleware)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not media_type.startswith("image/") and media_type != "application/octet-stream":
        raise HTTPException(status_code=422, detail=NO_IMAGE)
    body = await request.body()
    # Held as Starlette holds a multipart file (in memory below its 1 MB spool size), so that
    # reading it back needs no worker thread.
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115  (the UploadFile owns it; in memory)
        max_size=max(len(body), MULTIPART_SPOOL_BYTES)
    )
    spool.write(body)
    spool.seek(0)
    return UploadFile(spool, size=len(body))


@router.post(
    "/predict",
    summary="Emotions of the faces in one image",
    responses=UPLOAD_ERRORS,
    openapi_extra=RAW_IMAGE_BODY,
)
async def predict(analysed: AnalysedImageDep) -> Prediction:
    """Every face in the image, largest first: where it is, the most probable emotion and the
    probability of each of the seven. EXIF orientation is honoured: boxes, `width` and `height`
    are those of the image as a viewer shows it."""
    return analysed.prediction


@router.post(
    "/predict/batch",
    summary="Emotions of the faces in several images",
    responses={
        400: error_response(
            "The body is not valid multipart form data.",
            "Invalid multipart data.",
        ),
        413: error_response(
            "The whole request is over MAX_BATCH_BYTES.",
            "the request body is over the limit of 67108864 bytes: send a smaller file",
        ),
        422: error_response(
            "No `files` field, more files than MAX_BATCH_FILES, or a bad query parameter.",
            "send at most 32 files per batch (MAX_BATCH_FILES)",
        ),
        **COMMON_ERRORS,
    },
)
async def predict_batch(
    files: Annotated[
        list[UploadFile],
        File(description=f"The images, 1 to MAX_BATCH_FILES (default 32): {FORMATS}."),
    ],
    pipeline: PipelineDep,
    settings: SettingsDep,
    detect: DetectQuery = DetectMode.auto,
    max_faces: MaxFacesQuery = 20,
) -> BatchPrediction:
    """One result per file, in upload order: the answer `/predict` would give, or, for a file
    that cannot be used, its `detail` and `status`; a bad file spoils nothing else. The faces of
    all the images go through one batched inference."""
    if len(files) > settings.max_batch_files:
        raise HTTPException(
            status_code=422,
            detail=f"send at most {settings.max_batch_files} files per batch (MAX_BATCH_FILES); "
            f"this request has {len(files)}",
        )
    uploads = [await read_upload(file, settings.max_upload_bytes) for file in files]
    return BatchPrediction(results=await _run(pipeline, uploads, detect, max_faces, settings))


async def _run(
    pipeline: PipelineDep,
    uploads: list[bytes | ImageRejected],
    detect: DetectMode,
    max_faces: int,
    settings: SettingsDep,
) -> list[Prediction | FileError]:
    """The pipeline, with `max_faces` capped by MAX_FACES_PER_IMAGE; faces counted for
    /metrics."""
    results = await pipeline.run(uploads, detect, min(max_faces, settings.max_faces_per_image))
    for result in results:
        if isinstance(result, Prediction):
            metrics.faces_found(result.faces_found)
    return results
