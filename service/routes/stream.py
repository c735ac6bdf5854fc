"""The live stream: a WebSocket that takes camera frames and answers each it analyses.

The client sends frames as binary messages (JPEG or PNG bytes, as it would POST to /predict) and
gets one JSON answer (`StreamFrame`) per frame analysed: its faces with track ids and smoothed
probabilities. Reading and analysing run side by side: while a frame is analysed, newer ones
replace each other in a single slot, so when the client sends faster than the service analyses,
the stale ones are dropped, the newest is served next, and the answer says how many were
dropped. Nothing queues: one frame in analysis and one waiting is all a stream holds.

Closing codes: 1008 without the API key (where the service has one; browsers, which cannot set
headers on a WebSocket, send `{"api_key": ...}` as the first message instead), 1013 when
MAX_STREAMS are already open or the model is not loaded yet, 1001 after STREAM_IDLE_SECONDS
without a frame.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from service.deps import ServiceState
from service.images import ImageRejected
from service.pipeline import EmotionPipeline
from service.routes.predict import MaxFacesQuery
from service.schemas import DetectMode, FileError
from service.security import MISSING, key_problem
from service.settings import Settings
from service.video.analysis import FaceFollower
from service.video.schemas import StreamFrame

log = logging.getLogger("service")

router = APIRouter(tags=["video"])

PATH = "/stream"
POLICY_VIOLATION, TRY_AGAIN_LATER, GOING_AWAY = 1008, 1013, 1001


@dataclass
class _Waiting:
    """The newest frame not yet analysed."""

    number: int
    arrived: float
    data: bytes | ImageRejected


class _Slot:
    """One frame waiting at most: a newer one replaces it and counts as a drop."""

    def __init__(self) -> None:
        self.waiting: _Waiting | None = None
        self.dropped = 0
        self._ready = anyio.Event()

    def put(self, frame: _Waiting) -> None:
        if self.waiting is not None:
            self.dropped += 1
        self.waiting = frame
        self._ready.set()

    async def take(self) -> tuple[_Waiting, int]:
        await self._ready.wait()
        self._ready = anyio.Event()
        frame, dropped = self.waiting, self.dropped
        assert frame is not None
        self.waiting, self.dropped = None, 0
        return frame, dropped


@router.websocket(PATH)
async def live_stream(
    websocket: WebSocket,
    detect: Annotated[DetectMode, Query()] = DetectMode.always,
    max_faces: MaxFacesQuery = 20,
    smoothing: Annotated[float, Query(ge=0, le=60)] = 0.5,
) -> None:
    state: ServiceState = websocket.app.state.service
    settings = state.settings
    await websocket.accept()
    if not await _authorised(websocket, settings):
        return
    pipeline = state.pipeline
    if not state.ready or pipeline is None:
        await websocket.close(TRY_AGAIN_LATER, "the model is not loaded yet: retry shortly")
        return
    open_streams = getattr(websocket.app.state, "live_streams", 0)
    if open_streams >= settings.max_streams:
        await websocket.close(
            TRY_AGAIN_LATER,
            f"{open_streams} live streams are open, the most this process serves "
            "(MAX_STREAMS): try again later",
        )
        return
    websocket.app.state.live_streams = open_streams + 1
    try:
        stream = _Stream(websocket, pipeline, settings, detect, max_faces, smoothing)
        await stream.run()
    finally:
        websocket.app.state.live_streams -= 1


async def _authorised(websocket: WebSocket, settings: Settings) -> bool:
    """The API key from the `X-API-Key` header, or else from a first text message
    `{"api_key": "..."}`; the stream is closed with 1008 and the reason when it does not fit."""
    expected = settings.api_key_value
    if expected is None:
        return True
    given = websocket.headers.get("x-api-key")
    if not given:
        with anyio.move_on_after(settings.stream_idle_seconds):
            message = await websocket.receive()
            given = _key_in(message.get("text"))
    problem = key_problem(given, expected) if given else MISSING
    if problem is not None:
        if websocket.client_state is WebSocketState.CONNECTED:
            await websocket.close(POLICY_VIOLATION, problem)
        return False
    return True


def _key_in(text: str | None) -> str | None:
    try:
        key = json.loads(text or "").get("api_key")
    except (ValueError, AttributeError):
        return None
    return key if isinstance(key, str) else None


class _Stream:
    def __init__(
        self,
        websocket: WebSocket,
        pipeline: EmotionPipeline,
        settings: Settings,
        detect: DetectMode,
        max_faces: int,
        smoothing: float,
    ) -> None:
        self.websocket, self.pipeline, self.settings = websocket, pipeline, settings
        self.detect, self.max_faces = detect, min(max_faces, settings.max_faces_per_image)
        self.follower = FaceFollower(pipeline.model.labels, smoothing)
        self.slot = _Slot()
        self.started = time.monotonic()

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._answer_loop)
            await self._receive_loop()
            group.cancel_scope.cancel()

    async def _receive_loop(self) -> None:
        received = 0
        while True:
            message = None
            with anyio.move_on_after(self.settings.stream_idle_seconds):
                message = await self.websocket.receive()
            if message is None:
                await self.websocket.close(
                    GOING_AWAY,
                    f"no frame for {self.settings.stream_idle_seconds:g} s (STREAM_IDLE_SECONDS)",
                )
                return
            if message["type"] == "websocket.disconnect":
                return
            if _key_in(message.get("text")) is not None:
                continue  # a page sends its key whether the service needs one or not
            received += 1
            arrived = time.monotonic() - self.started
            self.slot.put(_Waiting(received, arrived, self._frame_bytes(message)))

    def _frame_bytes(self, message: dict) -> bytes | ImageRejected:
        data = message.get("bytes")
        if data is None:
            return ImageRejected(
                415, "send each frame as a binary message of JPEG or PNG bytes", reason="text"
            )
        if len(data) > self.settings.max_upload_bytes:
            return ImageRejected(
                413,
                f"the frame is {len(data)} bytes; the limit is {self.settings.max_upload_bytes} "
                "(MAX_UPLOAD_BYTES)",
            )
        return data

    async def _answer_loop(self) -> None:
        try:
            while True:
                frame, dropped = await self.slot.take()
                (result,) = await self.pipeline.run([frame.data], self.detect, self.max_faces)
                if isinstance(result, FileError):
                    answer = {
                        "frame": frame.number,
                        "dropped": dropped,
                        "error": result.detail,
                        "status": result.status,
                    }
                    await self.websocket.send_json(answer)
                    continue
                faces = self.follower.follow(frame.arrived, result)
                answer_model = StreamFrame(
                    frame=frame.number,
                    dropped=dropped,
                    time=round(frame.arrived, 4),
                    width=result.width,
                    height=result.height,
                    faces=faces,
                )
                await self.websocket.send_text(answer_model.model_dump_json())
        except (WebSocketDisconnect, RuntimeError) as error:
            # The client went away while an answer was on its way: nothing left to do.
            log.debug("live stream ended while answering: %s", error)
