"""Static int8 quantisation of the exported float graph.

Why: on one CPU thread the convolutions dominate per-face latency, and onnxruntime's int8
kernels run them about three times faster than float32 at no measurable accuracy cost on this
network, which is what lets a wider network fit the service's latency budget. Only the
convolutions (all but the first: see below) and the dense layers are quantised; the head
(temperature, softmax, flip averaging) stays in float, so the calibrated probabilities keep their
full resolution.

The activation ranges are calibrated on validation faces, never on test/. The quantised graph is
only accepted if it keeps the float graph's answers on validation, and if onnxruntime's int8
kernels on this CPU compute what the graph says (see `check_quantized`).

Weights are quantised to 7 bits (`reduce_range`). On x86 CPUs without VNNI (AVX2 only, or
AVX-512 without VNNI), onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW,
which adds each pair of products into a saturating 16-bit integer: 255 * 127 * 2 overflows it, so
8-bit weights give wrong sums wherever activations and weights are both large, and the same model
answers differently from CPU to CPU. With 7-bit weights a pair of products fits (255 * 64 * 2 <
32768) on every CPU, at the same speed; uint8 weights would fit too, but run slower.

The convolutions that read the image itself stay in float. Such a filter sees one channel
through only 9 weights, so the lost bit costs it most, and its error reaches every later layer;
it does about 0.5 % of the network's multiply-adds, so float costs no measurable time.

Activation ranges are the 99.999th percentile of what the calibration faces produce, not their
maximum: finer steps for the bulk of ReLU outputs make up for the weights' lost bit.

Each of these choices was measured against the alternatives (`bench/quantization.py`); the runs
and their figures are in docs/experiments.md (2026-12-01).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.runtime import model_session_options
from training.errors import ExportError

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
CALIBRATION_IMAGES = 512
MAX_ACCURACY_LOSS = 0.005
"""Largest drop in validation accuracy (absolute) the int8 graph may cost against float."""
MIN_AGREEMENT = 0.95
"""Smallest share of validation faces on which int8 and float must pick the same emotion."""
MIN_KERNEL_AGREEMENT = 0.99
"""Smallest share of validation faces on which this CPU's int8 kernels must pick the same emotion
as the int8 graph evaluated op by op (see `reference_probabilities`)."""


@dataclass(frozen=True)
class QuantizationRecipe:
    """How the float graph becomes int8. The defaults are what export ships; the other values
    exist so that `bench/quantization.py` can measure each choice against them."""

    weight_bits: int = 7
    """7 fits onnxruntime's 16-bit pair sums on every x86 CPU; 8 only on VNNI ones."""
    float_first_convolution: bool = True
    float_dense: bool = False
    calibration: str = "percentile"
    """Activation ranges: "percentile" (99.999th) or "minmax"."""


class _Faces:
    """onnxruntime's calibration reader: one face at a time, as the service feeds the graph."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self._feeds = iter([{input_name: image[None]} for image in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def single_channel_convolutions(model) -> list[str]:
    """Names of the convolutions whose filters each read one input channel: the image's."""
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        # Nodes are left out by name; an unnamed one (tf2onnx names them all) is quantised.
        if node.op_type != "Conv" or not node.name or node.input[1] not in shapes:
            continue
        group = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
        if shapes[node.input[1]][1] * group == 1:
            names.append(node.name)
    return names


def dense_layers(model) -> list[str]:
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZED_OPS and node.op_type != "Conv"
    ]


def quantize_int8(
    float_model: bytes, images: np.ndarray, recipe: QuantizationRecipe = QuantizationRecipe()
) -> bytes:
    """`float_model` with int8 convolutions (but the first) and dense layers, ranges calibrated
    on `images`.

    `images` are float32 N x 48 x 48 x 1 in the graph's own input scale (raw 0-255 pixels).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    metadata = {prop.key: prop.value for prop in onnx.load_from_string(float_model).metadata_props}
    with tempfile.TemporaryDirectory(prefix="quantize-") as scratch:
        float_path, prepared_path, int8_path = (
            Path(scratch) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx")
        )
        float_path.write_bytes(float_model)
        # Folds and fuses (batch norm into conv, for one) so that each convolution gets one
        # quantisation range, not one per unfused step. Symbolic shape inference is skipped:
        # the batch dimension is the only dynamic one and onnx's own inference covers the rest.
        quant_pre_process(str(float_path), str(prepared_path), skip_symbolic_shape=True)
        prepared = onnx.load(str(prepared_path))
        input_name = prepared.graph.input[0].name
        # The percentile calibrator prints its bin counts; the export logs what matters itself.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared_path),
                str(int8_path),
                _Faces(input_name, images[:CALIBRATION_IMAGES]),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=[
                    *(
                        single_channel_convolutions(prepared)
                        if recipe.float_first_convolution
                        else []
                    ),
                    *(dense_layers(prepared) if recipe.float_dense else []),
                ],
                per_channel=True,
                reduce_range={7: True, 8: False}[recipe.weight_bits],
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method={
                    "percentile": CalibrationMethod.Percentile,
                    "minmax": CalibrationMethod.MinMax,
                }[recipe.calibration],
            )
        quantized = onnx.load(str(int8_path))
    quantized.ClearField("metadata_props")
    for key, value in metadata.items():
        quantized.metadata_props.add(key=key, value=value)
    return quantized.SerializeToString()


def onnx_probabilities(model: bytes, images: np.ndarray, optimized: bool = True) -> np.ndarray:
    import onnxruntime as ort

    options = model_session_options()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: images[i : i + 256]})[0] for i in range(0, len(images), 256)]
    )


def reference_probabilities(model: bytes, images: np.ndarray) -> np.ndarray:
    """What the int8 graph means, whatever the CPU: with graph optimisations off, onnxruntime does
    not fuse QuantizeLinear / DequantizeLinear into int8 kernels but evaluates them one by one, in
    float, so no integer sum can overflow."""
    return onnx_probabilities(model, images, optimized=False)


def check_quantized(
    float_model: bytes, int8_model: bytes, images: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Compare int8 with float on validation faces; refuse the int8 graph if it costs accuracy,
    or if this CPU's int8 kernels compute something else than the graph means."""
    float_probabilities = onnx_probabilities(float_model, images)
    int8_probabilities = onnx_probabilities(int8_model, images)
    reference = reference_probabilities(int8_model, images)
    float_choice, int8_choice = float_probabilities.argmax(1), int8_probabilities.argmax(1)
    report = {
        "faces": len(images),
        "float_accuracy": float((float_choice == labels).mean()),
        "int8_accuracy": float((int8_choice == labels).mean()),
        "agreement": float((float_choice == int8_choice).mean()),
        "max_probability_difference": float(np.abs(float_probabilities - int8_probabilities).max()),
        "kernel_agreement": float((reference.argmax(1) == int8_choice).mean()),
        "max_kernel_difference": float(np.abs(reference - int8_probabilities).max()),
    }
    loss = report["float_accuracy"] - report["int8_accuracy"]
    if loss > MAX_ACCURACY_LOSS or report["agreement"] < MIN_AGREEMENT:
        raise ExportError(
            f"int8 quantisation changed the model too much on {len(images)} validation faces: "
            f"accuracy {report['float_accuracy']:.4f} -> {report['int8_accuracy']:.4f}, "
            f"same answer on {report['agreement']:.1%} (needs a loss <= {MAX_ACCURACY_LOSS} "
            f'and >= {MIN_AGREEMENT:.0%}); set [export] quantize = "none" to ship float32'
        )
    if report["kernel_agreement"] < MIN_KERNEL_AGREEMENT:
        raise ExportError(
            f"this CPU's int8 kernels disagree with the int8 graph on "
            f"{1 - report['kernel_agreement']:.1%} of {len(images)} validation faces (needs "
            f">= {MIN_KERNEL_AGREEMENT:.0%} agreement): its integer sums overflow here, so the "
            'model would answer differently on other CPUs; set [export] quantize = "none"'
        )
    return report
