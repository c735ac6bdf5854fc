"""int8 products that overflow 16 bits on CPUs without VNNI come out exact wherever this project
runs a model: the service's session, and training's scoring and quantisation checks.

On a CPU with VNNI, onnxruntime's default kernels are exact too, so the first two tests bite only
on AVX2 machines (an AVX2 EPYC answered 1,048,544 here without the option); the last holds the
service to the option on every machine."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from contract.runtime import PRECISE_INT8, model_session_options
from service.model import EmotionModel
from training.quantize import onnx_probabilities

DEPTH = 64
EXACT = 255 * 127 * DEPTH
"""Every input 255 (uint8) times every weight 127 (int8): pairs of products sum to 64,770, past
the 32,767 a 16-bit register holds."""


def overflowing_int8_model() -> bytes:
    """x (N x 64, float) quantised to uint8, times a 64 x 8 int8 weight of 127s: a QDQ graph
    that onnxruntime fuses into its U8S8 matrix product."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "scale", "w_zero"], ["w_dq"]),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"]),
    ]
    constants = [
        numpy_helper.from_array(np.array(1.0, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
        numpy_helper.from_array(np.full((DEPTH, 8), 127, np.int8), "w_q"),
    ]
    graph = helper.make_graph(
        nodes,
        "overflow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, DEPTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


INPUT = np.full((3, DEPTH), 255, np.float32)


def test_a_session_with_the_model_options_computes_int8_exactly():
    session = ort.InferenceSession(
        overflowing_int8_model(), model_session_options(), providers=["CPUExecutionProvider"]
    )
    assert np.all(session.run(None, {"x": INPUT})[0] == EXACT)


def test_training_scores_int8_graphs_as_the_service_runs_them():
    assert np.all(onnx_probabilities(overflowing_int8_model(), INPUT) == EXACT)


def test_the_service_s_session_asks_for_exact_int8(model_path):
    options = EmotionModel.load(model_path).session.get_session_options()
    assert options.get_session_config_entry(PRECISE_INT8[0]) == PRECISE_INT8[1]
