"""The answers and figures the docs quote from the shipped model, rewritten from the model:

    .venv/bin/python -m scripts.quotes [--model MODEL]

Shipping a model replaces artifacts/emotion.onnx and its evidence (training/README.md, "7.
Ship"). The README, docs/video.md and the model card quote that model where a reader compares
them with what the service answers, and tests hold them to it. This rewrites those places from
the model itself, asked through the service's own app in process:

- README.md: the headline figures (from the `metrics.json` beside the model), the `/predict`
  answer on the portrait and the `/predict/video` answer on the panning clip;
- docs/video.md: the same video answer, as JSON and as CSV rows;
- artifacts/MODEL_CARD.md: the model id, its size, when and by which code it was made, the
  headline row and the per-class table.

The prose around them (what changed and why it shipped) is still written by hand. A place that
is no longer where this expects it stops the script with its name, rather than being skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from contract.emotion import LABELS
from harness.photos import PORTRAIT_FILE
from harness.videos import pan, write_video
from service.app import create_app
from service.settings import DEFAULT_MODEL_PATH, PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
VIDEO_DOC = PROJECT_ROOT / "docs" / "video.md"
MODEL_CARD = PROJECT_ROOT / "artifacts" / "MODEL_CARD.md"

VIDEO_CLIP_FRAMES = 10
"""The README's clip: `write_video(Path('pan.mp4'), pan, count=10)`, one second at 10 frames/s."""
VIDEO_FPS = 5
SCORES = ("precision", "recall", "f1")


class QuoteNotFound(ValueError):
    """A doc no longer has a quoted answer or figure where this script looks for it."""


@dataclass(frozen=True)
class Quotes:
    """What the model answers to the docs' examples, and the figures its evaluation wrote."""

    model_id: str
    size_mb: float
    created: str
    """The day training wrote the file (YYYY-MM-DD)."""
    code_version: str
    metrics: dict
    portrait: dict
    video: dict
    video_csv: list[str]


def gather(model_path: Path) -> Quotes:
    metrics = json.loads((model_path.parent / "metrics.json").read_text())
    with (
        TestClient(create_app(Settings(model_path=model_path))) as client,
        tempfile.TemporaryDirectory() as folder,
    ):
        portrait = client.post(
            "/predict", files={"file": (PORTRAIT_FILE.name, PORTRAIT_FILE.read_bytes())}
        )
        clip = write_video(Path(folder) / "pan.mp4", pan, count=VIDEO_CLIP_FRAMES).read_bytes()
        upload = {"file": ("pan.mp4", clip)}
        video = client.post(f"/predict/video?fps={VIDEO_FPS}", files=upload)
        video_csv = client.post(
            f"/predict/video?fps={VIDEO_FPS}", files=upload, headers={"Accept": "text/csv"}
        )
        described = client.get("/model")
    for answer in (portrait, video, video_csv, described):
        answer.raise_for_status()
    return Quotes(
        model_id=portrait.json()["model"],
        size_mb=model_path.stat().st_size / 1e6,
        created=described.json()["created"][:10],
        code_version=described.json()["code_version"],
        metrics=metrics,
        portrait=portrait.json(),
        video=video.json(),
        video_csv=video_csv.text.splitlines(),
    )


def refresh_readme(text: str, quotes: Quotes) -> str:
    text = _substitute(
        r"\*\*accuracy [\d.]+, macro-F1 [\d.]+, expected calibration error [\d.]+\*\*",
        lambda _: headline(quotes.metrics),
        text,
        "the headline figures",
    )
    text = _substitute(
        r"(## Try it.*?```json\n)(.*?)(```)",
        lambda match: match.group(1) + portrait_block(quotes.portrait) + match.group(3),
        text,
        "the JSON answer under '## Try it'",
        flags=re.DOTALL,
    )
    return refresh_video_example(text, quotes)


def refresh_video_example(text: str, quotes: Quotes) -> str:
    """The video answer's lines that carry the model's figures; the rest is fixed by the clip."""
    first_frame = quotes.video["frames"][0]

    def frame_line(match: re.Match) -> str:
        frame = json.dumps(first_frame)
        if '"probabilities": {...}' in match.group(0):
            for face in first_frame["faces"]:
                frame = frame.replace(json.dumps(face["probabilities"]), "{...}")
        return f"{match.group(1)}{frame},"

    text = _substitute(
        r'^(\s*)"tracks": \[.*\],$',
        lambda match: f'{match.group(1)}"tracks": {json.dumps(quotes.video["tracks"])},',
        text,
        "the video answer's tracks",
    )
    text = _substitute(
        r'^(\s*)"model": "[0-9a-f]{64}",$',
        lambda match: f'{match.group(1)}"model": "{quotes.model_id}",',
        text,
        "the video answer's model id",
    )
    text = _substitute(
        r'^(\s*)\{"time": 0\.0, "faces": .*\]\},$', frame_line, text, "the first frame"
    )
    header = re.escape(quotes.video_csv[0])
    if re.search(rf"^\s*{header}$", text, re.MULTILINE):
        text = _substitute(
            rf"^(\s*){header}\n((?:\s*[\d.]+,\d+,.*\n)+)",
            lambda match: csv_rows(match, quotes.video_csv),
            text,
            "the CSV rows",
        )
    return text


def refresh_model_card(text: str, quotes: Quotes) -> str:
    text = _substitute(
        r"(\| model id \(sha256 of the file\) \| `)[0-9a-f]{64}(`)",
        lambda match: match.group(1) + quotes.model_id + match.group(2),
        text,
        "the model id",
    )
    text = _substitute(
        r"^(\| size \| )[\d.]+ MB",
        lambda match: f"{match.group(1)}{quotes.size_mb:.1f} MB",
        text,
        "the size row",
    )
    text = _substitute(
        r"^(\| created \| )\d{4}-\d{2}-\d{2}( .*\(code `)[0-9a-f]+(`\))",
        lambda match: (
            match.group(1) + quotes.created + match.group(2) + quotes.code_version + match.group(3)
        ),
        text,
        "the created row",
    )
    accuracy, macro_f1, ece = _headline_figures(quotes.metrics)
    text = _substitute(
        r"^\| \*\*[\d.]+\*\* \| \*\*[\d.]+\*\* \| \*\*[\d.]+\*\* \|$",
        lambda _: f"| **{accuracy}** | **{macro_f1}** | **{ece}** |",
        text,
        "the headline row",
    )
    for label in LABELS:
        scores = quotes.metrics["per_class"][label]
        row = " | ".join(f"{scores[key]:.3f}" for key in SCORES)
        text = _substitute(
            rf"^\| {label} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ \|$",
            lambda _, quoted=f"| {label} | {row} | {scores['support']} |": quoted,
            text,
            f"the per-class row of {label}",
        )
    return text


def headline(metrics: dict) -> str:
    accuracy, macro_f1, ece = _headline_figures(metrics)
    return f"**accuracy {accuracy}, macro-F1 {macro_f1}, expected calibration error {ece}**"


def portrait_block(answer: dict) -> str:
    """The answer as the README lays it out: one face, its box and probabilities kept short."""
    (face,) = answer["faces"]
    box, scores = face["box"], face["probabilities"]
    first, second = LABELS[:4], LABELS[4:]
    return "\n".join(
        [
            "{",
            '  "faces": [',
            "    {",
            f'      "box": {json.dumps(box)},',
            f'      "detected": {json.dumps(face["detected"])},',
            f'      "emotion": {json.dumps(face["emotion"])},',
            f'      "confidence": {face["confidence"]},',
            '      "probabilities": {',
            "        " + ", ".join(f'"{label}": {scores[label]}' for label in first) + ",",
            "        " + ", ".join(f'"{label}": {scores[label]}' for label in second),
            "      }",
            "    }",
            "  ],",
            f'  "faces_found": {answer["faces_found"]},',
            f'  "width": {answer["width"]},',
            f'  "height": {answer["height"]},',
            f'  "model": "{answer["model"]}"',
            "}",
            "",
        ]
    )


def csv_rows(match: re.Match, csv: list[str]) -> str:
    """As many rows as the doc shows, at its indentation."""
    indent = match.group(1)
    shown = len(match.group(2).splitlines())
    return "".join(f"{indent}{line}\n" for line in csv[: shown + 1])


def _headline_figures(metrics: dict) -> tuple[str, str, str]:
    keys = ("accuracy", "macro_f1", "expected_calibration_error")
    return tuple(f"{metrics[key]:.3f}" for key in keys)


def _substitute(
    pattern: str,
    replacement: Callable[[re.Match], str],
    text: str,
    what: str,
    flags: int = re.MULTILINE,
) -> str:
    new, count = re.subn(pattern, replacement, text, flags=flags)
    if count == 0:
        raise QuoteNotFound(f"found no {what}")
    return new


def refresh_files(quotes: Quotes) -> list[Path]:
    """Rewrite the three docs; returns the ones that changed."""
    changed = []
    for path, refresh in (
        (README, refresh_readme),
        (VIDEO_DOC, refresh_video_example),
        (MODEL_CARD, refresh_model_card),
    ):
        text = path.read_text()
        try:
            new = refresh(text, quotes)
        except QuoteNotFound as error:
            raise QuoteNotFound(f"{path.relative_to(PROJECT_ROOT)}: {error}") from None
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args(argv)
    try:
        changed = refresh_files(gather(args.model))
    except QuoteNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in changed:
        print(f"rewrote {path.relative_to(PROJECT_ROOT)}")
    if not changed:
        print("the docs already quote this model")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
