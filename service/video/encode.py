"""Video answers as text: NDJSON lines and CSV rows, written one frame at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from pydantic import BaseModel

from service.video.schemas import AnalysedFrame

NDJSON = "application/x-ndjson"
CSV = "text/csv"
JSON = "application/json"


def ndjson_line(answer: BaseModel) -> bytes:
    return answer.model_dump_json().encode() + b"\n"


def csv_header(labels: Iterable[str]) -> list[str]:
    return ["time", "track", "x", "y", "width", "height", "emotion", "confidence", *labels]


def csv_rows(frame: AnalysedFrame, labels: Iterable[str]) -> list[list[object]]:
    """One row per face of the frame; a frame without faces has no row."""
    labels = tuple(labels)
    rows: list[list[object]] = []
    for face in frame.faces:
        box = face.box
        probabilities = face.probabilities.model_dump()
        rows.append(
            [
                frame.time,
                face.track,
                box.x,
                box.y,
                box.width,
                box.height,
                face.emotion,
                face.confidence,
                *(probabilities[label] for label in labels),
            ]
        )
    return rows


def csv_text(rows: Iterable[list[object]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()
