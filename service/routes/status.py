"""Is the service up, ready, and which model does it serve."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import RETRY_AFTER_SECONDS, ModelDep, StateDep
from service.schemas import ContractInfo, ErrorDetail, Health, ModelInfo, Readiness

router = APIRouter(tags=["status"])


@router.get("/health", summary="The process answers")
def health() -> Health:
    """Liveness: 200 as soon as the process serves HTTP, whether or not the model is loaded."""
    return Health()


@router.get(
    "/ready",
    summary="The model is loaded and warm",
    responses={
        503: {
            "model": Readiness,
            "description": "Still loading.",
            "content": {"application/json": {"example": {"status": "loading", "model": None}}},
        }
    },
)
def ready(state: StateDep, response: Response) -> Readiness:
    """Readiness: 200 once the model is loaded and has answered a warm-up inference, 503 before
    (and again while shutting down). Send traffic only when this says 200."""
    if state.ready and state.model is not None:
        return Readiness(status="ready", model=state.model.model_id)
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return Readiness(status="loading", model=None)


@router.get(
    "/model",
    summary="The model served: labels, input, id, training metrics",
    responses={503: {"model": ErrorDetail, "description": "The model is not loaded yet."}},
)
def model_info(model: ModelDep) -> ModelInfo:
    """The model being served: its labels in output order, input shape, id (sha256 of the ONNX
    file, the same id every prediction carries), the preprocessing contract, and what training
    recorded in the artifact (metrics, configuration, dataset hash, date, code version)."""
    contract = model.contract
    return ModelInfo(
        id=model.model_id,
        labels=list(contract.labels),
        input_shape=list(contract.input_shape),
        contract=ContractInfo(
            input_size=contract.input_size,
            pixel_scale=contract.pixel_scale,
            crop_margin=contract.crop_margin,
            version=contract.version,
        ),
        metrics=model.training.metrics,
        training_config=model.training.config,
        dataset_sha256=model.training.dataset_sha256,
        created=model.training.created,
        code_version=model.training.code_version,
    )
