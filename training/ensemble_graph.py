"""The ensemble as one ONNX graph: every member a prefixed subgraph reading the same input, their
answers weighted, averaged over the mirror image if chosen, and one temperature before the softmax;
checked against the members run one by one before anything is written."""

from __future__ import annotations

import logging

import numpy as np

from contract.emotion import LABELS
from contract.runtime import model_session_options
from training.ensemble_members import BATCH, PROBABILITY_FLOOR, Member
from training.ensemble_selection import Choice
from training.errors import EnsembleError

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
"""Largest allowed difference between the ensemble graph and its members run one by one."""
MEMBER_PREFIX = "member{index}/"


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
        _prefix_symbolic_dims(graph, prefix)
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


def _prefix_symbolic_dims(graph, prefix: str) -> None:
    """Give a member's symbolic dimensions (the exporter's `unk__N`) names of their own.

    onnxruntime plans its buffers on the promise that dimensions with one name have one size.
    Each member numbers its own from zero, so in one graph a member's `unk__3` could be another's
    doubled flip batch: onnxruntime then reused a buffer of the wrong size and refused to run
    (seen with a 40x40-crop member beside whole-face ones). `add_prefix_graph` renames tensors,
    not dimensions."""
    for info in graph.value_info:
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = prefix + dim.dim_param


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


def parity_batches(faces: int) -> list[tuple[int, int]]:
    """Start and end of each onnxruntime call in the parity check: batch sizes that change from
    call to call (1, 2, 3, 5, ... up to `BATCH`, then back), as the service's faces per request
    do, on one session. A graph whose buffers onnxruntime plans wrongly fails on such a
    sequence, where equal batches can pass."""
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, BATCH, 7, BATCH, 1]
    bounds, start, step = [], 0, 0
    while start < faces:
        end = min(faces, start + sizes[step % len(sizes)])
        bounds.append((start, end))
        start, step = end, step + 1
    return bounds


def check_parity(model, images: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Max |ensemble graph - members one by one| on the validation faces, in batches of changing
    size; refuses above the tolerance, or where onnxruntime fails, so a wrongly wired graph is
    never written."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

    session = ort.InferenceSession(
        model.SerializeToString(), model_session_options(), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    try:
        actual = np.concatenate(
            [session.run(None, {name: images[s:e]})[0] for s, e in parity_batches(len(images))]
        )
    except (Fail, RuntimeException) as error:
        raise EnsembleError(
            f"parity check failed: onnxruntime could not run the ensemble graph ({error}); the "
            "model was not written"
        ) from error
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
