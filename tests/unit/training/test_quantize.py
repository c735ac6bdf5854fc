"""The int8 graph: what the recipe quantises, and the checks that refuse a graph export must not
ship (one that answers unlike float, one this CPU's kernels compute wrongly).

Without VNNI, onnxruntime's uint8 x int8 kernels add pairs of products in saturating 16-bit
integers; 8-bit weights then overflow them where activations and weights are both large. The
first test's convolution is built to do exactly that: on an AVX2 machine (such as CI's) its
kernels disagree with its graph for 8-bit weights, and on every machine its weights must be
7-bit, which is what keeps those sums in range.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import training.quantize as quantize_module
from tests.fixtures.damage import last_layer_negated
from training.errors import ExportError
from training.quantize import (
    QuantizationRecipe,
    check_quantized,
    onnx_probabilities,
    quantize_int8,
    reference_probabilities,
)

CHANNELS = 16


def large_weight_convolution() -> bytes:
    """One 3x3 convolution over 16 channels, every weight large and positive."""
    weights = np.random.default_rng(0).uniform(0.5, 1.0, (4, CHANNELS, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "weights"], ["maps"], pads=[1, 1, 1, 1]),
            helper.make_node("Flatten", ["maps"], ["scores"]),
        ],
        "saturating",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", CHANNELS, 6, 6])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4 * 6 * 6])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def bright_images(count: int) -> np.ndarray:
    """Calibration ranges from 0 to 1, then mostly bright inputs: uint8 activations near 255."""
    rng = np.random.default_rng(1)
    images = rng.uniform(0.8, 1.0, (count, CHANNELS, 6, 6)).astype(np.float32)
    images[0] = 0.0
    return images


def int8_weights(model: bytes) -> list[np.ndarray]:
    return [
        numpy_helper.to_array(init)
        for init in onnx.load_from_string(model).graph.initializer
        if init.data_type == TensorProto.INT8 and len(init.dims) > 1  # not zero points
    ]


def test_int8_kernels_compute_what_the_int8_graph_means() -> None:
    images = bright_images(16)
    int8_model = quantize_int8(large_weight_convolution(), images)
    # 7-bit weights: 255 * 64 * 2 fits a 16-bit pair sum, on any CPU (8-bit ones reach 127).
    (weights,) = int8_weights(int8_model)
    assert 60 <= np.abs(weights.astype(int)).max() <= 64
    reference = reference_probabilities(int8_model, images)
    assert np.abs(reference).max() > 10  # real sums, not zeros
    np.testing.assert_allclose(onnx_probabilities(int8_model, images), reference, rtol=0.02)


def pixels_then_features_convolutions() -> bytes:
    """A convolution over a one-channel image, then one over its 4 feature maps (named nodes, as
    tf2onnx names every node: quantisation leaves nodes out by name)."""
    rng = np.random.default_rng(2)
    graph = helper.make_graph(
        [
            helper.make_node(
                "Conv", ["image", "pixel_weights"], ["maps"], "pixels", pads=[1, 1, 1, 1]
            ),
            helper.make_node("Relu", ["maps"], ["active"], "relu"),
            helper.make_node("Conv", ["active", "feature_weights"], ["features"], "features"),
            helper.make_node("Flatten", ["features"], ["scores"]),
        ],
        "two_layers",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4 * 4 * 4])],
        [
            numpy_helper.from_array(
                rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "pixel_weights"
            ),
            numpy_helper.from_array(
                rng.normal(size=(4, 4, 3, 3)).astype(np.float32), "feature_weights"
            ),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def quantized_convolutions(recipe: QuantizationRecipe) -> list[bool]:
    """For each convolution of the two-layer graph quantised by `recipe`: are its input and its
    weights int8 (read through DequantizeLinear) rather than float?"""
    images = np.random.default_rng(3).uniform(0, 255, (16, 1, 6, 6)).astype(np.float32)
    graph = onnx.load_from_string(
        quantize_int8(pixels_then_features_convolutions(), images, recipe)
    ).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    return [
        node.input[0] in dequantized and node.input[1] in dequantized
        for node in graph.node
        if node.op_type == "Conv"
    ]


def test_the_convolution_that_reads_the_image_stays_float() -> None:
    assert quantized_convolutions(QuantizationRecipe()) == [False, True]
    assert quantized_convolutions(QuantizationRecipe(float_first_convolution=False)) == [True, True]


def two_layer_images() -> np.ndarray:
    return np.random.default_rng(4).uniform(0, 255, (64, 1, 6, 6)).astype(np.float32)


def test_an_honest_int8_graph_passes_and_a_corrupted_one_is_refused() -> None:
    float_model, images = pixels_then_features_convolutions(), two_layer_images()
    labels = onnx_probabilities(float_model, images).argmax(axis=1)
    int8_model = quantize_int8(float_model, images)
    report = check_quantized(float_model, int8_model, images, labels)
    assert report["float_accuracy"] == 1.0 and report["agreement"] >= quantize_module.MIN_AGREEMENT
    # The same graph with its last layer's int8 weights negated: this CPU computes it faithfully
    # (the kernel check has nothing to object to), but it answers something else than float.
    corrupted = last_layer_negated(int8_model)
    with pytest.raises(ExportError, match="int8 quantisation changed the model too much"):
        check_quantized(float_model, corrupted, images, labels)


WIDE_INPUTS = 160_000


def wide_dense_layer() -> bytes:
    """One dense layer over 160,000 inputs, all weights large and positive: its uint8 x int8 sums
    (about 160,000 * 255 * 63) overflow the int32 accumulators of every CPU's int8 kernels, while
    the graph evaluated op by op sums in float. Columns differ in scale, so float ranks them."""
    rng = np.random.default_rng(5)
    weights = rng.uniform(0.9, 1.0, (WIDE_INPUTS, 4)) * np.array([1.0, 1.1, 1.2, 1.3])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["inputs", "weights"], ["scores"], "dense")],
        "overflowing",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["N", WIDE_INPUTS])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_export_refuses_int8_kernels_that_disagree_with_the_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = np.random.default_rng(6).uniform(0.8, 1.0, (16, WIDE_INPUTS)).astype(np.float32)
    images[0] = 0.0  # calibrates the range from 0
    float_model = wide_dense_layer()
    int8_model = quantize_int8(float_model, images)
    labels = onnx_probabilities(float_model, images).argmax(axis=1)
    # What the graph means ranks the columns as float does; the overflowing kernels do not.
    assert (reference_probabilities(int8_model, images).argmax(axis=1) == labels).mean() > 0.9
    # Only the kernel check can refuse here: the accuracy checks are switched off.
    monkeypatch.setattr(quantize_module, "MAX_ACCURACY_LOSS", 1.0)
    monkeypatch.setattr(quantize_module, "MIN_AGREEMENT", 0.0)
    with pytest.raises(ExportError, match="int8 kernels disagree with the int8 graph"):
        check_quantized(float_model, int8_model, images, labels)
