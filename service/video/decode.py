"""A video file -> its frames at the analysed rate, in constant memory, with PyAV (FFmpeg).

Why PyAV rather than OpenCV's `VideoCapture`: OpenCV opens only a path or URL and lets FFmpeg
probe the input and pick any of its ~400 demuxers, among them concat and HLS, which open the
files and URLs a playlist names. PyAV opens a Python file object (the upload, spooled to disk
by the server, is never copied), and takes the demuxer and FFmpeg's options from the caller:

- the container is recognised here from its first bytes (MP4/MOV, WebM/Matroska, AVI) and only
  that demuxer is used, so a playlist or a concat script is never parsed as one;
- `protocol_whitelist=none` stops any nested open (a playlist's entry, an MOV data reference)
  as a second line of defence, and MOV data references are off (`enable_drefs=0`);
- frames are decoded one at a time and converted only when they are analysed, so memory does
  not depend on the video's length.

Everything a client can get wrong is raised as `ImageRejected` (status, detail), like images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import BinaryIO

import av
import av.error
import numpy as np

from service.images import ImageRejected
from service.memory_budget import BudgetExhausted, MemoryBudget

log = logging.getLogger(__name__)

SNIFF_BYTES = 16
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
FORMATS = "MP4, MOV, WebM, MKV or AVI"
SAFE_OPTIONS = {"protocol_whitelist": "none", "enable_drefs": "0"}
"""FFmpeg options for every opened container: no protocol for nested opens, no MOV data
references (FFmpeg's default, stated so it stays so)."""


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float
    max_frames: int
    """Most frames analysed (not decoded)."""
    max_pixels: int
    """Most pixels a frame (MAX_VIDEO_PIXELS)."""
    memory: MemoryBudget | None = None
    """The process's decoding memory (`service.memory_budget`), which the decoder's frames hold
    a share of while the video is open; None: unbounded (the command line)."""


DECODER_FRAMES = 32
"""Frames a decoder may hold at once, for the memory it reserves: H.264 and HEVC keep up to 16
reference frames, each frame thread one more, and the pool a few spare. An 8K H.264 clip of 132 KB
with 16 references took 27 frames' worth (1.35 GB) to decode (docs/experiments.md, "Decoding
memory")."""


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    duration: float | None
    """Seconds, as the container's header says; None when it does not."""
    rate: float | None
    """The video's own frames per second, when known."""


@dataclass(frozen=True)
class SampledFrame:
    time: float
    """Seconds from the first frame."""
    pixels: np.ndarray
    """Grayscale, or BGR when the reader was asked for colour; possibly shrunk (see
    `VideoReader.max_side`)."""


def demuxer_for(head: bytes) -> str:
    """FFmpeg's demuxer for a file starting with `head`; `ImageRejected` (415) for anything that
    is not one of the supported containers, with a pointer to /predict for images."""
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    for signature, name in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            raise ImageRejected(
                415,
                f"the file is a {name} image, not a video: send images to /predict, videos "
                f"as {FORMATS}",
                reason="image_as_video",
            )
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        raise ImageRejected(
            415,
            f"the file is a WebP image, not a video: send images to /predict, videos as {FORMATS}",
            reason="image_as_video",
        )
    raise ImageRejected(
        415, f"the file is not a supported video: send {FORMATS}", reason="not_a_video"
    )


class VideoReader:
    """An opened video: `info` at once, then `frames()`; `truncated` once they are read.

    Not thread-safe; one reader is used by one thread at a time (the request's steps may run on
    different worker threads, one after the other)."""

    def __init__(
        self,
        file: BinaryIO,
        limits: VideoLimits,
        *,
        fps: float,
        max_side: int | None = None,
        color: bool = False,
        threads: int = 0,
    ) -> None:
        self.limits, self.fps, self.max_side, self.color = limits, fps, max_side, color
        self.truncated = False
        self.analysed = 0
        file.seek(0)
        head = file.read(SNIFF_BYTES)
        if not head:
            raise ImageRejected(400, "the uploaded file is empty", reason="empty")
        demuxer = demuxer_for(head)
        file.seek(0)
        try:
            self._container = av.open(file, mode="r", format=demuxer, options=SAFE_OPTIONS)
        except av.error.FFmpegError as error:
            raise ImageRejected(
                400,
                f"the video cannot be read: it is truncated or corrupt ({error.strerror}); "
                "an MP4 or MOV whose index comes last cannot be read at all when cut short",
                reason="corrupt",
            ) from error
        self._memory = ExitStack()
        try:
            self.info = self._validate(demuxer)
            self._reserve_decoder_memory()
        except BaseException:
            self.close()
            raise
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads
        self._decoded = self._container.decode(self._stream)
        self._first = self._first_frame()
        self.quarter_turns = round((self._first.rotation or 0) / 90) % 4 if self._first else 0
        """Counter-clockwise quarter turns that show the frames upright: a phone's display
        matrix (portrait videos are stored sideways). Boxes are answered in the upright frame."""
        if self.quarter_turns % 2:
            self.info = replace(self.info, width=self.info.height, height=self.info.width)

    def _reserve_decoder_memory(self) -> None:
        """Hold the decoder's frames' worth of the process's decoding memory until `close`; a
        503 at once if it is not free (the video's later steps need worker threads to finish on,
        so it does not wait in one)."""
        if self.limits.memory is None:
            return
        codec = self._container.streams.video[0].codec_context
        try:
            layout = av.VideoFormat(codec.pix_fmt or "yuv444p16le", codec.width, codec.height)
            frame_bytes = sum(c.width * c.height * math.ceil(c.bits / 8) for c in layout.components)
        except (ValueError, TypeError, av.error.FFmpegError):
            frame_bytes = codec.width * codec.height * 6  # an unknown layout: 16-bit 4:4:4
        try:
            self._memory.enter_context(
                self.limits.memory.reserve(DECODER_FRAMES * frame_bytes, wait=False)
            )
        except BudgetExhausted as error:
            raise ImageRejected(
                503,
                "the service is decoding other large images or videos: retry in a few seconds, "
                "or send a smaller video",
                reason="decoding_busy",
            ) from error

    def _validate(self, demuxer: str) -> VideoInfo:
        container = self._container
        if not container.streams.video:
            raise ImageRejected(415, "the file has no video stream", reason="not_a_video")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width < 1 or height < 1:
            raise ImageRejected(400, "the video's frames have no size", reason="corrupt")
        if width * height > self.limits.max_pixels:
            raise ImageRejected(
                413,
                f"the video is {width}x{height} = {width * height} pixels a frame; the limit is "
                f"{self.limits.max_pixels} (MAX_VIDEO_PIXELS): send a 4K or smaller video",
                reason="too_many_pixels",
            )
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        info = VideoInfo(
            demuxer, stream.codec_context.name, width, height, _duration(container, stream), rate
        )
        if info.duration is not None:
            if info.duration > self.limits.max_seconds:
                raise ImageRejected(
                    413,
                    f"the video is {info.duration:.1f} s long; the limit is "
                    f"{self.limits.max_seconds:g} s (MAX_VIDEO_SECONDS): send a shorter clip",
                    reason="too_long",
                )
            expected = math.ceil(info.duration * min(self.fps, rate or self.fps) - 1e-6)
            if expected > self.limits.max_frames:
                raise self.too_many_frames(expected)
        return info

    def too_many_frames(self, count: int | None = None) -> ImageRejected:
        many = f"{count} frames" if count else "more frames"
        return ImageRejected(
            422,
            f"at fps={self.fps:g} this video gives {many} to analyse; the limit is "
            f"{self.limits.max_frames} (MAX_VIDEO_FRAMES): ask for a lower fps or send a "
            "shorter clip",
            reason="too_many_frames",
        )

    def _first_frame(self) -> av.VideoFrame | None:
        """The first frame, decoded at once for its display matrix; kept for `frames`."""
        try:
            return next(self._decoded, None)
        except av.error.FFmpegError as error:
            log.info("video ended before its first frame: %s", error)
            self.truncated = True
            return None

    def _all_frames(self) -> Iterator[av.VideoFrame]:
        if self._first is None:
            return
        first, self._first = self._first, None
        yield first
        yield from self._decoded

    def frames(self) -> Iterator[SampledFrame]:
        """The frames at `fps` (every frame when the video's own rate is not higher). A decoding
        error ends the iteration with `truncated` set; so does a last frame well short of the
        duration the header announced. Past the limits (a header that lied), `ImageRejected`."""
        step = 1 / self.fps
        slack = 0.5 / self.info.rate if self.info.rate else 1e-3
        due, first, last = 0.0, None, None
        try:
            for index, frame in enumerate(self._all_frames()):
                time = frame.time if frame.time is not None else index / (self.info.rate or 25)
                first = time if first is None else first
                time -= first
                last = time
                if time < due - slack:
                    continue
                if time > self.limits.max_seconds:
                    raise ImageRejected(
                        413,
                        f"the video runs past the limit of {self.limits.max_seconds:g} s "
                        "(MAX_VIDEO_SECONDS): send a shorter clip",
                        reason="too_long",
                    )
                self.analysed += 1
                if self.analysed > self.limits.max_frames:
                    raise self.too_many_frames()
                # The next frame due: one step on, or one step after this one after a gap.
                due = max(due + step, time + step - slack)
                yield SampledFrame(round(time, 4), self._pixels(frame))
        except av.error.FFmpegError as error:
            log.info("video ended early: %s", error)
            self.truncated = True
            return
        self.truncated = self._ended_early(last)

    def _ended_early(self, last: float | None) -> bool:
        if last is None:
            return True
        if self.info.duration is None:
            return False
        interval = 1 / self.info.rate if self.info.rate else 0.1
        return last + interval < self.info.duration - 1.5 * interval

    def _pixels(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = frame.width, frame.height
        if width * height > self.limits.max_pixels:  # a stream whose frames outgrow its header
            raise ImageRejected(
                413,
                f"a frame of the video is {width}x{height} pixels; the limit is "
                f"{self.limits.max_pixels} (MAX_VIDEO_PIXELS)",
                reason="too_many_pixels",
            )
        scale = 1.0
        if self.max_side and max(width, height) > self.max_side:
            scale = self.max_side / max(width, height)
        size = {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}
        if scale == 1.0:
            size = {}
        pixels = frame.to_ndarray(format="bgr24" if self.color else "gray", **size)
        if self.quarter_turns:
            pixels = np.ascontiguousarray(np.rot90(pixels, self.quarter_turns))
        return pixels

    def close(self) -> None:
        self._container.close()
        self._memory.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    """The longest duration the header gives: the container's, the stream's, or its frame
    count over its rate (AVI)."""
    candidates = []
    if container.duration:
        candidates.append(container.duration / av.time_base)
    if stream.duration and stream.time_base:
        candidates.append(float(stream.duration * stream.time_base))
    rate = float(stream.average_rate or 0)
    if stream.frames and rate:
        candidates.append(stream.frames / rate)
    return max(candidates) if candidates else None
