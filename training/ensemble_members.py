"""An ensemble's members: exported files read back with the validation split and contract they
record, and their answers on validation faces from onnxruntime running each file as it is."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from contract.emotion import TRAINING_KEY, ModelContract
from contract.runtime import model_session_options
from training.data import Split, ValidationSplit
from training.errors import EnsembleError, ExportError

log = logging.getLogger(__name__)

PROBABILITY_FLOOR = 1e-30
"""Probabilities are clipped here before their log: a mean of softmax outputs is never 0 in exact
arithmetic, but can underflow in float32."""
BATCH = 256
"""Faces per onnxruntime call when scoring members: bounds the activations held at once."""


def member_name(path: Path) -> str:
    """A member as a reader finds it: its folder where the file is called emotion.onnx, as every
    export and every member in training/members/ is; else its file name."""
    if path.name == "emotion.onnx" and path.parent.name:
        return path.parent.name
    return path.name


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
    def name(self) -> str:
        """No host path: this goes into the ensemble's metadata, which `GET /model` serves."""
        return member_name(self.path)

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
        with_outputs(member.proto, names).SerializeToString(),
        model_session_options(),
        providers=["CPUExecutionProvider"],
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


def member_figures(member: Answers, labels: np.ndarray) -> dict[str, float]:
    """A member's own accuracy and NLL on validation, as its file answers."""
    probabilities = np.maximum(member.probabilities, PROBABILITY_FLOOR)
    return {
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "nll": float(-np.log(probabilities[np.arange(len(labels)), labels]).mean()),
    }


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
