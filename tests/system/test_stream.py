"""The live stream (/stream) against a real `python -m service` process, with a real WebSocket
client: answers per frame with tracks, stale frames dropped, bad frames, the key, the limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from harness.server import running_service
from harness.videos import frames, pan

KEY = "stream-test-key"


@pytest.fixture(scope="module")
def service(model_path: Path) -> Iterator[str]:
    settings = {"MAX_STREAMS": "2", "STREAM_IDLE_SECONDS": "1.5", "MAX_UPLOAD_BYTES": "200000"}
    with running_service(model_path, settings=settings) as url:
        yield url.replace("http://", "ws://") + "/stream"


@pytest.fixture(scope="module")
def camera() -> list[bytes]:
    """30 JPEG frames of the pan, as a webcam page would send them."""
    return [cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames(pan, 30)]


def answer(ws: ClientConnection) -> dict:
    return json.loads(ws.recv(timeout=30))


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_each_frame_is_answered_with_its_track(service, camera):
    with connect(service) as ws:
        answers = []
        for frame in camera[:5]:
            ws.send(frame)
            answers.append(answer(ws))
    assert [a["frame"] for a in answers] == [1, 2, 3, 4, 5]
    assert all(a["dropped"] == 0 for a in answers)
    assert all((a["width"], a["height"]) == (320, 240) for a in answers)
    assert [[face["track"] for face in a["faces"]][:1] for a in answers] == [[1]] * 5
    assert answers[0]["time"] <= answers[-1]["time"]
    face = answers[-1]["faces"][0]
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["confidence"] == max(face["probabilities"].values())


def test_a_client_faster_than_the_service_gets_the_newest_frame_and_the_drop_count(service, camera):
    """30 frames sent at once: far faster than they can be analysed. Each answer serves the
    newest frame that had arrived, so the last frame is always answered; every frame is
    either answered or counted as dropped, exactly once."""
    with connect(service) as ws:
        for frame in camera:
            ws.send(frame)
        answers = [answer(ws)]
        while answers[-1]["frame"] < len(camera):
            answers.append(answer(ws))
    numbers = [a["frame"] for a in answers]
    assert numbers == sorted(numbers) and numbers[-1] == len(camera)
    assert len(answers) + sum(a["dropped"] for a in answers) == len(camera)
    assert sum(a["dropped"] for a in answers) > 0
    # The frames between two answers are the ones the second answer says were dropped.
    previous = [0, *numbers[:-1]]
    assert [a["dropped"] for a in answers] == [
        n - p - 1 for n, p in zip(numbers, previous, strict=True)
    ]


def test_a_bad_frame_is_answered_with_its_error_and_the_stream_goes_on(service, camera):
    with connect(service) as ws:
        ws.send(b"this is not an image")
        bad = answer(ws)
        ws.send(b"\xff\xd8\xff" + bytes(300_000))  # over MAX_UPLOAD_BYTES
        large = answer(ws)
        ws.send("a text message")
        text = answer(ws)
        ws.send(camera[0])
        good = answer(ws)
    assert (bad["frame"], bad["status"]) == (1, 415) and "not a supported image" in bad["error"]
    assert large["status"] == 413 and "MAX_UPLOAD_BYTES" in large["error"]
    assert text["status"] == 415 and "binary" in text["error"]
    assert good["frame"] == 4 and good["faces"]


def test_streams_past_max_streams_are_told_to_come_back(service, camera):
    with connect(service) as first, connect(service) as second:
        first.send(camera[0])
        second.send(camera[0])
        answer(first), answer(second)
        with connect(service) as third:
            code, reason = closed_with(third)
    assert code == 1013 and "MAX_STREAMS" in reason
    with connect(service) as again:  # the places are given back when streams end
        again.send(camera[0])
        assert answer(again)["frame"] == 1


def test_an_idle_stream_is_closed(service, camera):
    with connect(service) as ws:
        ws.send(camera[0])
        answer(ws)
        code, reason = closed_with(ws)
    assert code == 1001 and "STREAM_IDLE_SECONDS" in reason


@pytest.fixture(scope="module")
def locked(model_path: Path) -> Iterator[str]:
    with running_service(model_path, settings={"API_KEY": KEY}) as url:
        yield url.replace("http://", "ws://") + "/stream"


def test_the_key_is_needed_in_a_header_or_the_first_message(locked, camera):
    with connect(locked) as ws:
        ws.send(camera[0])
        code, reason = closed_with(ws)
    assert code == 1008 and "X-API-Key" in reason
    with connect(locked) as ws:
        ws.send(json.dumps({"api_key": "wrong"}))
        code, reason = closed_with(ws)
    assert code == 1008 and "not valid" in reason

    with connect(locked, additional_headers={"X-API-Key": KEY}) as ws:
        ws.send(camera[0])
        assert answer(ws)["frame"] == 1
    with connect(locked) as ws:  # as a browser does
        ws.send(json.dumps({"api_key": KEY}))
        ws.send(camera[0])
        assert answer(ws)["frame"] == 1
