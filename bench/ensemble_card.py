"""The model card's ensemble table, from what `python -m training ensemble` wrote and measured here.

    python bench/ensemble_card.py --model runs/ensemble/emotion.onnx [--runs 300]

Reads `ensemble.json` beside the model (members, their validation figures, the greedy rounds)
and measures the per-face cost at batch 1 on one onnxruntime thread (p50, as
`bench/model_latency.py` does) of each member file and of the ensemble graph. Prints markdown:
the members, the ensemble's validation accuracy as members are added, and what a face costs.
Run it on a quiet machine: the latencies name it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.model_latency import per_face_ms, session_on_one_thread  # noqa: E402
from service.cpus import machine_description  # noqa: E402
from training.ensemble import EVIDENCE_FILE  # noqa: E402


def p50_ms(model: Path, runs: int) -> float | None:
    """Per-face p50 at batch 1, or None where the file is not at hand any more."""
    if not model.is_file():
        return None
    return per_face_ms(session_on_one_thread(model), 1, runs)["p50_ms"]


def card(model: Path, runs: int) -> str:
    evidence = json.loads((model.parent / EVIDENCE_FILE).read_text())
    weights = {member["id"]: member["weight"] for member in evidence["members"]}
    lines = [
        f"Validation: {evidence['validation']['faces']} faces held out by every member "
        f"(copies of training faces left out); latency: batch 1, one onnxruntime thread, "
        f"{machine_description()}.",
        "",
        "| member | id | trained | validation accuracy | weight | ms/face (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for candidate in evidence["candidates"]:
        training = next(
            (m["training"] for m in evidence["members"] if m["id"] == candidate["id"]), {}
        )
        where = ", ".join(str(training[key]) for key in ("backend", "machine") if key in training)
        cost = p50_ms(Path(candidate["file"]), runs)
        lines.append(
            f"| {Path(candidate['file']).name} | {candidate['id'][:12]} | {where or '-'} | "
            f"{candidate['validation']['accuracy']:.4f} | {weights.get(candidate['id'], 0):.3f} | "
            f"{'-' if cost is None else cost} |"
        )
    selection = evidence["selection"]
    lines += [
        "",
        f"Selection: {selection['method']}, {selection['combine']} averaged; as members are added:",
        "",
        "| round | member added | members | validation accuracy | NLL |",
        "|---|---|---|---|---|",
    ]
    for number, step in enumerate(selection["steps"][: selection["chosen_round"]], start=1):
        lines.append(
            f"| {number} | {Path(step['added']).name} | {step['members']} | "
            f"{step['accuracy']:.4f} | {step['nll']:.4f} |"
        )
    flip = "flip averaged, " if evidence["flip"]["chosen"] else ""
    lines += [
        "",
        f"Ensemble ({flip}temperature {evidence['temperature']:.3f}): validation accuracy "
        f"{evidence['ensemble']['accuracy']:.4f}, {p50_ms(model, runs)} ms a face (p50), "
        f"{model.stat().st_size / 1e6:.1f} MB.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an ensemble's .onnx")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(card(args.model, args.runs))


if __name__ == "__main__":
    main()
