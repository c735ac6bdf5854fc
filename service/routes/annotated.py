"""The answer for people: the uploaded image with a box and a label drawn on every face."""

from __future__ import annotations

from typing import Annotated, Any

import mimeparse
from fastapi import APIRouter, Depends, HTTPException, Request, Response

from service.annotate import JPEG, PNG, MediaType, annotated_image
from service.deps import PipelineDep
from service.images import ImageRejected
from service.retry import retry_headers
from service.routes.predict import (
    RAW_IMAGE_BODY,
    UPLOAD_ERRORS,
    AnalysedImageDep,
    error_response,
)

router = APIRouter(tags=["emotions"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def negotiated_media_type(request: Request) -> MediaType:
    """PNG or JPEG, whichever the `Accept` header prefers; PNG (lossless) when it has no
    preference or is absent. Checked before the image is analysed: a client that cannot use the
    answer is told so (406) without spending the work."""
    accept = ", ".join(request.headers.getlist("accept")).strip() or "*/*"
    try:
        # On a tie best_match prefers the later entry: PNG.
        chosen = mimeparse.best_match([JPEG, PNG], accept)
    except mimeparse.MimeTypeParseException as error:
        raise HTTPException(
            status_code=400,
            detail=f"the Accept header cannot be parsed ({error}): send e.g. "
            f"'Accept: {PNG}' or 'Accept: {JPEG}'",
        ) from error
    if not chosen:
        raise HTTPException(
            status_code=406,
            detail=f"this endpoint answers {PNG} or {JPEG}, and the Accept header ({accept}) "
            "allows neither; POST /predict answers the same analysis as JSON",
        )
    return chosen  # type: ignore[return-value]  # one of the two offered


MediaTypeDep = Annotated[MediaType, Depends(negotiated_media_type)]

ANNOTATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image, upright and at its own size, with a box and an "
        "`emotion NN%` label on every face. PNG unless `Accept` prefers JPEG.",
        "content": {PNG: _BINARY, JPEG: _BINARY},
    },
    **UPLOAD_ERRORS,
    400: error_response(
        "Empty, truncated or corrupt image, or an `Accept` header that cannot be parsed.",
        "the uploaded file is empty",
    ),
    406: error_response(
        "The `Accept` header allows neither image/png nor image/jpeg.",
        "this endpoint answers image/png or image/jpeg, and the Accept header "
        "(application/json) allows neither; POST /predict answers the same analysis as JSON",
    ),
}


@router.post(
    "/predict/annotated",
    summary="The image with the faces boxed and labelled",
    response_class=Response,
    responses=ANNOTATED_RESPONSES,
    openapi_extra=RAW_IMAGE_BODY,
)
async def predict_annotated(
    media_type: MediaTypeDep, analysed: AnalysedImageDep, pipeline: PipelineDep
) -> Response:
    """What `/predict` finds, drawn on the image: a box and a label (`happy 95%`) on every face,
    in one colour per emotion. Same field and parameters as `/predict`; bad input gets the same
    JSON errors. `Accept: image/jpeg` gets a JPEG (smaller, lossy), anything else a PNG."""
    try:
        content = await pipeline.in_worker(
            annotated_image,
            analysed.upload,
            analysed.prediction.faces,
            pipeline.limits,
            media_type,
        )
    except ImageRejected as rejected:
        raise HTTPException(
            rejected.status_code, rejected.detail, headers=retry_headers(rejected.status_code)
        ) from None
    extension = "png" if media_type == PNG else "jpg"
    return Response(
        content,
        media_type=media_type,
        headers={
            "Vary": "Accept",
            "Content-Disposition": f'inline; filename="annotated.{extension}"',
        },
    )
