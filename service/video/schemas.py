"""The video answers, as pydantic models: they are the OpenAPI docs of /predict/video and of the
live stream's messages."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.schemas import Box, Emotion, EmotionProbabilities


class TrackedFace(BaseModel):
    track: int = Field(
        ge=1,
        description="The face's track: the same integer while the same face stays in view "
        "(a face away for more than a second comes back as a new track).",
        examples=[1],
    )
    box: Box
    emotion: Emotion = Field(description="The most probable emotion, after smoothing.")
    confidence: float = Field(ge=0.0, le=1.0, description="The smoothed probability of `emotion`.")
    probabilities: EmotionProbabilities = Field(
        description="This track's probabilities, smoothed over time (`smoothing`); raw with "
        "`smoothing=0`."
    )


class AnalysedFrame(BaseModel):
    time: float = Field(ge=0.0, description="Seconds from the video's first frame.", examples=[0.2])
    faces: list[TrackedFace] = Field(description="The faces in this frame, largest first.")


class TrackSummary(BaseModel):
    track: int = Field(ge=1, examples=[1])
    first: float = Field(ge=0.0, description="Time of the first frame the track is in, seconds.")
    last: float = Field(ge=0.0, description="Time of the last frame the track is in, seconds.")
    frames: int = Field(ge=1, description="Analysed frames the track is in.")
    emotion: Emotion = Field(description="The emotion of the highest mean probability.")
    probabilities: EmotionProbabilities = Field(
        description="The mean of the track's raw (unsmoothed) probabilities over its frames."
    )


class VideoSummary(BaseModel):
    """Everything but the frames: the last line of the NDJSON answer."""

    tracks: list[TrackSummary]
    duration: float = Field(
        ge=0.0, description="Seconds of video: the header's duration, or up to the last frame."
    )
    width: int = Field(ge=1, description="Frame width in pixels.")
    height: int = Field(ge=1, description="Frame height in pixels.")
    fps: float = Field(gt=0, description="Frames analysed per second of video.")
    frames_analysed: int = Field(ge=0)
    truncated: bool = Field(
        description="True when the file ended early (cut short or damaged): the frames that "
        "decoded are answered."
    )
    model: str = Field(description="Id of the model that answered (its SHA-256).")


class VideoPrediction(VideoSummary):
    """The whole answer of /predict/video as one JSON document."""

    frames: list[AnalysedFrame]


class StreamFrame(BaseModel):
    """One answer of the live stream (/stream): the newest frame the client sent."""

    frame: int = Field(
        ge=1,
        description="Which frame of the stream this answers: the count "
        "of frames the client has sent, this one included.",
    )
    dropped: int = Field(
        ge=0,
        description="Frames the client sent since the previous answer that were skipped "
        "because a newer one arrived before the service was free.",
    )
    time: float = Field(ge=0.0, description="Seconds since the stream started, when it arrived.")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    faces: list[TrackedFace]


class VideoError(BaseModel):
    """The last NDJSON line when the video broke a limit part way (a header that understated its
    length) or the request ran out of time: the lines before it stand."""

    error: str = Field(description="What went wrong, as `detail` says it in other answers.")
    status: int = Field(description="The HTTP status the same refusal has before streaming.")
