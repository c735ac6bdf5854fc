"""Uploaded files -> answers: decode, find faces, crop, one batched inference, assemble.

The one path every endpoint takes. It is synchronous and CPU-bound; `EmotionPipeline.run` moves
it off the event loop onto a bounded pool of worker threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from service import metrics
from service.faces import FaceBox, FaceDetector, crop_face, crop_whole_image
from service.images import DecodedImage, ImageLimits, ImageRejected, decode_upright
from service.model import EmotionModel
from service.schemas import Box, DetectMode, EmotionProbabilities, Face, FileError, Prediction
from service.stages import stage

PROBABILITY_DECIMALS = 6
WARM_UP_ROUNDS = 2
"""Rounds of the warm-up: after one, the first busy seconds still added a third of what they
add without any (docs/experiments.md, "Warm-up at full concurrency")."""

T = TypeVar("T")


@dataclass(frozen=True)
class _FacesInImage:
    width: int
    height: int
    boxes: list[FaceBox]
    detected: bool
    crops: list[np.ndarray]
    found: int
    """Faces in the image, before `max_faces` kept the largest."""


@dataclass
class EmotionPipeline:
    model: EmotionModel
    detector: FaceDetector
    limits: ImageLimits
    worker_threads: int = 4

    def __post_init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(self.worker_threads)

    def warm_up(self) -> None:
        """On `worker_threads` threads at once, detect faces in a photo-shaped frame, then
        classify a crop (each step started by all together), before the process says it is ready.

        onnxruntime and the allocator keep buffers for each run that overlaps another, and keep
        them: without this, a process's first busy seconds add ~75 MB (YuNet at 640 pixels and
        the four-network ensemble, four requests at a time) that look like a leak to whoever
        watches its memory, and a container limit too small to serve fails under load instead
        of at start. Measured in docs/experiments.md ("Warm-up at full concurrency").
        """
        side = self.detector.max_side
        frame = np.zeros((side * 3 // 4, side), np.uint8)  # 4:3, the shape of most photos
        size = self.model.contract.input_size
        crop = np.zeros((1, size, size), np.uint8)
        together = threading.Barrier(self.worker_threads)

        def one_worker() -> None:
            for _ in range(WARM_UP_ROUNDS):
                together.wait()
                self.detector.detect(frame)
                together.wait()
                self.model.predict(crop)

        with ThreadPoolExecutor(self.worker_threads, thread_name_prefix="warm-up") as pool:
            for done in [pool.submit(one_worker) for _ in range(self.worker_threads)]:
                done.result()

    async def run(
        self, uploads: Sequence[bytes | ImageRejected], detect: DetectMode, max_faces: int
    ) -> list[Prediction | FileError]:
        """`predict` in a worker thread; at most `worker_threads` run at once, the rest queue."""
        return await self.in_worker(self.predict, uploads, detect, max_faces)

    async def in_worker(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a worker thread, counted against the same `worker_threads` as every
        prediction: other CPU-bound work of a request (drawing an answer) cannot bypass it."""
        return await anyio.to_thread.run_sync(work, *args, limiter=self._limiter)

    def predict(
        self, uploads: Sequence[bytes | ImageRejected], detect: DetectMode, max_faces: int
    ) -> list[Prediction | FileError]:
        """One answer per upload, in order. An upload that was already refused while it was read
        (an `ImageRejected`), or that cannot be decoded, becomes a `FileError` and spoils nothing
        else. The faces of all images go through one inference call."""
        found: list[_FacesInImage | FileError] = []
        for upload in uploads:
            try:
                if isinstance(upload, ImageRejected):
                    raise upload
                with stage("decode"):
                    decoded = decode_upright(upload, self.limits, min_side=self.decode_side(detect))
            except ImageRejected as rejected:
                metrics.image_rejected(rejected.reason)
                found.append(FileError(detail=rejected.detail, status=rejected.status_code))
                continue
            found.append(self._faces(decoded, detect, max_faces))

        return self._classify(found)

    def predict_decoded(
        self, images: Sequence[DecodedImage], detect: DetectMode, max_faces: int
    ) -> list[Prediction]:
        """`predict` for images decoded already (the frames of a video, `service.video`): the
        same faces, crops and one inference call for all of them."""
        found: list[_FacesInImage | FileError] = [
            self._faces(image, detect, max_faces) for image in images
        ]
        return [answer for answer in self._classify(found) if isinstance(answer, Prediction)]

    def predict_at(self, image: DecodedImage, boxes: Sequence[FaceBox]) -> Prediction:
        """The faces at `boxes` (pixels of the full upright image), without detection: a video's
        faces between two detections, where its tracker already knows where they are. The same
        crops and inference as every other answer."""
        gray, size = image.pixels, self.model.contract.input_size
        full_shape = (image.height, image.width)
        with stage("crop"):
            crops = [
                crop_face(
                    gray,
                    box.rescaled(full_shape, gray.shape),
                    margin=self.model.contract.crop_margin,
                    size=size,
                )
                for box in boxes
            ]
        faces = _FacesInImage(image.width, image.height, list(boxes), True, crops, len(boxes))
        (answer,) = self._classify([faces])
        assert isinstance(answer, Prediction)
        return answer

    def _classify(self, found: list[_FacesInImage | FileError]) -> list[Prediction | FileError]:
        crops = [
            crop for image in found if isinstance(image, _FacesInImage) for crop in image.crops
        ]
        size = self.model.contract.input_size
        batch = np.stack(crops) if crops else np.empty((0, size, size), np.uint8)
        with stage("infer"):
            probabilities = iter(self.model.predict(batch))
        return [
            image if isinstance(image, FileError) else self._answer(image, probabilities)
            for image in found
        ]

    def decode_side(self, detect: DetectMode) -> int:
        """How long the decoded image's longer side must be (large JPEGs are decoded reduced to
        just that): enough for the smallest face the detector reports (`min_face_pixels` on its
        copy of `max_side` pixels) to be cut from at least `input_size` pixels; a whole image
        classified as one face needs only `input_size`."""
        size = self.model.contract.input_size
        if detect is DetectMode.never:
            return size
        return math.ceil(self.detector.max_side * size / self.detector.min_face_pixels)

    def _faces(self, decoded: DecodedImage, detect: DetectMode, max_faces: int) -> _FacesInImage:
        """Faces are found and cropped on `decoded.pixels`; their boxes are answered in pixels of
        the full upright image."""
        gray, width, height = decoded.pixels, decoded.width, decoded.height
        size, margin = self.model.contract.input_size, self.model.contract.crop_margin
        if detect is not DetectMode.never:
            with stage("detect"):
                every_box = self.detector.detect(gray)
            boxes = every_box[:max_faces]
            if boxes or detect is DetectMode.always:
                with stage("crop"):
                    crops = [crop_face(gray, box, margin=margin, size=size) for box in boxes]
                full = [box.rescaled(gray.shape, (height, width)) for box in boxes]
                return _FacesInImage(width, height, full, True, crops, found=len(every_box))
        whole = FaceBox(0, 0, width, height)
        with stage("crop"):
            crops = [crop_whole_image(gray, size=size)]
        return _FacesInImage(width, height, [whole], False, crops, found=1)

    def _answer(self, image: _FacesInImage, probabilities: Iterator[np.ndarray]) -> Prediction:
        labels = self.model.labels
        faces = []
        for box in image.boxes:
            row = [round(float(p), PROBABILITY_DECIMALS) for p in next(probabilities)]
            best = int(np.argmax(row))
            faces.append(
                Face(
                    box=Box(x=box.x, y=box.y, width=box.width, height=box.height),
                    detected=image.detected,
                    emotion=labels[best],
                    confidence=row[best],
                    probabilities=EmotionProbabilities(**dict(zip(labels, row, strict=True))),
                )
            )
        return Prediction(
            faces=faces,
            faces_found=image.found,
            width=image.width,
            height=image.height,
            model=self.model.model_id,
        )
