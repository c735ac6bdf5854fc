"""Genuinely bad graphs for the export's guards to refuse: real models with real damage, so that a
guard which compared a graph with itself, or checked nothing, would let them through."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


def _replace(initializer: onnx.TensorProto, array: np.ndarray) -> None:
    initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))


def _last_quantized_layer(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The last convolution or dense layer reading int8 weights, and the DequantizeLinear that
    reads them."""
    initializers = {init.name for init in graph.initializer}
    dequantizing = {
        node.output[0]: node
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers
    }
    layer = [
        node
        for node in graph.node
        if node.op_type in WEIGHTED_OPS and node.input[1] in dequantizing
    ][-1]
    return layer, dequantizing[layer.input[1]]


def last_layer_answering(int8_model: bytes, emotion: int) -> bytes:
    """`int8_model` with the int8 weights of its last layer overwritten so that output `emotion`
    gets every input's largest positive weight and the others the largest negative one, and
    their scale made 100 times larger: after ReLU features, that output wins on every face with
    any feature lit, whatever the layer's bias. A corrupted graph that answers one emotion."""
    model = onnx.load_from_string(int8_model)
    layer, dequantize = _last_quantized_layer(model.graph)
    initializers = {init.name: init for init in model.graph.initializer}
    weights, scale = initializers[dequantize.input[0]], initializers[dequantize.input[1]]
    array = numpy_helper.to_array(weights)
    output_axis = 0 if layer.op_type == "Conv" else array.ndim - 1
    transposed = any(a.name == "transB" and a.i for a in layer.attribute)
    if layer.op_type == "Gemm" and transposed:
        output_axis = 0
    peak = int(np.abs(array.astype(np.int16)).max())
    corrupted = np.full(array.shape, -peak, np.int8)
    chosen = [slice(None)] * array.ndim
    chosen[output_axis] = emotion
    corrupted[tuple(chosen)] = peak
    _replace(weights, corrupted)
    _replace(scale, numpy_helper.to_array(scale) * np.float32(100))
    return model.SerializeToString()


def last_layer_negated(int8_model: bytes) -> bytes:
    """`int8_model` with the int8 weights of its last quantised layer negated: a graph whose
    integer weights were corrupted, so it ranks the outputs upside down (where there is no bias).
    It is still a valid int8 graph, which this CPU's kernels compute faithfully."""
    model = onnx.load_from_string(int8_model)
    _, dequantize = _last_quantized_layer(model.graph)
    (weights,) = [init for init in model.graph.initializer if init.name == dequantize.input[0]]
    array = numpy_helper.to_array(weights)
    assert array.dtype == np.int8, array.dtype
    _replace(weights, np.clip(-array.astype(np.int16), -127, 127).astype(np.int8))
    return model.SerializeToString()


def float_weights_perturbed(model: onnx.ModelProto, scale: float = 0.05) -> None:
    """Add noise to the largest float weight tensor of `model`, in place: a float graph that is
    no longer the network it was converted from."""
    floats = [init for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT]
    largest = max(floats, key=lambda init: int(np.prod(init.dims)))
    array = numpy_helper.to_array(largest)
    noise = np.random.default_rng(0).normal(0, scale * float(np.abs(array).max()), array.shape)
    _replace(largest, (array + noise).astype(np.float32))
