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
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.special import softmax

from service.contract import (
    CODE_VERSION_KEY,
    CREATED_KEY,
    DATASET_KEY,
    ENSEMBLE_KEY,
    LABELS,
    METADATA_KEY,
    METRICS_KEY,
    QUANTIZATION_KEY,
    TRAINING_KEY,
    ModelContract,
)
from training.calibrate import fit_temperature, negative_log_likelihood
from training.data import Split, ValidationSplit
from training.errors import EnsembleError, ExportError

log = logging.getLogger(__name__)

Combine = Literal["logits", "probabilities"]
COMBINES: tuple[Combine, ...] = ("logits", "probabilities")
EVIDENCE_FILE = "ensemble.json"
DEFAULT_ROUNDS = 20
"""Greedy rounds; with replacement, a member added k times of n rounds weighs k/n."""
PROBABILITY_FLOOR = 1e-30
"""Probabilities are clipped here before their log: a mean of softmax outputs is never 0 in exact
arithmetic, but can underflow in float32."""
NLL_TOLERANCE = 1e-4
"""A later greedy prefix as accurate as an earlier one must lower the NLL by more than this to be
kept: a member is not added for a rounding-level gain."""
PARITY_TOLERANCE = 1e-4
"""Largest allowed difference between the ensemble graph and its members run one by one."""
BATCH = 256
MEMBER_PREFIX = "member{index}/"


@dataclass
class Member:
    """One exported model, as the ensemble reads it."""

    path: Path
    model_id: str
    proto: Any = field(repr=False)
    """Its onnx.ModelProto."""
    contract: ModelContract
    split: ValidationSplit
    training: dict[str, Any]
    """What its export recorded about its training (seed, backend, machine, prediction)."""
    logits_name: str | None
    """The tensor its final softmax reads (logits / temperature), if the graph ends in one."""

    @property
    def int8(self) -> bool:
        return any(node.op_type == "QuantizeLinear" for node in self.proto.graph.node)

    @property
    def input_name(self) -> str:
        return self.proto.graph.input[0].name

    @property
    def output_name(self) -> str:
        return self.proto.graph.output[0].name


@dataclass(frozen=True)
class Answers:
    """A member's answers on a set of faces: its softmax inputs and outputs."""

    logits: np.ndarray
    probabilities: np.ndarray

    def averaged_with(self, other: Answers) -> Answers:
        return Answers(
            (self.logits + other.logits) / 2, (self.probabilities + other.probabilities) / 2
        )


@dataclass(frozen=True)
class Step:
    """The ensemble after one greedy round."""

    added: int
    """Index into the candidates of the member added this round."""
    counts: tuple[int, ...]
    accuracy: float
    nll: float
    """Negative log-likelihood at the temperature fitted for this step."""


@dataclass(frozen=True)
class Choice:
    """What validation chose."""

    combine: Combine
    counts: tuple[int, ...]
    flip_tta: bool
    temperature: float
    accuracy: float
    nll: float
    steps: list[Step]
    chosen_round: int
    """1-based: the greedy round whose ensemble is kept."""
    by_combine: dict[str, dict[str, float]]
    flip: dict[str, float]

    @property
    def weights(self) -> np.ndarray:
        counts = np.asarray(self.counts, dtype=np.float64)
        return counts / counts.sum()


# --- members ------------------------------------------------------------------------------------


def softmax_input(graph) -> str | None:
    """The tensor the graph's output is the softmax of (through Identity nodes), if any."""
    producers = {output: node for node in graph.node for output in node.output}
    name = graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type == "Identity":
            name = node.input[0]
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        return node.input[0] if node.op_type == "Softmax" and axis in (-1, 1) else None
    return None


def load_member(path: Path) -> Member:
    """`path` through the service's own checks, and the validation split it records."""
    import onnx

    from training.compare import validation_split_of
    from training.evaluate import load_model

    model = load_model(path)
    try:
        split = validation_split_of(model)
    except Exception as error:
        raise EnsembleError(str(error)) from error
    proto = onnx.load(str(path))
    metadata = model.session.get_modelmeta().custom_metadata_map
    return Member(
        path=Path(path),
        model_id=model.model_id,
        proto=proto,
        contract=model.contract,
        split=split,
        training=_member_training(metadata),
        logits_name=softmax_input(proto.graph),
    )


def _member_training(metadata: dict[str, str]) -> dict[str, Any]:
    """The parts of a member's own record worth carrying: how and where it was trained."""
    try:
        training = json.loads(metadata.get(TRAINING_KEY, "{}"))
    except ValueError:
        return {}
    if not isinstance(training, dict):
        return {}
    keys = ("seed", "split_seed", "backend", "machine", "sessions", "fit_seconds", "teacher")
    return {key: training[key] for key in keys if key in training}


def check_members(members: list[Member]) -> tuple[ValidationSplit, ModelContract]:
    """The members' common split and contract; refused if any member differs in either."""
    first = members[0]
    for member in members[1:]:
        if member.split != first.split:
            raise EnsembleError(
                f"{member.path} held out other validation faces than {first.path} "
                f"({member.split.describe()} against {first.split.describe()}; data sha256 "
                f"{member.split.dataset_sha256[:12]}… against {first.split.dataset_sha256[:12]}…):"
                " one member's validation faces were the other's training faces, so choosing "
                "weights there would flatter it. Ensemble members trained on the same data file "
                "with the same split seed, validation_fraction and --limit."
            )
        if member.contract != first.contract:
            raise EnsembleError(
                f"{member.path} has another contract than {first.path} ({member.contract} "
                f"against {first.contract}): one graph takes one kind of crop, so members must "
                "share labels, input size, pixel scaling and crop margin"
            )
    return first.split, first.contract


def distinct(members: list[Member]) -> list[Member]:
    """One candidate per model: a file given twice (under any name) is one member."""
    seen: dict[str, Member] = {}
    for member in members:
        if member.model_id in seen:
            log.info(
                "%s is the same model as %s (id %s…): one candidate",
                member.path,
                seen[member.model_id].path,
                member.model_id[:12],
            )
        seen.setdefault(member.model_id, member)
    return list(seen.values())


def with_outputs(proto, names: list[str]):
    """A copy of `proto` whose graph outputs are `names` (float tensors)."""
    import onnx

    exposed = copy.deepcopy(proto)
    del exposed.graph.output[:]
    for name in names:
        exposed.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return exposed


def answers(member: Member, images: np.ndarray) -> Answers:
    """`member`'s softmax inputs and probabilities on `images` (N x 48 x 48 x 1, raw pixels),
    from onnxruntime running its file as it is."""
    import onnxruntime as ort

    names = [member.output_name] + ([member.logits_name] if member.logits_name else [])
    session = ort.InferenceSession(
        with_outputs(member.proto, names).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    outputs = [
        session.run(names, {member.input_name: images[start : start + BATCH]})
        for start in range(0, len(images), BATCH)
    ]
    probabilities = np.concatenate([o[0] for o in outputs]).astype(np.float64)
    if member.logits_name:
        logits = np.concatenate([o[1] for o in outputs]).astype(np.float64)
    else:
        logits = np.log(np.maximum(probabilities, PROBABILITY_FLOOR))
    return Answers(logits, probabilities)


def graph_input(faces: np.ndarray) -> np.ndarray:
    """uint8 N x 48 x 48 faces -> the graph's float32 N x 48 x 48 x 1 raw pixels (without
    importing Keras, which `training.train` does for its own copy of this)."""
    return faces[..., None].astype(np.float32)


def flipped(images: np.ndarray) -> np.ndarray:
    """Mirror images (N x H x W x C) left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


# --- combining and choosing ---------------------------------------------------------------------


def combined_scores(members: list[Answers], weights: np.ndarray, combine: Combine) -> np.ndarray:
    """The ensemble's scores before its temperature: softmax(scores / T) is its answer."""
    present = [(w, a) for w, a in zip(weights, members, strict=True) if w > 0]
    if combine == "logits":
        return sum(w * a.logits for w, a in present)
    mean = sum(w * a.probabilities for w, a in present)
    return np.log(np.maximum(mean, PROBABILITY_FLOOR))


def accuracy_and_nll(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Accuracy, and the NLL at the temperature fitted on these faces, and that temperature."""
    temperature = fit_temperature(scores, labels)
    accuracy = float((scores.argmax(axis=1) == labels).mean())
    return accuracy, negative_log_likelihood(scores, labels, temperature), temperature


def better(accuracy: float, nll: float, than: tuple[float, float] | None) -> bool:
    if than is None:
        return True
    return accuracy > than[0] or (accuracy == than[0] and nll < than[1] - NLL_TOLERANCE)


def greedy_selection(
    candidates: list[Answers], labels: np.ndarray, combine: Combine, rounds: int
) -> list[Step]:
    """Caruana's forward selection with replacement: each round adds the candidate that makes the
    ensemble best on validation (accuracy, then calibrated NLL)."""
    counts = np.zeros(len(candidates), dtype=int)
    steps = []
    for _ in range(rounds):
        best: tuple[int, float, float] | None = None
        for index in range(len(candidates)):
            trial = counts.copy()
            trial[index] += 1
            scores = combined_scores(candidates, trial / trial.sum(), combine)
            accuracy, nll, _ = accuracy_and_nll(scores, labels)
            if best is None or better(accuracy, nll, best[1:]):
                best = (index, accuracy, nll)
        index, accuracy, nll = best
        counts[index] += 1
        steps.append(Step(index, tuple(int(c) for c in counts), accuracy, nll))
    return steps


def in_given_order(candidates: list[Answers], labels: np.ndarray, combine: Combine) -> list[Step]:
    """Every candidate with equal weight, and the ensemble as each one joins in the order given."""
    steps = []
    for index in range(len(candidates)):
        counts = np.array([1] * (index + 1) + [0] * (len(candidates) - index - 1))
        scores = combined_scores(candidates, counts / counts.sum(), combine)
        accuracy, nll, _ = accuracy_and_nll(scores, labels)
        steps.append(Step(index, tuple(int(c) for c in counts), accuracy, nll))
    return steps


def best_prefix(steps: list[Step]) -> Step:
    """The earliest round no later round beats: members added after it are left out. Every
    member costs a face its own inference, so a round with more members must be more accurate
    to win, not merely better calibrated (the temperature is refitted anyway)."""
    chosen = steps[0]
    for step in steps[1:]:
        if len(_used(step.counts)) > len(_used(chosen.counts)):
            wins = step.accuracy > chosen.accuracy
        else:
            wins = better(step.accuracy, step.nll, _key(chosen))
        if wins:
            chosen = step
    return chosen


def choose(
    plain: list[Answers],
    mirrored: list[Answers],
    labels: np.ndarray,
    rounds: int = DEFAULT_ROUNDS,
    combines: tuple[Combine, ...] = COMBINES,
    equal_weights: bool = False,
) -> Choice:
    """Weights, combination, flip averaging and temperature, all chosen on validation."""
    by_combine: dict[str, tuple[list[Step], Step]] = {}
    for combine in combines:
        if equal_weights:
            steps = in_given_order(plain, labels, combine)
            by_combine[combine] = (steps, steps[-1])
        else:
            steps = greedy_selection(plain, labels, combine, rounds)
            by_combine[combine] = (steps, best_prefix(steps))
    combine = combines[0]
    for other in combines[1:]:
        if better(*_key(by_combine[other][1]), _key(by_combine[combine][1])):
            combine = other
    steps, chosen = by_combine[combine]
    weights = np.asarray(chosen.counts, dtype=np.float64) / sum(chosen.counts)

    both = flip_averaged(plain, mirrored)
    flip_accuracy, flip_nll, flip_temperature = accuracy_and_nll(
        combined_scores(both, weights, combine), labels
    )
    accuracy, nll, temperature = accuracy_and_nll(combined_scores(plain, weights, combine), labels)
    # Flip averaging doubles the cost of every face, so it must win on accuracy outright.
    flip_tta = flip_accuracy > accuracy
    return Choice(
        combine=combine,
        counts=chosen.counts,
        flip_tta=flip_tta,
        temperature=flip_temperature if flip_tta else temperature,
        accuracy=flip_accuracy if flip_tta else accuracy,
        nll=flip_nll if flip_tta else nll,
        steps=steps,
        chosen_round=steps.index(chosen) + 1,
        by_combine={
            name: {"accuracy": best.accuracy, "nll": best.nll, "members": len(_used(best.counts))}
            for name, (_, best) in by_combine.items()
        },
        flip={
            "accuracy_plain": accuracy,
            "accuracy_flip": flip_accuracy,
            "nll_plain": nll,
            "nll_flip": flip_nll,
        },
    )


def _key(step: Step) -> tuple[float, float]:
    return step.accuracy, step.nll


def _used(counts: tuple[int, ...]) -> list[int]:
    return [index for index, count in enumerate(counts) if count]


def reference_probabilities(
    plain: list[Answers], mirrored: list[Answers] | None, choice: Choice
) -> np.ndarray:
    """What the ensemble graph must answer, from its members' answers one by one."""
    members = plain if mirrored is None else flip_averaged(plain, mirrored)
    scores = combined_scores(members, choice.weights, choice.combine)
    return softmax(scores / choice.temperature, axis=1)


# --- the graph ----------------------------------------------------------------------------------


def build_graph(members: list[Member], weights: np.ndarray, choice: Choice, opset: int):
    """One ONNX graph: every member as a prefixed subgraph reading the same input, their outputs
    combined with `weights` as `choice` says, over the face and its mirror image if chosen."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    input_name, output_name = members[0].input_name, members[0].output_name
    nodes, initializers = [], []
    member_input = input_name
    if choice.flip_tta:
        initializers += [
            numpy_helper.from_array(np.array(value, dtype=np.int64), name)
            for name, value in (
                ("ensemble/flip_starts", [-1]),
                ("ensemble/flip_ends", [np.iinfo(np.int64).min]),
                ("ensemble/flip_axes", [2]),
                ("ensemble/flip_steps", [-1]),
                ("ensemble/halves_shape", [2, -1, len(LABELS)]),
                ("ensemble/first", 0),
                ("ensemble/second", 1),
            )
        ]
        nodes += [
            helper.make_node(
                "Slice",
                [input_name, *(f"ensemble/flip_{p}" for p in ("starts", "ends", "axes", "steps"))],
                ["ensemble/mirrored"],
                name="ensemble/mirror",
            ),
            helper.make_node(
                "Concat",
                [input_name, "ensemble/mirrored"],
                ["ensemble/both"],
                axis=0,
                name="ensemble/both",
            ),
        ]
        member_input = "ensemble/both"

    weighted, value_info = [], []
    for index, (member, weight) in enumerate(zip(members, weights, strict=True)):
        prefix = MEMBER_PREFIX.format(index=index)
        graph = onnx.compose.add_prefix_graph(member.proto.graph, prefix)
        nodes.append(
            helper.make_node(
                "Identity", [member_input], [prefix + member.input_name], name=prefix + "input"
            )
        )
        nodes += graph.node
        initializers += graph.initializer
        value_info += graph.value_info
        source = member.logits_name if choice.combine == "logits" else member.output_name
        if source is None:  # no softmax to read through: its log-probabilities stand in
            nodes += [
                helper.make_node(
                    "Max",
                    [prefix + member.output_name, "ensemble/floor"],
                    [prefix + "floored"],
                    name=prefix + "floor",
                ),
                helper.make_node(
                    "Log", [prefix + "floored"], [prefix + "logits"], name=prefix + "log"
                ),
            ]
            source = "logits"
        initializers.append(
            numpy_helper.from_array(np.array(weight, dtype=np.float32), prefix + "weight")
        )
        nodes.append(
            helper.make_node(
                "Mul",
                [prefix + source, prefix + "weight"],
                [prefix + "weighted"],
                name=prefix + "weighted",
            )
        )
        weighted.append(prefix + "weighted")

    initializers += [
        numpy_helper.from_array(np.array(PROBABILITY_FLOOR, dtype=np.float32), "ensemble/floor"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "ensemble/half"),
        numpy_helper.from_array(
            np.array(1 / choice.temperature, dtype=np.float32), "ensemble/inverse_temperature"
        ),
    ]
    nodes.append(helper.make_node("Sum", weighted, ["ensemble/sum"], name="ensemble/sum"))
    combined = "ensemble/sum"
    if choice.flip_tta:
        nodes += [
            helper.make_node(
                "Reshape",
                [combined, "ensemble/halves_shape"],
                ["ensemble/halves"],
                name="ensemble/halves",
            ),
            helper.make_node(
                "Gather",
                ["ensemble/halves", "ensemble/first"],
                ["ensemble/face"],
                axis=0,
                name="ensemble/face",
            ),
            helper.make_node(
                "Gather",
                ["ensemble/halves", "ensemble/second"],
                ["ensemble/mirror_answer"],
                axis=0,
                name="ensemble/mirror_answer",
            ),
            helper.make_node(
                "Add",
                ["ensemble/face", "ensemble/mirror_answer"],
                ["ensemble/pair"],
                name="ensemble/pair",
            ),
            helper.make_node(
                "Mul",
                ["ensemble/pair", "ensemble/half"],
                ["ensemble/flip_mean"],
                name="ensemble/flip_mean",
            ),
        ]
        combined = "ensemble/flip_mean"
    if choice.combine == "probabilities":
        nodes += [
            helper.make_node(
                "Max", [combined, "ensemble/floor"], ["ensemble/floored"], name="ensemble/floor"
            ),
            helper.make_node("Log", ["ensemble/floored"], ["ensemble/log"], name="ensemble/log"),
        ]
        combined = "ensemble/log"
    nodes += [
        helper.make_node(
            "Mul",
            [combined, "ensemble/inverse_temperature"],
            ["ensemble/scaled"],
            name="ensemble/temperature",
        ),
        helper.make_node(
            "Softmax", ["ensemble/scaled"], [output_name], axis=-1, name="ensemble/softmax"
        ),
    ]
    read = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes,
        "emotion_ensemble",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 48, 48, 1])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializer=[tensor for tensor in initializers if tensor.name in read],
        value_info=value_info,
    )
    model = helper.make_model(graph, opset_imports=_opsets(members, opset))
    model.ir_version = max(member.proto.ir_version for member in members)
    model.producer_name = "emotion-training"
    onnx.checker.check_model(model)
    return model


def _opsets(members: list[Member], opset: int):
    """The members' operator sets, which must agree on the standard domain's version."""
    from onnx import helper

    versions: dict[str, int] = {}
    for member in members:
        for entry in member.proto.opset_import:
            versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    standard = {
        e.version for m in members for e in m.proto.opset_import if e.domain in ("", "ai.onnx")
    }
    if len(standard) > 1:
        raise EnsembleError(
            f"the members were exported with different opsets ({sorted(standard)}): export them "
            "with one [export] opset"
        )
    versions[""] = standard.pop() if standard else opset
    versions.pop("ai.onnx", None)
    return [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]


# --- quantisation -------------------------------------------------------------------------------


def quantized_member(member: Member, faces: Split) -> tuple[Member, dict[str, Any]] | None:
    """`member` in int8 if the export's guards accept it on validation, else None."""
    import onnx

    from training.quantize import check_quantized, quantize_int8

    images = graph_input(faces.x)
    float_model = member.proto.SerializeToString()
    try:
        int8_model = quantize_int8(float_model, images)
        report = check_quantized(float_model, int8_model, images, faces.y)
    except ExportError as error:
        log.info("%s stays float: %s", member.path, error)
        return None
    proto = onnx.load_from_string(int8_model)
    return replace(member, proto=proto, logits_name=softmax_input(proto.graph)), report


# --- the whole step -----------------------------------------------------------------------------


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
) -> Result:
    """Build, check and write the ensemble of the models at `paths` to `out`."""
    from training.compare import unseen_validation
    from training.export import code_version, set_metadata, write_atomically

    if not paths:
        raise EnsembleError("name at least one member")
    if rounds < 1:
        raise EnsembleError(f"--rounds must be at least 1, got {rounds}")
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

    choice = choose(plain, mirrored, faces.y, rounds, combines, equal_weights)
    used = _used(choice.counts)
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
            {"id": m.model_id, "file": str(m.path), "validation": figures}
            for m, figures in zip(candidates, alone, strict=True)
        ],
        "selection": {
            "method": "equal weights, in the order given" if equal_weights else "greedy",
            "rounds": len(choice.steps),
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
                "file": m.path.name,
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


def member_figures(member: Answers, labels: np.ndarray) -> dict[str, float]:
    """A member's own accuracy and NLL on validation, as its file answers."""
    probabilities = np.maximum(member.probabilities, PROBABILITY_FLOOR)
    return {
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "nll": float(-np.log(probabilities[np.arange(len(labels)), labels]).mean()),
    }


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


def flip_averaged(plain: list[Answers], mirrored: list[Answers]) -> list[Answers]:
    """Each member's answers averaged over the faces and their mirror images."""
    return [p.averaged_with(m) for p, m in zip(plain, mirrored, strict=True)]


def check_parity(model, images: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Max |ensemble graph - members one by one| on the validation faces; refuses above the
    tolerance, so a wrongly wired graph is never written."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    actual = np.concatenate(
        [session.run(None, {name: images[s : s + BATCH]})[0] for s in range(0, len(images), BATCH)]
    )
    if actual.shape != expected.shape:
        raise EnsembleError(
            f"the ensemble graph answers shape {actual.shape}, not {expected.shape}"
        )
    difference = float(np.abs(actual - expected).max())
    agreement = float((actual.argmax(axis=1) == expected.argmax(axis=1)).mean())
    if not np.isfinite(difference) or difference > PARITY_TOLERANCE:
        raise EnsembleError(
            f"parity check failed: the ensemble graph and its members run one by one differ by "
            f"{difference:.2e} (tolerance {PARITY_TOLERANCE:.0e}); the model was not written"
        )
    log.info("parity: max |ensemble - members| = %.2e over %d faces", difference, len(images))
    return {"faces": len(images), "max_difference": difference, "same_answer": agreement}


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
        f"{selection['method']} ({selection['combine']} averaged):",
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
            f"{m['file']} ({m['id'][:12]}…, weight {m['weight']:.3f}, {m['quantization']})"
            for m in evidence["members"]
        ),
        f"parity: {evidence['parity']['max_difference']:.2e} over {evidence['parity']['faces']} "
        f"faces; written to {result.path}",
    ]
    return "\n".join(lines)
