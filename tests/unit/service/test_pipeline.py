"""The pipeline's choice of resolution (large JPEGs decoded reduced, boxes in full pixels) and
its warm-up at full concurrency."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import numpy as np
import pytest

from harness.photos import scene
from service.pipeline import WARM_UP_ROUNDS
from tests.fixtures.service import encode


def _face_centre(answer: dict) -> tuple[float, float]:
    (face,) = answer["faces"]
    box = face["box"]
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


@pytest.mark.parametrize("detection_max_side", [320, 640])
def test_a_reduced_jpeg_decode_finds_the_face_where_a_full_decode_does(
    make_client, detection_max_side
):
    """1080p with faces searched at 320 px: the JPEG is decoded at 1/2 (960x540), the PNG of the
    same photo in full; both answers give the same box in pixels of the 1920x1080 image."""
    photo = scene(1920, 1080)
    with make_client(detection_max_side=detection_max_side) as client:
        reduced = client.post("/predict", files={"file": encode(photo, "JPEG", quality=95)})
        full = client.post("/predict", files={"file": encode(photo, "PNG")})
    assert reduced.status_code == full.status_code == 200
    for answer in (reduced.json(), full.json()):
        assert (answer["width"], answer["height"]) == (1920, 1080)
    (reduced_face,), (full_face,) = reduced.json()["faces"], full.json()["faces"]
    (x, y), (full_x, full_y) = _face_centre(reduced.json()), _face_centre(full.json())
    side = full_face["box"]["width"]
    assert abs(x - full_x) < 0.05 * side and abs(y - full_y) < 0.05 * side
    assert abs(reduced_face["box"]["width"] - side) < 0.1 * side
    # the portrait fills the frame's height: her face is about 210 pixels wide at 1080p
    assert 180 < side < 240


class _CallsByThread:
    """A real part of the pipeline, with each call of one of its methods noted: which thread made
    it and with what first argument's shape."""

    def __init__(self, part: object, method: str) -> None:
        self._part, self._method = part, method
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        real = getattr(self._part, name)
        if name != self._method:
            return real

        def noted(first: np.ndarray, *args: object, **kwargs: object) -> object:
            with self._lock:
                self.calls.append((threading.current_thread().name, first.shape))
            return real(first, *args, **kwargs)

        return noted


def test_the_warm_up_detects_and_classifies_on_every_worker_thread(make_client):
    """Each worker thread runs the real detector on a 4:3 frame of the detection size and the
    real model on one crop, once a round, so the buffers that overlapping runs keep are there
    before the process says it is ready."""
    with make_client(worker_threads=3, detection_max_side=480) as client:
        pipeline = client.app.state.service.pipeline
        detector = _CallsByThread(pipeline.detector, "detect")
        model = _CallsByThread(pipeline.model, "predict")
        warmed = dataclasses.replace(pipeline, detector=detector, model=model)
        warmed.warm_up()
    for calls in (detector.calls, model.calls):
        threads = Counter(thread for thread, _ in calls)
        assert len(threads) == 3
        assert set(threads.values()) == {WARM_UP_ROUNDS}
    assert {shape for _, shape in detector.calls} == {(360, 480)}
    assert {shape for _, shape in model.calls} == {(1, 48, 48)}
