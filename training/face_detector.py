"""MediaPipe's BlazeFace -> `artifacts/face_detector.onnx`, reproducibly, from a pinned wheel.

    python -m training.face_detector [--model full_range|short_range] [--out PATH] [--wheel WHL]

MediaPipe publishes its face detectors only inside its wheels (PyPI is the one registry this
project installs from), as TensorFlow Lite files. This downloads the pinned wheel with pip
(`--no-deps`, so nothing is installed), checks its sha256 and the model file's, converts the
model with tf2onnx and writes it only after onnxruntime has been shown to agree with TensorFlow
Lite on the real portrait, under a temporary name renamed into place. The file carries its
provenance and everything the service needs to decode it (`contract.detector`).

The full-range model ships with sparse weights (TFLite `DENSIFY` operators), which tf2onnx
cannot read: they are made dense first, with TensorFlow Lite's own densified values. Weights
are stored as float16 (as in the TFLite file, so nothing is lost) and cast once at load.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from contract.detector import (
    METADATA_KEY,
    AnchorOptions,
    BoxCorrection,
    DetectorMetadata,
    DetectorMetadataError,
)
from training.errors import ExportError
from training.export import set_metadata, write_atomically
from training.pinned_wheel import PinnedWheel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "artifacts" / "face_detector.onnx"
PORTRAIT = REPO / "tests" / "data" / "astronaut.jpg"

MEDIAPIPE_VERSION = "0.10.14"
WHEEL = PinnedWheel(
    requirement=f"mediapipe=={MEDIAPIPE_VERSION}",
    filename=f"mediapipe-{MEDIAPIPE_VERSION}-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256="a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    target=("--python-version", "3.11", "--platform", "manylinux_2_17_x86_64"),
)
PARITY_TOLERANCE = 1e-3
"""Largest allowed difference between TFLite and onnxruntime raw outputs (scores are logits
up to ~100 and boxes pixels up to ~200, so this is float32 rounding)."""
OPSET = 17


@dataclass(frozen=True)
class Source:
    """One of the wheel's face detectors and how MediaPipe's graph decodes it (its
    `face_detection_*.pbtxt`: SsdAnchorsCalculator and TensorsToDetectionsCalculator options)."""

    member: str
    sha256: str
    metadata: DetectorMetadata


# Measured on FER2013 train faces by `python -m training crop-margin --detector blazeface --raw`
# against the Haar cascade's boxes: see docs/studies/crop_margin.md.
FULL_RANGE_CORRECTION = BoxCorrection(scale=1.064, offset_x=0.003, offset_y=-0.076)
# Not measured: short range is kept only to compare detectors (bench/detection_tradeoff.py), where
# crops do not matter. Measure it as above before serving crops from it.
SHORT_RANGE_CORRECTION = BoxCorrection(scale=1.0, offset_x=0.0, offset_y=0.0)

SOURCES = {
    "full_range": Source(
        member="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        metadata=DetectorMetadata(
            model="BlazeFace full range (face_detection_full_range_sparse)",
            trained_size=192,
            input_sizes=(320, 128),
            anchors=AnchorOptions(num_layers=1, strides=(4,), interpolated_scale_aspect_ratio=0.0),
            box_correction=FULL_RANGE_CORRECTION,
        ),
    ),
    "short_range": Source(
        member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
        sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        metadata=DetectorMetadata(
            model="BlazeFace short range (face_detection_short_range)",
            trained_size=128,
            input_sizes=(128,),
            anchors=AnchorOptions(num_layers=4, strides=(8, 16, 16, 16)),
            box_correction=SHORT_RANGE_CORRECTION,
        ),
    ),
}


@contextlib.contextmanager
def tflite_deprecation_silenced() -> Iterator[None]:
    """TensorFlow warns that `tf.lite.Interpreter` (used here and inside tf2onnx) is deprecated
    for ai_edge_litert; the pinned TensorFlow still ships it, and one more pinned dependency for
    a conversion check is not worth it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        yield


def tflite_interpreter(tflite: Path, **options: Any) -> Any:
    """TensorFlow Lite's interpreter for `tflite`, without the deprecation warning."""
    import tensorflow as tf

    with tflite_deprecation_silenced():
        return tf.lite.Interpreter(model_path=str(tflite), **options)


def densified(tflite: Path, into: Path) -> Path:
    """The model with every `DENSIFY` operator replaced by the dense constant it computes (read
    from TFLite's reference kernels, without the XNNPACK delegate, which folds them away)."""
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite))
    interpreter = tflite_interpreter(
        tflite,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    interpreter.invoke()
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    kept = []
    for operator in graph.operators:
        if codes[operator.opcodeIndex] != schema.BuiltinOperator.DENSIFY:
            kept.append(operator)
            continue
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(interpreter.get_tensor(operator.outputs[0]).tobytes(), np.uint8)
        model.buffers.append(buffer)
        graph.tensors[operator.outputs[0]].buffer = len(model.buffers) - 1
        sparse = graph.tensors[operator.inputs[0]]
        sparse.buffer, sparse.sparsity = 0, None  # unused now; tf2onnx cannot parse it
    if len(kept) == len(graph.operators):
        return tflite
    graph.operators = kept
    path = into / f"{tflite.stem}_dense.tflite"
    flatbuffer_utils.write_model(model, str(path))
    return path


def to_onnx(tflite: Path):
    """tf2onnx's conversion, with the graph's input and outputs named for the service
    (`image`; `boxes` [1, N, 16], `scores` [1, N, 1], told apart by their last dimension)."""
    import tf2onnx

    with tflite_deprecation_silenced():  # tf2onnx opens an interpreter to read tensor shapes
        proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    graph = proto.graph
    names = {graph.input[0].name: "image"}
    for output in graph.output:
        last = output.type.tensor_type.shape.dim[-1].dim_value
        names[output.name] = "boxes" if last == 16 else "scores"
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for value in (*graph.input, *graph.output):
        value.name = names.get(value.name, value.name)
    # Convolutions, 2x resizes and [1, -1, k] reshapes: the graph runs at any multiple of 32.
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, name in ((dims[1], "height"), (dims[2], "width")):
        dim.dim_param = name
    for output in graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "anchors"
    return proto


def store_float16(proto) -> None:
    """Float32 weights stored as float16 and cast back by the graph (onnxruntime folds the
    casts at load): half the file. The TFLite weights were float16, so this is exact."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts = []
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(initializer)
        if values.size < 16 or not np.array_equal(values.astype(np.float16), values):
            continue
        name = initializer.name
        initializer.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}_fp16"))
        casts.append(helper.make_node("Cast", [f"{name}_fp16"], [name], to=TensorProto.FLOAT))
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def portrait_input(size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(PORTRAIT) as image:
        rgb = np.asarray(image.convert("RGB").resize((size, size)), np.float32)
    return (rgb / 127.5 - 1)[None]


def check_parity(tflite: Path, model_bytes: bytes, size: int) -> float:
    """Largest difference between TFLite and onnxruntime on the portrait; refuses past
    `PARITY_TOLERANCE`."""
    import onnxruntime as ort

    image = portrait_input(size)
    interpreter = tflite_interpreter(tflite)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    expected = sorted(
        (interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()),
        key=lambda output: -output.shape[-1],
    )
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    boxes, scores = session.run(["boxes", "scores"], {"image": image})
    pairs = zip(expected, (boxes, scores), strict=True)
    difference = max(float(np.abs(a - b).max()) for a, b in pairs)
    if difference > PARITY_TOLERANCE:
        raise ExportError(
            f"onnxruntime and TFLite differ by {difference:.2e} on the portrait "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the detector was not written"
        )
    return difference


def build(
    model: str,
    out: Path,
    cache: Path,
    wheel: Path | None = None,
    input_sizes: tuple[int, ...] | None = None,
) -> DetectorMetadata:
    """Fetch, check, convert, compare and write; the metadata written is returned."""
    source = SOURCES[model]
    if input_sizes:
        source = replace(source, metadata=replace(source.metadata, input_sizes=input_sizes))
    tflite_bytes = WHEEL.member(WHEEL.local_or_fetched(wheel, cache), source.member, source.sha256)
    with tempfile.TemporaryDirectory() as work:
        tflite = Path(work) / Path(source.member).name
        tflite.write_bytes(tflite_bytes)
        dense = densified(tflite, Path(work))
        proto = to_onnx(dense)
        store_float16(proto)
        difference = check_parity(tflite, proto.SerializeToString(), source.metadata.trained_size)
    metadata = replace(
        source.metadata,
        source={
            "package": f"mediapipe=={MEDIAPIPE_VERSION} (PyPI, Apache-2.0)",
            "wheel": WHEEL.filename,
            "wheel_sha256": WHEEL.sha256,
            "file": source.member,
            "file_sha256": source.sha256,
            "converted_with": f"tf2onnx, opset {OPSET}; parity with TFLite {difference:.1e}",
        },
    )
    set_metadata(proto, {METADATA_KEY: metadata.to_json()})
    write_atomically(proto, out)
    log.info("wrote %s (%d KB), parity %.1e", out, out.stat().st_size // 1024, difference)
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.face_detector", description=__doc__)
    parser.add_argument("--model", choices=sorted(SOURCES), default="full_range")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mediapipe")
    parser.add_argument("--wheel", type=Path, help="a local copy of the pinned wheel")
    parser.add_argument(
        "--input-sizes",
        type=lambda text: tuple(int(size) for size in text.split(",")),
        help="input sizes run on every image, comma-separated multiples of 32 "
        "(default: the measured choice, 320,128 for full_range)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(args.model, args.out, args.cache, args.wheel, args.input_sizes)
    except (ExportError, DetectorMetadataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
