"""What each int8 choice costs a run's classifier, on the run's own validation faces.

    python bench/quantization.py --run runs/default --data ../shared/data/fer2013.zip \
        [--weights runs/default/best_classifier.weights.h5]

Exports the run's classifier to float (flip averaging as the run chose, or as its config asks
when it has not finished), quantises it once per recipe and prints, for each: validation
accuracy, the share of faces where int8 and float pick the same emotion, the faces it lost and
won, and how often this CPU's int8 kernels compute what the int8 graph means (an 8-bit recipe
falls short there on CPUs without VNNI; its "graph" column is what a VNNI CPU answers). The
first row is what export ships. `--weights` measures another checkpoint of the run, such as its
best epoch before the run has finished. Writes docs/studies/quantization.{json,md}. Needs the
training environment (TensorFlow converts the classifier); takes about 3 minutes a recipe on a
2-core machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from serve_report import write_results  # noqa: E402

from contract.provenance import machine_description  # noqa: E402
from training.config import config_from_dict  # noqa: E402
from training.export import convert, read_run, run_dataset  # noqa: E402
from training.model import as_images, load_float32_classifier  # noqa: E402
from training.quantize import (  # noqa: E402
    QuantizationRecipe,
    onnx_probabilities,
    quantize_int8,
    reference_probabilities,
)
from training.run_dir import shipped_weights  # noqa: E402

SHIPPED = QuantizationRecipe()
RECIPES = {
    "shipped: 7-bit weights, first convolution float": SHIPPED,
    "7-bit weights throughout": QuantizationRecipe(float_first_convolution=False),
    "8-bit weights throughout": QuantizationRecipe(weight_bits=8, float_first_convolution=False),
    "7-bit, dense layers float too": QuantizationRecipe(float_dense=True),
    "7-bit, maximum ranges": QuantizationRecipe(calibration="minmax"),
}


def float_graph(run: Path, weights: Path | None) -> tuple[bytes, Path, bool]:
    """The run's classifier as a float ONNX graph; the temperature is left at 1 (it cannot change
    which emotion wins)."""
    record = read_run(run)
    config = config_from_dict(record["config"])
    weights = weights or shipped_weights(run, config)
    flip = record.get("prediction", {}).get("flip_tta", config.train.flip_tta != "off")
    classifier = load_float32_classifier(config, weights)
    proto, _ = convert(classifier, 1.0, flip, config.export.opset)
    return proto.SerializeToString(), weights, flip


def measure(
    float_model: bytes, float_choice: np.ndarray, recipe: QuantizationRecipe, images, labels
) -> dict[str, float]:
    started = time.perf_counter()
    int8_model = quantize_int8(float_model, images, recipe)
    kernels = onnx_probabilities(int8_model, images).argmax(1)
    graph = reference_probabilities(int8_model, images).argmax(1)
    float_right, kernels_right = float_choice == labels, kernels == labels
    return {
        "float_accuracy": round(float(float_right.mean()), 4),
        "accuracy": round(float(kernels_right.mean()), 4),
        "agreement": round(float((kernels == float_choice).mean()), 4),
        "lost": int((float_right & ~kernels_right).sum()),
        "won": int((~float_right & kernels_right).sum()),
        "kernel_agreement": round(float((kernels == graph).mean()), 4),
        "graph_accuracy": round(float((graph == labels).mean()), 4),
        "graph_agreement": round(float((graph == float_choice).mean()), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def markdown(header: str, results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| recipe | accuracy | same answer as float | lost / won | kernels = graph "
        "| graph's accuracy | graph = float |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | {r['agreement']:.1%} | {r['lost']} / {r['won']} "
            f"| {r['kernel_agreement']:.2%} | {r['graph_accuracy']:.4f} "
            f"| {r['graph_agreement']:.1%} |"
        )
    return header + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a training run directory")
    parser.add_argument("--data", type=Path, required=True, help="the data the run trained on")
    parser.add_argument("--weights", type=Path, help="another checkpoint of the run's classifier")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "studies")
    args = parser.parse_args()
    validation = run_dataset(args.run, args.data).validation
    images = as_images(validation.x)
    float_model, weights, flip = float_graph(args.run, args.weights)
    float_choice = onnx_probabilities(float_model, images).argmax(1)
    results = {}
    for name, recipe in RECIPES.items():
        results[name] = measure(float_model, float_choice, recipe, images, validation.y)
        print(name, results[name], flush=True)
    header = (
        f"`{weights.name}` of `{args.run.name}` (flip averaging {'on' if flip else 'off'}), "
        f"{len(images)} validation faces, float accuracy "
        f"{results[next(iter(results))]['float_accuracy']:.4f}; on {machine_description()}."
    )
    write_results(
        args.out,
        "quantization",
        {"run": args.run.name, "weights": weights.name, "faces": len(images), "results": results},
        markdown(header, results),
    )


if __name__ == "__main__":
    main()
