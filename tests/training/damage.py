"""Genuinely bad graphs for the export's guards to refuse: real models with real damage, so that a
guard which compared a graph with itself, or checked nothing, would let them through."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


def _replace(initializer: onnx.TensorProto, array: np.ndarray) -> None:
    initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))


def last_layer_negated(int8_model: bytes) -> bytes:
    """`int8_model` with the int8 weights of its last quantised layer negated: a graph whose
    integer weights were corrupted, so it ranks the emotions upside down. It is still a valid
    int8 graph, which this CPU's kernels compute faithfully."""
    model = onnx.load_from_string(int8_model)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    dequantized = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers
    }
    last = [
        node for node in graph.node if node.op_type in WEIGHTED_OPS and node.input[1] in dequantized
    ][-1]
    weights = initializers[dequantized[last.input[1]]]
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
