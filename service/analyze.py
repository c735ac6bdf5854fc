"""`python -m service.analyze`: emotions over time in a local video, or a folder of images.

The same pipeline as the service (faces -> crops -> one inference call a few frames, then the
tracker and per-track smoothing), without HTTP:

    python -m service.analyze interview.mp4 --out emotions.csv --plot emotions.png \\
        --annotated interview-annotated.mp4

A folder's images (JPEG, PNG, WebP, BMP, TIFF; sorted by name) are taken as the frames of a
video at `--fps` frames a second. Frames are decoded, analysed and written one batch at a time:
memory does not grow with the video, but for the plot's series (7 numbers per face per frame).
The plot needs matplotlib (in the training requirements, not in the slim serving image).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from tqdm import tqdm

from service.annotate import draw_faces
from service.app import load_detector, load_model
from service.images import DecodedImage, ImageLimits, ImageRejected, decode_upright
from service.pipeline import EmotionPipeline
from service.schemas import DetectMode
from service.settings import Settings
from service.video.analysis import FaceFollower, analyse_frames
from service.video.decode import SampledFrame, VideoLimits, VideoReader
from service.video.encode import csv_header, csv_rows, csv_text
from service.video.schemas import AnalysedFrame, VideoSummary

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PLOT_TRACKS = 6
"""Most tracks plotted (those seen in the most frames): one panel each."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings(**({"model_path": args.model} if args.model else {}))
    pipeline = EmotionPipeline(
        load_model(settings),
        load_detector(settings),
        ImageLimits(
            settings.max_upload_bytes, settings.max_image_pixels, settings.max_aspect_ratio
        ),
        worker_threads=1,
    )
    follower = FaceFollower(pipeline.model.labels, args.smoothing)
    try:
        source = _source(args, pipeline, settings)
    except (ImageRejected, OSError) as error:
        print(f"error: {getattr(error, 'detail', error)}", file=sys.stderr)
        return 2
    series: dict[int, list[tuple[float, np.ndarray]]] = {}
    with ExitStack() as stack:
        out = stack.enter_context(args.out.open("w")) if args.out else None
        writer = _Writer(out, args.out, pipeline.model.labels) if out else None
        annotated = _AnnotatedVideo(args.annotated, source.rate) if args.annotated else None
        if annotated:
            stack.callback(annotated.close)
        progress = stack.enter_context(tqdm(total=source.expected, unit="frame", desc="analysing"))
        for frames in source.batches():
            analysed = analyse_frames(
                pipeline, follower, iter(frames), source.size, args.detect, args.max_faces
            )
            for frame, result in zip(frames, analysed, strict=True):
                if writer:
                    writer.frame(result)
                if annotated:
                    annotated.write(frame.pixels, result)
                for face in result.faces:
                    values = face.probabilities.model_dump()
                    row = np.array([values[label] for label in pipeline.model.labels], np.float32)
                    series.setdefault(face.track, []).append((result.time, row))
            progress.update(len(frames))
        progress.total = progress.n  # the estimate from the header, now known
        progress.refresh()
        summary = source.summary(follower, pipeline.model.model_id)
        if writer:
            writer.close(summary)
    if args.plot:
        _plot(args.plot, series, pipeline.model.labels, summary)
    _report(summary, args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.analyze",
        description="Emotions over time in a local video or a folder of images.",
    )
    parser.add_argument("input", type=Path, help="a video (MP4, MOV, WebM, MKV, AVI) or a folder")
    parser.add_argument(
        "--out", type=Path, help="results: .csv (a row per face per frame) or .json"
    )
    parser.add_argument("--plot", type=Path, help="a PNG of each track's emotions over time")
    parser.add_argument("--annotated", type=Path, help="an MP4 with boxes and labels drawn")
    parser.add_argument("--fps", type=float, default=5.0, help="frames analysed a second (5)")
    parser.add_argument(
        "--detect", type=DetectMode, default=DetectMode.always, choices=list(DetectMode)
    )
    parser.add_argument("--max-faces", type=int, default=20)
    parser.add_argument(
        "--smoothing", type=float, default=0.5, help="time constant in seconds; 0: raw (0.5)"
    )
    parser.add_argument("--model", type=Path, help="the ONNX model (default: MODEL_PATH)")
    return parser


class _VideoSource:
    def __init__(
        self, path: Path, args: argparse.Namespace, pipeline: EmotionPipeline, settings: Settings
    ) -> None:
        self.file = path.open("rb")
        limits = VideoLimits(math.inf, sys.maxsize, settings.max_video_pixels)
        self.reader = VideoReader(
            self.file,
            limits,
            fps=args.fps,
            color=bool(args.annotated),
            max_side=None if args.annotated else pipeline.decode_side(args.detect),
        )
        info = self.reader.info
        self.size = (info.width, info.height)
        self.rate = min(args.fps, info.rate) if info.rate else args.fps
        self.expected = math.ceil(info.duration * self.rate - 1e-6) if info.duration else None

    def batches(self) -> Iterator[list[SampledFrame]]:
        batch: list[SampledFrame] = []
        for frame in self.reader.frames():
            batch.append(frame)
            if len(batch) == 4:
                yield batch
                batch = []
        if batch:
            yield batch
        self.reader.close()
        self.file.close()

    def summary(self, follower: FaceFollower, model: str) -> VideoSummary:
        info = self.reader.info
        return VideoSummary(
            tracks=follower.summary(),
            duration=info.duration or 0.0,
            width=info.width,
            height=info.height,
            fps=self.rate,
            frames_analysed=self.reader.analysed,
            truncated=self.reader.truncated,
            model=model,
        )


class _FolderSource:
    """A folder's images as frames at `fps`; images of another size than the first are
    analysed at their own size (boxes are in their own pixels)."""

    def __init__(
        self, path: Path, args: argparse.Namespace, pipeline: EmotionPipeline, settings: Settings
    ) -> None:
        self.paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise OSError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        self.limits, self.rate, self.color = pipeline.limits, args.fps, bool(args.annotated)
        first = self._decode(self.paths[0])
        self.size = (first.width, first.height)
        self.expected = len(self.paths)
        self.analysed = 0

    def _decode(self, path: Path) -> DecodedImage:
        return decode_upright(path.read_bytes(), self.limits)

    def batches(self) -> Iterator[list[SampledFrame]]:
        for start in range(0, len(self.paths), 4):
            batch = []
            for index, path in enumerate(self.paths[start : start + 4], start):
                pixels = self._decode(path).pixels
                if self.color:
                    pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
                batch.append(SampledFrame(round(index / self.rate, 4), pixels))
            self.analysed += len(batch)
            yield batch

    def summary(self, follower: FaceFollower, model: str) -> VideoSummary:
        return VideoSummary(
            tracks=follower.summary(),
            duration=len(self.paths) / self.rate,
            width=self.size[0],
            height=self.size[1],
            fps=self.rate,
            frames_analysed=self.analysed,
            truncated=False,
            model=model,
        )


def _source(args: argparse.Namespace, pipeline: EmotionPipeline, settings: Settings) -> Any:
    if args.input.is_dir():
        return _FolderSource(args.input, args, pipeline, settings)
    return _VideoSource(args.input, args, pipeline, settings)


class _Writer:
    """Results written as they come: CSV rows, or a JSON document whose frames are written one
    by one (the same document /predict/video answers)."""

    def __init__(self, out: IO[str], path: Path, labels: tuple[str, ...]) -> None:
        self.out, self.labels, self.json = out, labels, path.suffix.lower() == ".json"
        self.first = True
        if self.json:
            out.write('{"frames": [')
        else:
            out.write(csv_text([csv_header(labels)]).decode())

    def frame(self, frame: AnalysedFrame) -> None:
        if self.json:
            self.out.write(("" if self.first else ",") + "\n" + frame.model_dump_json())
            self.first = False
        else:
            self.out.write(csv_text(csv_rows(frame, self.labels)).decode())

    def close(self, summary: VideoSummary) -> None:
        if self.json:
            fields = json.dumps(summary.model_dump())[1:]
            self.out.write("\n], " + fields + "\n")


class _AnnotatedVideo:
    def __init__(self, path: Path, rate: float) -> None:
        self.path, self.rate = path, rate
        self.writer: cv2.VideoWriter | None = None

    def write(self, pixels: np.ndarray, frame: AnalysedFrame) -> None:
        if self.writer is None:
            height, width = pixels.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.rate, (width, height))
        canvas = pixels.copy()
        draw_faces(canvas, frame.faces)  # type: ignore[arg-type]  # box, emotion, confidence
        self.writer.write(canvas)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _plot(
    path: Path,
    series: dict[int, list[tuple[float, np.ndarray]]],
    labels: tuple[str, ...],
    summary: VideoSummary,
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "no plot: matplotlib is not installed (it is in requirements-train.txt, not in the "
            "serving image); pip install matplotlib, or leave out --plot",
            file=sys.stderr,
        )
        return
    from service.annotate import EMOTION_COLORS

    tracks = sorted(series, key=lambda track: -len(series[track]))[:PLOT_TRACKS]
    figure, axes = plt.subplots(
        max(1, len(tracks)),
        1,
        figsize=(9, 2.2 * max(1, len(tracks)) + 0.6),
        squeeze=False,
        sharex=True,
    )
    for axis, track in zip(axes[:, 0], tracks, strict=False):
        times = [time for time, _ in series[track]]
        values = np.stack([row for _, row in series[track]])
        for index, label in enumerate(labels):
            color = tuple(channel / 255 for channel in EMOTION_COLORS[label])
            axis.plot(times, values[:, index], label=label, color=color, linewidth=1.5)
        axis.set_ylim(0, 1)
        axis.set_ylabel(f"track {track}")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(ncol=len(labels), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
    axes[-1, 0].set_xlabel("seconds")
    if not tracks:
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", transform=axes[0, 0].transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _report(summary: VideoSummary, args: argparse.Namespace) -> None:
    ended = " (the file ended early)" if summary.truncated else ""
    print(f"{summary.frames_analysed} frames analysed, {len(summary.tracks)} tracks{ended}")
    for track in summary.tracks:
        print(
            f"  track {track.track}: {track.first:.1f}-{track.last:.1f} s, {track.frames} frames, "
            f"mostly {track.emotion}"
        )
    for name in ("out", "plot", "annotated"):
        if getattr(args, name):
            print(f"{name}: {getattr(args, name)}")


if __name__ == "__main__":
    sys.exit(main())
