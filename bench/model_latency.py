"""Per-face inference time of an exported model on one onnxruntime thread, as the service runs it.

    python bench/model_latency.py [--model artifacts/emotion.onnx] [--runs 500]

Prints p50/p95 milliseconds per face at batch 1 and batch 32, and the file's size, as markdown
and JSON. Everything folded into the graph (flip averaging, temperature) is included. Figures
name the machine; run it on a quiet machine (a training run in the background doubles them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
from contract.provenance import machine_description  # noqa: E402
from contract.runtime import model_session_options  # noqa: E402


def session_on_one_thread(model: Path) -> ort.InferenceSession:
    options = model_session_options()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def per_face_ms(session: ort.InferenceSession, batch: int, runs: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, 48, 48, 1)).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(20):
        session.run(None, {name: images})
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: images})
        timings.append((time.perf_counter() - started) * 1000 / batch)
    return {
        "p50_ms": round(float(np.percentile(timings, 50)), 3),
        "p95_ms": round(float(np.percentile(timings, 95)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "artifacts" / "emotion.onnx")
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    session = session_on_one_thread(args.model)
    result = {
        "machine": machine_description(),
        "onnxruntime": ort.__version__,
        "model_mb": round(args.model.stat().st_size / 1e6, 2),
        "batch_1": per_face_ms(session, 1, args.runs),
        "batch_32": per_face_ms(session, 32, max(20, args.runs // 16)),
    }
    print("| batch | p50 ms/face | p95 ms/face |\n|---|---|---|")
    for batch in ("batch_1", "batch_32"):
        print(f"| {batch[6:]} | {result[batch]['p50_ms']} | {result[batch]['p95_ms']} |")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
