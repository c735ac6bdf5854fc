"""scripts/quotes.py: the docs' quoted answers and figures, rewritten from the shipped model
through the service's own app, so that shipping a model does not mean copying numbers by hand."""

from __future__ import annotations

import json
import re

import pytest

from contract.emotion import LABELS
from scripts.quotes import (
    MODEL_CARD,
    README,
    VIDEO_DOC,
    QuoteNotFound,
    Quotes,
    gather,
    refresh_model_card,
    refresh_readme,
    refresh_video_example,
)
from service.settings import DEFAULT_MODEL_PATH
from tests.integration.test_shipped_model import KERNEL_TOLERANCE

HEADLINE_KEYS = ("accuracy", "macro_f1", "expected_calibration_error")


@pytest.fixture(scope="module")
def quotes() -> Quotes:
    return gather(DEFAULT_MODEL_PATH)


def stale(text: str) -> str:
    """The doc as an older model left it: other ids, other probabilities and figures."""
    text = re.sub(r"[0-9a-f]{64}", "0" * 64, text)
    text = re.sub(r"\d{4}-\d{2}-\d{2} by", "2000-01-01 by", text)
    text = re.sub(r"\(code `[0-9a-f]+`\)", "(code `000000000000`)", text)
    text = re.sub(r"\b\d+\.\d MB", "0.1 MB", text)
    return re.sub(r"\b0\.\d{3,6}\b", "0.123", text)


def quoted_portrait(readme: str) -> dict:
    return json.loads(re.search(r"## Try it.*?```json\n(.*?)```", readme, re.DOTALL).group(1))


def quoted_tracks(doc: str) -> list[dict]:
    return json.loads(re.search(r'^\s*"tracks": (\[.*\]),$', doc, re.MULTILINE).group(1))


def test_a_stale_readme_is_rewritten_to_what_the_model_answers(quotes: Quotes) -> None:
    refreshed = refresh_readme(stale(README.read_text()), quotes)
    assert quoted_portrait(refreshed) == quotes.portrait
    assert quoted_tracks(refreshed) == quotes.video["tracks"]
    assert f'"model": "{quotes.model_id}",' in refreshed
    first_face = quotes.video["frames"][0]["faces"][0]
    assert f'"confidence": {first_face["confidence"]}, "probabilities": {{...}}' in refreshed
    accuracy = f"{quotes.metrics['accuracy']:.3f}"
    assert f"**accuracy {accuracy}, macro-F1 " in refreshed


def test_a_stale_video_doc_gets_the_models_json_and_csv_rows(quotes: Quotes) -> None:
    refreshed = refresh_video_example(stale(VIDEO_DOC.read_text()), quotes)
    assert quoted_tracks(refreshed) == quotes.video["tracks"]
    assert json.dumps(quotes.video["frames"][0]) + "," in refreshed
    header_at = refreshed.index(quotes.video_csv[0])
    shown = refreshed[header_at:].splitlines()[1:3]
    assert [row.strip() for row in shown] == quotes.video_csv[1:3]


def test_a_stale_model_card_gets_the_models_id_headline_and_classes(quotes: Quotes) -> None:
    refreshed = refresh_model_card(stale(MODEL_CARD.read_text()), quotes)
    assert f"| model id (sha256 of the file) | `{quotes.model_id}` |" in refreshed
    assert f"| size | {DEFAULT_MODEL_PATH.stat().st_size / 1e6:.1f} MB:" in refreshed
    created = re.search(r"^\| created \| (\S+) by .*\(code `(\w+)`\)", refreshed, re.MULTILINE)
    assert created.groups() == (quotes.created, quotes.code_version)
    figures = (quotes.metrics[key] for key in HEADLINE_KEYS)
    assert "| " + " | ".join(f"**{figure:.3f}**" for figure in figures) + " |" in refreshed
    for label in LABELS:
        scores = quotes.metrics["per_class"][label]
        row = " | ".join(f"{scores[key]:.3f}" for key in ("precision", "recall", "f1"))
        assert f"| {label} | {row} | {scores['support']} |" in refreshed


def test_a_quote_that_moved_is_named_rather_than_skipped(quotes: Quotes) -> None:
    readme = README.read_text().replace("## Try it", "## Trying it")
    with pytest.raises(QuoteNotFound, match="Try it"):
        refresh_readme(readme, quotes)


@pytest.mark.parametrize("doc", [README, VIDEO_DOC], ids=lambda path: path.name)
def test_the_docs_video_example_is_the_shipped_models(doc, quotes: Quotes) -> None:
    """Only the probabilities may differ, by what another CPU's int8 kernels move them."""
    text = doc.read_text()
    assert f'"model": "{quotes.model_id}",' in text
    for quoted, track in zip(quoted_tracks(text), quotes.video["tracks"], strict=True):
        assert quoted.pop("probabilities") == pytest.approx(
            track["probabilities"], abs=KERNEL_TOLERANCE
        )
        assert quoted == {key: value for key, value in track.items() if key != "probabilities"}
