"""Which model the service serves, with what training recorded about it."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from service.deps import ModelDep
from service.model_file import model_file_state
from service.schemas import ContractInfo, EnsembleMemberInfo, ErrorDetail, ModelInfo

router = APIRouter(tags=["status"])


@router.get(
    "/model",
    summary="The model served: labels, input, id, training metrics",
    responses={503: {"model": ErrorDetail, "description": "The model is not loaded yet."}},
)
async def model_info(model: ModelDep) -> ModelInfo:
    """The model being served: its labels in output order, input shape, id (sha256 of the ONNX
    file, the same id every prediction carries), the preprocessing contract, and what training
    recorded in the artifact (metrics, configuration, dataset hash, date, code version), and, for an
    ensemble, its members with their weights and validation accuracy."""
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
        file_on_disk=await anyio.to_thread.run_sync(model_file_state, model.path, model.model_id),
        members=None
        if model.training.members is None
        else [
            EnsembleMemberInfo.model_validate(member, from_attributes=True)
            for member in model.training.members
        ],
    )
