"""Is the process up, and is it ready for traffic: the probes, open even where an API key is set.

Both are coroutines that touch nothing but memory, so they answer on the event loop however
busy the worker threads and the thread pool are.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import StateDep
from service.retry import NOT_READY_SECONDS, retry_after
from service.schemas import Health, Readiness

router = APIRouter(tags=["status"])


@router.get("/health", summary="The process answers")
async def health() -> Health:
    """Liveness: 200 as soon as the process serves HTTP, whether or not the model is loaded,
    and however saturated the service is."""
    return Health()


@router.get(
    "/ready",
    summary="The model is loaded and warm, and the process is not shutting down",
    responses={
        503: {
            "model": Readiness,
            "description": "Still loading, or shutting down.",
            "content": {"application/json": {"example": {"status": "loading", "model": None}}},
        }
    },
)
async def ready(state: StateDep, response: Response) -> Readiness:
    """Readiness: 200 once the model is loaded and has answered a warm-up inference; 503 before,
    and from the shutdown signal on (requests in flight still finish). Send traffic only when
    this says 200."""
    if state.draining:
        status = "stopping"
    elif state.ready and state.model is not None:
        return Readiness(status="ready", model=state.model.model_id)
    else:
        status = "loading"
    response.status_code = 503
    response.headers.update(retry_after(NOT_READY_SECONDS))
    return Readiness(status=status, model=None)
