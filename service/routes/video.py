"""Emotions over time in an uploaded video: one answer per analysed frame, faces followed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, NoReturn

import mimeparse
from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from service import metrics
from service.deadline import time_left
from service.deps import PipelineDep, SettingsDep
from service.images import ImageRejected
from service.pipeline import EmotionPipeline
from service.retry import retry_after, retry_headers
from service.routes.predict import COMMON_ERRORS, MaxFacesQuery, error_response
from service.schemas import DetectMode
from service.settings import Settings
from service.uploads import spooled_upload
from service.video.analysis import FaceFollower, analyse_frames
from service.video.decode import FORMATS, SampledFrame, VideoLimits, VideoReader
from service.video.encode import CSV, JSON, NDJSON, csv_header, csv_rows, csv_text, ndjson_line
from service.video.schemas import AnalysedFrame, VideoError, VideoPrediction, VideoSummary

log = logging.getLogger("service")

router = APIRouter(tags=["video"])

DEADLINE_MARGIN_SECONDS = 2.0

PATH = "/predict/video"
MEDIA_TYPES = (CSV, NDJSON, JSON)
"""Offered in this order: on a tie (`*/*`, no Accept) mimeparse prefers the last, JSON."""

VIDEO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (the default): every analysed frame, then the track summary. "
        "`Accept: application/x-ndjson`: one line per analysed frame as it is computed, then one "
        "line with the summary (the fields of the JSON answer but `frames`), or an `error` line "
        "when the video turns out to break a limit part way. `Accept: text/csv`: one row per face "
        "per analysed frame.",
        "content": {
            NDJSON: {"schema": {"type": "string"}},
            CSV: {"schema": {"type": "string"}},
        },
    },
    400: error_response(
        "Empty, or not readable as the container its first bytes announce (truncated MP4 or MOV "
        "whose index comes last, corrupt).",
        "the uploaded file is empty",
    ),
    406: error_response(
        "The Accept header allows none of JSON, NDJSON and CSV.",
        "this endpoint answers application/json, application/x-ndjson or text/csv",
    ),
    413: error_response(
        "The file is over MAX_VIDEO_BYTES, the video is longer than MAX_VIDEO_SECONDS, or its "
        "frames have more than MAX_IMAGE_PIXELS.",
        "the video is 1200.0 s long; the limit is 600 s (MAX_VIDEO_SECONDS): send a shorter clip",
    ),
    415: error_response(
        f"Not a video in a supported container ({FORMATS}), an image, or a playlist.",
        f"the file is not a supported video: send {FORMATS}",
    ),
    422: error_response(
        "A missing `file` field, a bad query parameter, or more frames to analyse than "
        "MAX_VIDEO_FRAMES.",
        "at fps=30 this video gives 18001 frames to analyse; the limit is 3000 "
        "(MAX_VIDEO_FRAMES): ask for a lower fps or send a shorter clip",
    ),
    **COMMON_ERRORS,
}


def _media_type(request: Request) -> str:
    accept = ", ".join(request.headers.getlist("accept")).strip() or "*/*"
    try:
        chosen = mimeparse.best_match(list(MEDIA_TYPES), accept)
    except mimeparse.MimeTypeParseException as error:
        raise HTTPException(
            400, f"the Accept header cannot be parsed ({error}): send e.g. 'Accept: {NDJSON}'"
        ) from error
    if not chosen:
        raise HTTPException(
            406,
            f"this endpoint answers {JSON}, {NDJSON} or {CSV}; the Accept header ({accept}) "
            "allows none of them",
        )
    return chosen


@router.post(PATH, summary="Emotions over time in a video", responses=VIDEO_RESPONSES)
async def predict_video(
    request: Request,
    file: Annotated[UploadFile, File(description=f"The video: {FORMATS}.")],
    pipeline: PipelineDep,
    settings: SettingsDep,
    fps: Annotated[
        float,
        Query(
            gt=0,
            le=240,
            description="Frames analysed per second of video; at or above the video's own rate, "
            "every frame. Duration x fps may not exceed MAX_VIDEO_FRAMES.",
        ),
    ] = 5.0,
    detect: Annotated[
        DetectMode,
        Query(
            description="`always` (the default here): find faces; a frame without any has none. "
            "`auto`: a frame without faces is classified whole, as one face. `never`: the "
            "video is already a face crop: every frame is classified whole (one track)."
        ),
    ] = DetectMode.always,
    max_faces: MaxFacesQuery = 20,
    smoothing: Annotated[
        float,
        Query(
            ge=0,
            le=60,
            description="Time constant, in seconds, of the exponential average of each track's "
            "probabilities (a frame this old counts 37 %); 0: the raw probabilities. Tracks are "
            "never averaged with each other.",
        ),
    ] = 0.5,
) -> VideoPrediction:
    """Every analysed frame's faces, each with the `track` it belongs to (the same integer while
    the same face stays in view) and its probabilities smoothed over that track, then per track
    when it was seen and its mean probabilities. The file is decoded as it is read from where
    the server spooled it: memory does not grow with the video's length, and with NDJSON or CSV
    neither does the answer's. A file cut short is answered with the frames that decode and
    `truncated: true`. Containers are recognised by their first bytes; playlists (HLS, concat)
    and anything else that would make the decoder open other files or URLs are refused."""
    media_type = _media_type(request)
    refused = spooled_upload(file, settings.max_video_bytes)
    if refused is not None:
        _refuse(refused)
    max_faces = min(max_faces, settings.max_faces_per_image)
    try:
        reader = await pipeline.in_worker(_open, file, settings, fps, pipeline, detect)
    except ImageRejected as rejected:
        _refuse(rejected)
    video = _Analysis(pipeline, reader, detect, max_faces, smoothing)
    if media_type == JSON:
        try:
            return await video.whole()
        finally:
            reader.close()
    body = video.ndjson() if media_type == NDJSON else video.csv()
    return StreamingResponse(body, media_type=media_type)  # type: ignore[return-value]


def _check_time() -> None:
    """503 while there is still time to say so: the request's deadline (VIDEO_TIMEOUT_SECONDS)
    would otherwise cut a streamed answer without a word. A margin of a quarter of the limit, at
    most 2 s, is far more than the few frames of one step take."""
    left = time_left()
    if left is None:
        return
    seconds, limit = left
    if seconds < min(DEADLINE_MARGIN_SECONDS, 0.25 * limit):
        raise HTTPException(
            503,
            f"the video took longer to analyse than the limit of {limit:g} s "
            "(VIDEO_TIMEOUT_SECONDS): ask for a lower fps, or send a shorter clip",
            headers=retry_after(),
        )


def _refuse(rejected: ImageRejected) -> NoReturn:
    metrics.image_rejected(rejected.reason)
    raise HTTPException(
        rejected.status_code, rejected.detail, headers=retry_headers(rejected.status_code)
    ) from rejected


def _open(
    file: UploadFile, settings: Settings, fps: float, pipeline: EmotionPipeline, detect: DetectMode
) -> VideoReader:
    limits = VideoLimits(
        max_seconds=settings.max_video_seconds,
        max_frames=settings.max_video_frames,
        max_pixels=settings.max_video_pixels,
        memory=pipeline.limits.memory,
    )
    return VideoReader(file.file, limits, fps=fps, max_side=pipeline.decode_side(detect))


class _Analysis:
    """One request's video, analysed a few frames per worker-thread step."""

    def __init__(
        self,
        pipeline: EmotionPipeline,
        reader: VideoReader,
        detect: DetectMode,
        max_faces: int,
        smoothing: float,
    ) -> None:
        self.pipeline, self.reader, self.detect, self.max_faces = (
            pipeline,
            reader,
            detect,
            max_faces,
        )
        self.follower = FaceFollower(pipeline.model.labels, smoothing)
        self.frames: Iterator[SampledFrame] = reader.frames()
        self.last_time = 0.0

    async def steps(self) -> AsyncIterator[list[AnalysedFrame]]:
        size = (self.reader.info.width, self.reader.info.height)
        while True:
            _check_time()
            analysed = await self.pipeline.in_worker(
                analyse_frames,
                self.pipeline,
                self.follower,
                self.frames,
                size,
                self.detect,
                self.max_faces,
            )
            if not analysed:
                return
            self.last_time = analysed[-1].time
            yield analysed

    def summary(self) -> VideoSummary:
        info = self.reader.info
        return VideoSummary(
            tracks=self.follower.summary(),
            duration=round(info.duration if info.duration is not None else self.last_time, 4),
            width=info.width,
            height=info.height,
            fps=min(self.reader.fps, info.rate) if info.rate else self.reader.fps,
            frames_analysed=self.reader.analysed,
            truncated=self.reader.truncated,
            model=self.pipeline.model.model_id,
        )

    async def whole(self) -> VideoPrediction:
        frames: list[AnalysedFrame] = []
        try:
            async for analysed in self.steps():
                frames.extend(analysed)
        except ImageRejected as rejected:
            _refuse(rejected)
        if not frames and self.reader.truncated:
            _refuse(
                ImageRejected(
                    400,
                    "no frame of the video could be decoded: it is truncated or corrupt",
                    reason="corrupt",
                )
            )
        return VideoPrediction(**self.summary().model_dump(), frames=frames)

    async def ndjson(self) -> AsyncIterator[bytes]:
        try:
            async for analysed in self.steps():
                for frame in analysed:
                    yield ndjson_line(frame)
            yield ndjson_line(self.summary())
        except ImageRejected as rejected:
            metrics.image_rejected(rejected.reason)
            yield ndjson_line(VideoError(error=rejected.detail, status=rejected.status_code))
        except HTTPException as error:  # out of time (VIDEO_TIMEOUT_SECONDS)
            yield ndjson_line(VideoError(error=str(error.detail), status=error.status_code))
        finally:
            self.reader.close()

    async def csv(self) -> AsyncIterator[bytes]:
        labels = self.pipeline.model.labels
        try:
            yield csv_text([csv_header(labels)])
            async for analysed in self.steps():
                yield csv_text(row for frame in analysed for row in csv_rows(frame, labels))
        except ImageRejected as rejected:
            # A CSV has no place for an error: the rows stop, and the log says why.
            metrics.image_rejected(rejected.reason)
            log.info("video CSV answer stopped: %s", rejected.detail)
        except HTTPException as error:
            log.info("video CSV answer stopped: %s", error.detail)
        finally:
            self.reader.close()
