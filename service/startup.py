"""Whether the model and the face detector can be served, checked before the server starts.

With one worker the process that checks them serves them. With `WORKERS` > 1 uvicorn's
supervisor only starts workers, each of which loads its own copies: it checks the files in a
short-lived child process instead, so that it never imports onnxruntime, OpenCV or the app. It
then stays at ~40 MB instead of the ~150 MB those held after the check, for as long as the
service runs. Heavy modules are imported inside the functions for that reason.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from service.settings import Settings

if TYPE_CHECKING:
    from service.faces import FaceDetector
    from service.model import EmotionModel


class Unservable(Exception):
    """The model or the face detector cannot be served; the message says why, for one line."""


def load_checked(settings: Settings) -> tuple[EmotionModel, FaceDetector]:
    """The model (warmed up) and the face detector, or `Unservable` with what is wrong."""
    from service.app import load_detector, load_model
    from service.faces import DetectorError
    from service.model import ModelError

    try:
        model = load_model(settings)
    except ModelError as error:
        raise Unservable(f"cannot serve the model: {error}") from error
    try:
        detector = load_detector(settings)
    except DetectorError as error:
        raise Unservable(f"cannot use the face detector: {error}") from error
    return model, detector


def check_in_a_child() -> None:
    """`load_checked` in a fresh process that reads the same environment, so that what it
    loads is given back when it exits; raises `Unservable` as it would."""
    spawn = multiprocessing.get_context("spawn")  # a clean interpreter, as uvicorn's workers
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
            problem = child.submit(_problem_in_this_process).result()
    except BrokenProcessPool as error:
        raise Unservable(f"checking the model and the face detector crashed ({error})") from error
    if problem is not None:
        raise Unservable(problem)


def _problem_in_this_process() -> str | None:
    try:
        load_checked(Settings())
    except Unservable as error:
        return str(error)
    return None
