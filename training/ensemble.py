"""Exported members in, one `emotion.onnx` out: an ensemble chosen and calibrated on validation.

Members are exported models: each carries the contract and the record of the validation faces it
was chosen on. They must have held out the very same faces (data file, fraction, split seed,
limit), or one member's validation faces were another's training faces and every figure here
would flatter it; and the same contract, or one crop would be fed to networks trained on another.

Each member's answers on those faces come from onnxruntime running its file as it is (int8 graph,
temperature and flip averaging included). What a member adds is measured, not assumed: greedy
forward selection with replacement (Caruana et al., 2004) adds, round after round, the member that
makes the ensemble most accurate on validation (calibrated negative log-likelihood breaks ties),
and the best prefix of those rounds is kept, so a member that adds nothing gets no weight (a
prefix with more members must be more accurate, not only better calibrated: each costs a face its
own inference).
Members are combined in the log domain (their softmax inputs, weighted: a weighted geometric mean
of their probabilities) or as a weighted mean of probabilities, whichever validation prefers.
A member's own temperature is left in place: it only rescales that member's logits, which the
weights and the ensemble's own temperature absorb. Flip averaging on top of the ensemble is folded
in only if it raises validation accuracy (it doubles the cost; members that already flip gain
nothing from it), and one temperature is fitted on validation (`training.calibrate`).

The output is one graph with every chosen member as a prefixed subgraph, the same input and
output names and contract metadata as a single exported model, plus the members' ids, weights and
validation figures. Float members are quantised to int8 only where the existing guards pass and
the ensemble's validation accuracy does not drop; int8 members are reused as they are. The file
is written, atomically, only once onnxruntime running the whole graph agrees with the members run
one by one; `ensemble.json` beside it keeps the evidence.

This module ties the steps together; `ensemble_members` reads and scores members,
`ensemble_selection` chooses, `ensemble_graph` builds and checks the graph.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from contract.emotion import (
    CODE_VERSION_KEY,
    CREATED_KEY,
    DATASET_KEY,
    ENSEMBLE_KEY,
    METADATA_KEY,
    METRICS_KEY,
    QUANTIZATION_KEY,
)
from contract.provenance import code_version
from training.data import Split
from training.ensemble_graph import build_graph, check_parity
from training.ensemble_members import (
    answers,
    check_members,
    distinct,
    flipped,
    graph_input,
    load_member,
    member_figures,
    quantized_member,
)
from training.ensemble_selection import (
    COMBINES,
    DEFAULT_ROUNDS,
    Choice,
    Combine,
    accuracy_and_nll,
    choose,
    combined_scores,
    flip_averaged,
    members_used,
    reference_probabilities,
)
from training.errors import EnsembleError

log = logging.getLogger(__name__)

EVIDENCE_FILE = "ensemble.json"


@dataclass(frozen=True)
class Result:
    path: Path
    evidence: dict[str, Any]


def ensemble(
    paths: list[Path],
    data: Path,
    out: Path,
    rounds: int = DEFAULT_ROUNDS,
    combines: tuple[Combine, ...] = COMBINES,
    equal_weights: bool = False,
    quantize: bool = True,
    max_members: int | None = None,
) -> Result:
    """Build, check and write the ensemble of the models at `paths` to `out`."""
    from training.compare import unseen_validation
    from training.export import set_metadata, write_atomically

    if not paths:
        raise EnsembleError("name at least one member")
    if rounds < 1:
        raise EnsembleError(f"--rounds must be at least 1, got {rounds}")
    if max_members is not None and max_members < 1:
        raise EnsembleError(f"--max-members must be at least 1, got {max_members}")
    if max_members is not None and equal_weights:
        raise EnsembleError("--equal-weights keeps every member: it takes no --max-members")
    candidates = distinct([load_member(Path(path)) for path in paths])
    split, contract = check_members(candidates)
    members = candidates
    faces, copies_left_out = unseen_validation(split, data)
    images = graph_input(faces.x)
    log.info(
        "%d candidate members on %d validation faces (%s)",
        len(members),
        len(faces),
        split.describe(),
    )
    plain = [answers(member, images) for member in members]
    mirrored = [answers(member, flipped(images)) for member in members]
    alone = [member_figures(a, faces.y) for a in plain]
    for member, figures in zip(members, alone, strict=True):
        log.info("%s: validation accuracy %.4f", member.path, figures["accuracy"])

    choice = choose(plain, mirrored, faces.y, rounds, combines, equal_weights, max_members)
    used = members_used(choice.counts)
    members, plain, mirrored = (
        [members[i] for i in used],
        [plain[i] for i in used],
        [mirrored[i] for i in used],
    )
    choice = replace(choice, counts=tuple(choice.counts[i] for i in used))
    quantization = {"members": {m.model_id: ("int8" if m.int8 else "float") for m in members}}
    if quantize and not all(member.int8 for member in members):
        members, plain, mirrored, choice, quantization = quantize_where_free(
            members, plain, mirrored, choice, faces
        )

    opset = max(e.version for e in members[0].proto.opset_import if e.domain in ("", "ai.onnx"))
    model = build_graph(members, choice.weights, choice, opset)
    evidence = {
        "validation": {
            "split": asdict(split),
            "faces": len(faces),
            "copies_left_out": copies_left_out,
        },
        "candidates": [
            {"id": m.model_id, "file": str(m.path), "validation": figures, "training": m.training}
            for m, figures in zip(candidates, alone, strict=True)
        ],
        "selection": {
            "method": "equal weights, in the order given" if equal_weights else "greedy",
            "rounds": len(choice.steps),
            "max_members": max_members,
            "chosen_round": choice.chosen_round,
            "by_combine": choice.by_combine,
            "combine": choice.combine,
            "steps": [
                {
                    "added": str(candidates[step.added].path),
                    "members": sum(1 for c in step.counts if c),
                    "accuracy": step.accuracy,
                    "nll": step.nll,
                }
                for step in choice.steps
            ],
        },
        "flip": choice.flip | {"chosen": choice.flip_tta},
        "temperature": choice.temperature,
        "ensemble": {"accuracy": choice.accuracy, "nll": choice.nll},
        "members": [
            {
                "id": m.model_id,
                "name": m.name,
                "weight": float(w),
                "validation": member_figures(a, faces.y),
                "quantization": "int8" if m.int8 else "float",
                "training": m.training,
            }
            for m, w, a in zip(members, choice.weights, plain, strict=True)
        ],
        "quantization": quantization,
    }
    expected = reference_probabilities(plain, mirrored if choice.flip_tta else None, choice)
    evidence["parity"] = check_parity(model, images, expected)
    metadata = {
        "split": asdict(split),
        "combine": choice.combine,
        "flip_tta": choice.flip_tta,
        "temperature": choice.temperature,
        "validation": evidence["ensemble"] | {"faces": len(faces)},
        "members": evidence["members"],
    }
    set_metadata(
        model,
        {
            METADATA_KEY: contract.to_json(),
            DATASET_KEY: split.dataset_sha256,
            CREATED_KEY: datetime.now(UTC).isoformat(timespec="seconds"),
            CODE_VERSION_KEY: code_version(),
            ENSEMBLE_KEY: json.dumps(metadata, sort_keys=True),
            METRICS_KEY: json.dumps({"validation": {"accuracy": choice.accuracy}}),
            QUANTIZATION_KEY: json.dumps(quantization, sort_keys=True),
        },
    )
    out = Path(out)
    write_atomically(model, out)
    evidence_path = out.parent / EVIDENCE_FILE
    evidence_path.write_text(json.dumps(evidence, indent=2, sort_keys=True) + "\n")
    log.info(
        "ensemble written to %s (%.1f MB), evidence %s",
        out,
        out.stat().st_size / 1e6,
        evidence_path,
    )
    return Result(out, evidence)


def quantize_where_free(members, plain, mirrored, choice: Choice, faces: Split):
    """Float members in int8, heaviest first, each only where the export's guards pass and the
    ensemble then loses no validation accuracy: a member's rounding can cost the ensemble more,
    or less, than it costs the member alone."""
    images = graph_input(faces.x)
    members, plain, mirrored = list(members), list(plain), list(mirrored)
    float_accuracy, checks = choice.accuracy, {}
    for index in np.argsort(-choice.weights, kind="stable"):
        if members[index].int8:
            continue
        quantized = quantized_member(members[index], faces)
        if quantized is None:
            checks[members[index].model_id] = {"kept": "float (the int8 guards refused it)"}
            continue
        int8, report = quantized
        trial_plain, trial_mirrored = list(plain), list(mirrored)
        trial_plain[index], trial_mirrored[index] = (
            answers(int8, images),
            answers(int8, flipped(images)),
        )
        scored = flip_averaged(trial_plain, trial_mirrored) if choice.flip_tta else trial_plain
        accuracy, nll, temperature = accuracy_and_nll(
            combined_scores(scored, choice.weights, choice.combine), faces.y
        )
        kept = accuracy >= choice.accuracy
        checks[members[index].model_id] = report | {
            "ensemble_accuracy": accuracy,
            "kept": "int8" if kept else "float (the ensemble lost accuracy)",
        }
        log.info(
            "%s in int8: ensemble validation accuracy %.4f against %.4f: %s",
            members[index].path,
            accuracy,
            choice.accuracy,
            "kept" if kept else "left float",
        )
        if kept:
            members[index], plain, mirrored = int8, trial_plain, trial_mirrored
            choice = replace(choice, accuracy=accuracy, nll=nll, temperature=temperature)
    summary = {
        "members": {m.model_id: ("int8" if m.int8 else "float") for m in members},
        "float_accuracy": float_accuracy,
        "accuracy": choice.accuracy,
        "checks": checks,
    }
    return members, plain, mirrored, choice, summary


def report(result: Result) -> str:
    """The selection as a reader checks it: members alone, then the ensemble round by round."""
    evidence = result.evidence
    lines = [
        f"validation: {evidence['validation']['faces']} faces "
        f"({evidence['validation']['copies_left_out']} copies of training faces left out)",
        "",
        f"{'accuracy':>9}{'NLL':>8}  candidate",
    ]
    for candidate in evidence["candidates"]:
        figures = candidate["validation"]
        lines.append(f"{figures['accuracy']:>9.4f}{figures['nll']:>8.4f}  {candidate['file']}")
    selection = evidence["selection"]
    for name, figures in selection["by_combine"].items():
        lines.append(
            f"averaging {name}: accuracy {figures['accuracy']:.4f}, NLL {figures['nll']:.4f}, "
            f"{figures['members']} member(s)"
        )
    lines += [
        "",
        f"{selection['method']}{_cap(selection.get('max_members'))} "
        f"({selection['combine']} averaged):",
        f"{'round':<7}{'members':>8}{'accuracy':>10}{'NLL':>8}  added",
    ]
    chosen = selection["chosen_round"]
    for number, step in enumerate(selection["steps"][:chosen], start=1):
        lines.append(
            f"{number:<7}{step['members']:>8}{step['accuracy']:>10.4f}{step['nll']:>8.4f}  "
            f"{step['added']}"
        )
    if chosen < selection["rounds"]:
        lines.append(
            f"rounds {chosen + 1}-{selection['rounds']} found no better ensemble: kept {chosen}"
        )
    flip = evidence["flip"]
    lines += [
        "",
        f"flip averaging: {flip['accuracy_flip']:.4f} against {flip['accuracy_plain']:.4f} "
        f"without: {'folded in' if flip['chosen'] else 'left out'}",
        f"temperature {evidence['temperature']:.4f}; ensemble validation accuracy "
        f"{evidence['ensemble']['accuracy']:.4f}, NLL {evidence['ensemble']['nll']:.4f}",
        "members: "
        + ", ".join(
            f"{m['name']} ({m['id'][:12]}…, weight {m['weight']:.3f}, {m['quantization']})"
            for m in evidence["members"]
        ),
        f"parity: {evidence['parity']['max_difference']:.2e} over {evidence['parity']['faces']} "
        f"faces; written to {result.path}",
    ]
    return "\n".join(lines)


def _cap(max_members: int | None) -> str:
    return "" if max_members is None else f", at most {max_members} members"
