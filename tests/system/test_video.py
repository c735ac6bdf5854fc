"""POST /predict/video against a real `python -m service` process, on videos made here from the
portrait: every container, sampling, tracks, smoothing, NDJSON, CSV, bad input and limits."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.server import running_service
from harness.videos import (
    leaves_and_returns,
    pan,
    place,
    portrait_at,
    two_faces,
    write_video,
    zoom,
)
from service.video.decode import SAFE_OPTIONS
from tests.conftest import DATA_DIR

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
LIMITS = {
    "MAX_VIDEO_BYTES": "1500000",
    "MAX_VIDEO_SECONDS": "3.5",
    "MAX_VIDEO_FRAMES": "25",
    "MAX_VIDEO_PIXELS": str(480 * 240),
}


@pytest.fixture(scope="module")
def service(model_path: Path) -> Iterator[str]:
    with running_service(model_path, settings=LIMITS) as url:
        yield url


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


def post(
    url: str, path: Path | bytes, accept: str | None = None, **params: object
) -> httpx.Response:
    data = path.read_bytes() if isinstance(path, Path) else path
    headers = {"Accept": accept} if accept else {}
    return httpx.post(
        f"{url}/predict/video",
        params=params,
        files={"file": ("clip", data, "application/octet-stream")},
        headers=headers,
        timeout=60,
    )


def tracks_per_frame(answer: dict) -> list[list[int]]:
    return [[face["track"] for face in frame["faces"]] for frame in answer["frames"]]


@pytest.mark.parametrize("container", ["mp4", "webm", "mov", "avi", "mkv"])
def test_every_container_gives_every_frame_and_one_track_for_a_pan(service, videos, container):
    clip = write_video(videos / f"pan.{container}", pan, count=20)
    response = post(service, clip, fps=10)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["width"], answer["height"]) == (320, 240)
    assert answer["duration"] == pytest.approx(2.0, abs=0.11)
    assert answer["frames_analysed"] == len(answer["frames"]) == 20
    assert [frame["time"] for frame in answer["frames"]] == pytest.approx(
        [i / 10 for i in range(20)], abs=0.01
    )
    assert answer["truncated"] is False
    assert len(answer["model"]) == 64
    # The face, largest in every frame, is one track; a stray detection elsewhere (the
    # detector's, not the tracker's) may make a short one of its own.
    assert [frame[0] for frame in tracks_per_frame(answer)] == [1] * 20
    track, *strays = answer["tracks"]
    assert all(stray["frames"] <= 2 for stray in strays)
    assert (track["track"], track["frames"], track["first"]) == (1, 20, 0.0)
    assert track["last"] == pytest.approx(1.9, abs=0.01)
    mean = track["probabilities"]
    assert sum(mean.values()) == pytest.approx(1.0, abs=1e-4)
    assert track["emotion"] == max(mean, key=mean.get)
    boxes = [frame["faces"][0]["box"]["x"] for frame in answer["frames"]]
    assert boxes[-1] - boxes[0] > 100  # the face moved across the frame


def test_fps_samples_the_video_and_never_beyond_its_own_rate(service, videos):
    clip = write_video(videos / "sampled.mkv", pan, count=20)
    five = post(service, clip, fps=5).json()
    assert [frame["time"] for frame in five["frames"]] == pytest.approx(
        [0.2 * i for i in range(10)], abs=0.01
    )
    assert five["fps"] == 5
    every = post(service, clip, fps=100).json()
    assert len(every["frames"]) == 20 and every["fps"] == 10


def test_detect_never_classifies_each_whole_frame_as_one_track(service, videos):
    answer = post(service, write_video(videos / "whole.mkv", zoom, count=10), detect="never").json()
    faces = [face for frame in answer["frames"] for face in frame["faces"]]
    assert len(faces) == 5 and {face["track"] for face in faces} == {1}
    assert all(face["box"] == {"x": 0, "y": 0, "width": 320, "height": 240} for face in faces)


def test_a_phone_video_stored_sideways_is_analysed_upright(service, videos):
    """Phones store portrait video sideways with a display matrix that turns it upright. The
    frames are stored turned a quarter clockwise here, and the matrix says to turn them back."""
    import av

    path = videos / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"  # stored sideways
        stream.set_display_rotation(90)
        for index in range(10):
            upright = np.full((320, 240, 3), 190, np.uint8)
            place(upright, portrait_at(200), 20, 40 + 2 * index)
            stored = np.ascontiguousarray(np.rot90(upright[:, :, ::-1], -1))
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    answer = post(service, path, fps=10).json()
    assert (answer["width"], answer["height"]) == (240, 320)
    assert [[face["track"] for face in frame["faces"]][:1] for frame in answer["frames"]] == [
        [1]
    ] * 10
    box = answer["frames"][0]["faces"][0]["box"]
    # The portrait's face, upright: about (69, 26) + 37 pixels of the 200-pixel portrait.
    assert 60 < box["x"] + box["width"] / 2 < 130 and 50 < box["y"] + box["height"] / 2 < 130


def test_a_zoom_is_one_track(service, videos):
    answer = post(service, write_video(videos / "zoom.mp4", zoom, count=20), fps=10).json()
    assert {track for frame in tracks_per_frame(answer) for track in frame} == {1}
    assert answer["tracks"][0]["frames"] >= 15


def test_a_face_away_over_a_second_comes_back_as_a_new_track(service, videos):
    clip = write_video(videos / "leaves.avi", leaves_and_returns, count=33)  # away 1.1 s
    answer = post(service, clip, fps=5).json()
    per_frame = tracks_per_frame(answer)
    assert per_frame == [[1]] * 6 + [[]] * 5 + [[2]] * 6
    first, second = answer["tracks"]
    assert first["last"] == pytest.approx(1.0) and second["first"] == pytest.approx(2.2)


def test_a_face_away_under_a_second_keeps_its_track(service, videos):
    clip = write_video(videos / "blink.avi", leaves_and_returns, count=24)  # away 0.8 s
    answer = post(service, clip, fps=10).json()
    assert tracks_per_frame(answer) == [[1]] * 8 + [[]] * 8 + [[1]] * 8
    assert answer["tracks"][0]["frames"] == 16


def test_two_faces_keep_their_own_tracks(service, videos):
    clip = write_video(videos / "two.mkv", two_faces, count=20)
    answer = post(service, clip, fps=10).json()
    side_of_track: dict[int, set[str]] = {}
    for frame in answer["frames"]:
        for face in frame["faces"]:
            centre = face["box"]["x"] + face["box"]["width"] / 2
            side_of_track.setdefault(face["track"], set()).add("left" if centre < 240 else "right")
    long_tracks = [summary["track"] for summary in answer["tracks"] if summary["frames"] >= 18]
    assert len(long_tracks) == 2
    assert {frozenset(side_of_track[track]) for track in long_tracks} == {
        frozenset({"left"}),
        frozenset({"right"}),
    }


def test_smoothing_steadies_a_track_and_zero_is_raw(service, videos):
    clip = write_video(videos / "smooth.mp4", zoom, count=20)
    raw = post(service, clip, fps=10, smoothing=0).json()
    smooth = post(service, clip, fps=10, smoothing=2).json()

    def series(answer: dict) -> np.ndarray:
        return np.array(
            [
                [f["probabilities"][k] for k in LABELS]
                for fr in answer["frames"]
                for f in fr["faces"]
            ]
        )

    assert series(raw).shape == series(smooth).shape
    # The summary is the mean of the raw probabilities whatever the smoothing.
    assert raw["tracks"] == smooth["tracks"]
    mean = np.array([raw["tracks"][0]["probabilities"][k] for k in LABELS])
    assert np.allclose(series(raw).mean(axis=0), mean, atol=1e-5)
    steps = lambda s: np.abs(np.diff(s, axis=0)).sum()  # noqa: E731
    assert steps(series(smooth)) < steps(series(raw))


def test_ndjson_streams_one_line_per_frame_then_the_summary(service, videos):
    clip = write_video(videos / "lines.webm", pan, count=20)
    with httpx.stream(
        "POST",
        f"{service}/predict/video",
        params={"fps": 10},
        files={"file": ("clip", clip.read_bytes())},
        headers={"Accept": "application/x-ndjson"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        # Streamed as it is computed: no length known in advance.
        assert "content-length" not in response.headers
        lines = [json.loads(line) for line in response.iter_lines() if line]
    *frames, summary = lines
    whole = post(service, clip, fps=10).json()
    assert frames == whole["frames"]
    assert summary == {key: value for key, value in whole.items() if key != "frames"}


def test_csv_has_one_row_per_face_per_frame(service, videos):
    clip = write_video(videos / "rows.mov", two_faces, count=10)
    response = post(service, clip, accept="text/csv", fps=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    whole = post(service, clip, fps=10).json()
    expected = [
        (frame["time"], face["track"]) for frame in whole["frames"] for face in frame["faces"]
    ]
    assert [(float(row["time"]), int(row["track"])) for row in rows] == expected
    assert list(rows[0]) == [
        "time",
        "track",
        "x",
        "y",
        "width",
        "height",
        "emotion",
        "confidence",
        *LABELS,
    ]
    first = whole["frames"][0]["faces"][0]
    assert float(rows[0]["confidence"]) == first["confidence"]
    assert rows[0]["emotion"] == first["emotion"]


def test_a_truncated_video_answers_the_frames_that_decode_and_says_so(service, videos):
    whole = write_video(videos / "cut.mkv", pan, count=20).read_bytes()
    response = post(service, whole[: len(whole) * 6 // 10], fps=10)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["truncated"] is True
    assert 5 <= len(answer["frames"]) < 20
    assert answer["tracks"][0]["track"] == 1


def test_a_truncated_mp4_without_its_index_is_a_clear_400(service, videos):
    whole = write_video(videos / "cut.mp4", pan, count=20).read_bytes()
    response = post(service, whole[: len(whole) // 2])
    assert response.status_code == 400
    assert "truncated" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"just some text, not a video at all", "not a supported video"),
        ((DATA_DIR / "astronaut.jpg").read_bytes(), "/predict"),
        (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n", "not a supported video"),
        (b"ffconcat version 1.0\nfile '/etc/passwd'\n", "not a supported video"),
    ],
    ids=["text", "jpeg", "hls-playlist", "concat-script"],
)
def test_what_is_not_a_video_is_a_415(service, content, words):
    response = post(service, content)
    assert response.status_code == 415
    assert words in response.json()["detail"]


def test_the_decoder_never_opens_what_a_container_names():
    """The second line of defence, on FFmpeg itself: with the options every video is opened
    with, even a playlist forced through its own demuxer cannot open the file it names."""
    import av

    playlist = (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"
    )
    with (
        pytest.raises(av.error.FFmpegError),
        av.open(io.BytesIO(playlist), format="hls", options=SAFE_OPTIONS) as container,
    ):
        list(container.decode(video=0))


def test_limits_are_clear_4xx(service, videos):
    too_long = write_video(videos / "long.mkv", pan, count=40)  # 4 s > 3.5 s
    response = post(service, too_long, fps=1)
    assert response.status_code == 413
    assert "MAX_VIDEO_SECONDS" in response.json()["detail"]

    three_seconds = write_video(videos / "many.mkv", pan, count=30)
    response = post(service, three_seconds, fps=10)  # 30 frames > 25
    assert response.status_code == 422
    assert "MAX_VIDEO_FRAMES" in response.json()["detail"]
    assert post(service, three_seconds, fps=5).status_code == 200

    response = post(service, b"\x1a\x45\xdf\xa3" + bytes(1_600_000))
    assert response.status_code == 413

    wide = videos / "wide.avi"
    import cv2

    writer = cv2.VideoWriter(str(wide), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(3):
        writer.write(np.full((480, 640, 3), 128, np.uint8))
    writer.release()
    response = post(service, wide)
    assert response.status_code == 413
    assert "MAX_VIDEO_PIXELS" in response.json()["detail"]

    assert post(service, b"").status_code == 400
    response = post(service, three_seconds, accept="image/png")
    assert response.status_code == 406
    assert httpx.get(f"{service}/ready").status_code == 200


def test_a_video_that_runs_out_of_time_says_so_in_every_answer(model_path, videos):
    """VIDEO_TIMEOUT_SECONDS: a JSON answer is a 503 naming it; an NDJSON answer that has begun
    ends, before the connection would be cut, with an `error` line that names it. 1,500 frames
    of 640x480 at 10 frames/s, every one a detection (one every 0.1 s), take far longer than
    2 s on any machine: YuNet alone is ~4 ms a frame at that size on the fastest one here, and
    the whole clip took 33 s on a busy AVX2 one. (1,500 frames of 320x240 at 30 frames/s, one
    detection in three, took ~10 s there: too close to 2 s for a fast machine.)"""
    frame = place(np.full((480, 640, 3), 190, np.uint8), portrait_at(200), 220, 140)
    clip = write_video(videos / "slow.mp4", lambda index, count: frame, count=1500, rate=10)
    with running_service(model_path, settings={"VIDEO_TIMEOUT_SECONDS": "2"}) as url:
        response = post(url, clip, fps=10)
        assert response.status_code == 503
        assert "VIDEO_TIMEOUT_SECONDS" in response.json()["detail"]

        lines = post(url, clip, accept="application/x-ndjson", fps=10).text.splitlines()
        *frames, last = [json.loads(line) for line in lines]
        assert last["status"] == 503 and "VIDEO_TIMEOUT_SECONDS" in last["error"]
        assert all("time" in frame for frame in frames) and len(frames) < 1500
