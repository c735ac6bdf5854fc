"""GET /metrics: the service's numbers in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.metrics import exposition

router = APIRouter(tags=["status"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Requests by route and status, latency per route and per pipeline "
            "stage, faces per image, images rejected by reason, the model's id; all worker "
            "processes added up.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    """The service's numbers for Prometheus to scrape: requests by route, method and status;
    latency per route and per pipeline stage (decode, detect, crop, infer); faces per image;
    images rejected by reason; requests shed; the id of the model served. Needs the API key
    where one is set."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
