"""What routes share: the service's state, its settings, and the pipeline once it is ready."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.model import EmotionModel
from service.pipeline import EmotionPipeline
from service.retry import NOT_READY_SECONDS, retry_after
from service.settings import Settings

log = logging.getLogger("service")

NOT_READY = "the model is not loaded yet: retry shortly (GET /ready says when)"


@dataclass
class ServiceState:
    """Set up by the app's lifespan; `ready` once the model has answered its warm-up, and
    `draining` from the shutdown signal on (/ready then answers 503)."""

    settings: Settings
    model: EmotionModel | None = None
    pipeline: EmotionPipeline | None = None
    ready: bool = False
    draining: bool = False

    def drain(self) -> None:
        if not self.draining:
            log.info("shutting down: /ready answers 503; requests in flight finish, no new ones")
        self.draining = True


# The dependencies are coroutines so that FastAPI runs them on the event loop: a plain function
# would go through the thread pool, which a flood of uploads can fill, and /ready must not wait.
async def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def not_ready() -> HTTPException:
    return HTTPException(
        status_code=503,
        detail=NOT_READY,
        headers=retry_after(NOT_READY_SECONDS),
    )


async def get_pipeline(state: StateDep) -> EmotionPipeline:
    if not state.ready or state.pipeline is None:
        raise not_ready()
    return state.pipeline


PipelineDep = Annotated[EmotionPipeline, Depends(get_pipeline)]


async def get_model(state: StateDep) -> EmotionModel:
    if not state.ready or state.model is None:
        raise not_ready()
    return state.model


ModelDep = Annotated[EmotionModel, Depends(get_model)]
