"""What routes share: the service's state, its settings, and the pipeline once it is ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.model import EmotionModel
from service.pipeline import EmotionPipeline
from service.settings import Settings

RETRY_AFTER_SECONDS = 5
NOT_READY = "the model is not loaded yet: retry shortly (GET /ready says when)"


@dataclass
class ServiceState:
    """Set up by the app's lifespan; `ready` once the model has answered its warm-up."""

    settings: Settings
    model: EmotionModel | None = None
    pipeline: EmotionPipeline | None = None
    ready: bool = False


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def not_ready() -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=NOT_READY,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def get_pipeline(state: StateDep) -> EmotionPipeline:
    if not state.ready or state.pipeline is None:
        raise not_ready()
    return state.pipeline


PipelineDep = Annotated[EmotionPipeline, Depends(get_pipeline)]


def get_model(state: StateDep) -> EmotionModel:
    if not state.ready or state.model is None:
        raise not_ready()
    return state.model


ModelDep = Annotated[EmotionModel, Depends(get_model)]
