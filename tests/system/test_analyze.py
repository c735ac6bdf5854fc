"""`python -m service.analyze` on a video and a folder made from the portrait."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest

from harness.videos import frames, pan, write_video
from service.analyze import main


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "pan.mkv", pan, count=20)


def test_a_video_gives_csv_plot_and_annotated_video(tmp_path, clip, model_path):
    out, plot, annotated = tmp_path / "e.csv", tmp_path / "e.png", tmp_path / "a.mp4"
    argv = [str(clip), "--out", str(out), "--plot", str(plot), "--annotated", str(annotated)]
    assert main([*argv, "--fps", "10", "--model", str(model_path)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["time"] for row in rows if row["track"] == "1"] == [str(i / 10) for i in range(20)]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(plot)).shape[1] > 500
    with av.open(str(annotated)) as video:
        decoded = list(video.decode(video=0))
    assert len(decoded) == 20 and (decoded[0].width, decoded[0].height) == (320, 240)


def test_json_is_the_document_the_endpoint_answers(tmp_path, clip, model_path):
    out = tmp_path / "e.json"
    assert main([str(clip), "--out", str(out), "--model", str(model_path)]) == 0
    answer = json.loads(out.read_text())
    assert answer["frames_analysed"] == len(answer["frames"]) == 10  # 2 s at the default 5 fps
    assert answer["tracks"][0]["track"] == 1 and answer["truncated"] is False
    assert {"duration", "width", "height", "model", "fps"} <= set(answer)


def test_a_folder_of_images_is_taken_as_frames(tmp_path, model_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames(pan, 6)):
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    out = tmp_path / "e.csv"
    assert main([str(folder), "--out", str(out), "--fps", "2", "--model", str(model_path)]) == 0
    rows = [row for row in csv.DictReader(out.open()) if row["track"] == "1"]
    assert [float(row["time"]) for row in rows] == [0, 0.5, 1, 1.5, 2, 2.5]


def test_the_command_runs_with_a_progress_bar_and_refuses_a_non_video(tmp_path, clip, model_path):
    command = [sys.executable, "-m", "service.analyze", "--model", str(model_path)]
    done = subprocess.run([*command, str(clip)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "10/10" in done.stderr and "frame/s" in done.stderr  # tqdm's bar, with its rate
    assert "track 1" in done.stdout
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    refused = subprocess.run([*command, str(text)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "not a supported video" in refused.stderr
