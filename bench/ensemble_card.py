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
import time
from pathlib import Path

import numpy as np
from model_latency import per_face_ms, session_on_one_thread

from contract.provenance import machine_description
from training.ensemble import EVIDENCE_FILE
from training.ensemble_members import member_name


def cost(model: Path, runs: int) -> str:
    """Per-face p50 at batch 1, wall and CPU ms ("-" where the file is not at hand any more).

    The CPU time is what a face costs whatever else the machine runs: on a busy machine a run
    longer than the scheduler's slice waits for its next slice, which inflates the wall time of a
    larger graph out of proportion."""
    if not model.is_file():
        return "-"
    session = session_on_one_thread(model)
    wall = per_face_ms(session, 1, runs)["p50_ms"]
    image = np.random.default_rng(0).integers(0, 256, (1, 48, 48, 1)).astype(np.float32)
    name = session.get_inputs()[0].name
    cpu = []
    for _ in range(runs):
        started = time.thread_time()
        session.run(None, {name: image})
        cpu.append((time.thread_time() - started) * 1000)
    return f"{wall:.2f} / {float(np.percentile(cpu, 50)):.2f}"


def trained_where(training: dict) -> str:
    """Where a member was trained, from its export's record: each working period's backend and
    accelerator (or CPU), once each; older exports record one backend and machine."""
    sessions = training.get("sessions") or [training]
    places = [
        " on ".join(
            str(part)
            for part in (
                session.get("backend"),
                session.get("accelerator") or session.get("machine"),
            )
            if part
        )
        for session in sessions
        if isinstance(session, dict)
    ]
    return "; ".join(dict.fromkeys(place for place in places if place)) or "-"


def card(model: Path, runs: int) -> str:
    evidence = json.loads((model.parent / EVIDENCE_FILE).read_text())
    weights = {member["id"]: member["weight"] for member in evidence["members"]}
    lines = [
        f"Validation: {evidence['validation']['faces']} faces held out by every member "
        f"(copies of training faces left out); latency: batch 1, one onnxruntime thread, "
        f"{machine_description()}.",
        "",
        "| member | id | trained | validation accuracy | weight | ms/face p50, wall / CPU |",
        "|---|---|---|---|---|---|",
    ]
    for candidate in evidence["candidates"]:
        training = candidate.get("training") or next(
            (m["training"] for m in evidence["members"] if m["id"] == candidate["id"]), {}
        )
        where = trained_where(training)
        lines.append(
            f"| {member_name(Path(candidate['file']))} | {candidate['id'][:12]} | {where or '-'} | "
            f"{candidate['validation']['accuracy']:.4f} | {weights.get(candidate['id'], 0):.3f} | "
            f"{cost(Path(candidate['file']), runs)} |"
        )
    selection = evidence["selection"]
    lines += [
        "",
        f"Selection: {selection.get('method', 'greedy')}, {selection['combine']} averaged; "
        "as members are added:",
        "",
        "| round | member added | members | validation accuracy | NLL |",
        "|---|---|---|---|---|",
    ]
    for number, step in enumerate(selection["steps"][: selection["chosen_round"]], start=1):
        lines.append(
            f"| {number} | {member_name(Path(step['added']))} | {step['members']} | "
            f"{step['accuracy']:.4f} | {step['nll']:.4f} |"
        )
    flip = "flip averaged, " if evidence["flip"]["chosen"] else ""
    lines += [
        "",
        f"Ensemble ({flip}temperature {evidence['temperature']:.3f}): validation accuracy "
        f"{evidence['ensemble']['accuracy']:.4f}, {cost(model, runs)} ms a face (p50, wall / CPU), "
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
