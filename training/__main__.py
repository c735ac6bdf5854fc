"""`python -m training download | train | trim | speed | crop-margin | status | evaluate | export |
compare | ensemble`: from data to a servable model, and the choice of which model (or ensemble of
models) to ship."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch FER2013 through the Kaggle API")
    download.add_argument("--out", type=Path, required=True, help="folder to unpack it into")

    train = commands.add_parser("train", help="train, evaluate and export a model")
    train.add_argument("--data", type=Path, required=True, help="Kaggle zip, its folder, or CSV")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--config", type=Path, help="TOML config (default: configs/default.toml)")
    train.add_argument("--epochs", type=int, help="override the config's epochs")
    train.add_argument("--limit", type=int, help="at most N images per class per split")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--seed",
        type=int,
        help="seeds training: initial weights, shuffling, augmentation (default 1337); the "
        "validation split has its own, train.split_seed",
    )

    trim = commands.add_parser(
        "trim",
        help="write a run's trimmed resumable state (under 10 MB) for git: see training.carry",
    )
    trim.add_argument("--run", type=Path, required=True, help="a run directory from `train`")
    trim.add_argument(
        "--to", type=Path, required=True, help="the folder to commit, e.g. training/carried/NAME"
    )

    speed = commands.add_parser(
        "speed", help="time a recipe's training step on this machine: what a run must budget"
    )
    speed.add_argument("--config", type=Path, help="TOML config (default: the shipped recipe)")
    speed.add_argument("--steps", type=int, default=40, help="timed batches a precision")
    speed.add_argument(
        "--precision",
        action="append",
        choices=["float32", "mixed_bfloat16"],
        help="repeat for several (default: float32, and mixed_bfloat16 where native)",
    )

    margin = commands.add_parser(
        "crop-margin",
        help="how much larger than a detector box a FER2013 crop is: the contract's crop margin",
    )
    margin.add_argument("--data", type=Path, required=True, help="FER2013; train/ only is read")
    margin.add_argument("--images", type=int, default=3000, help="train faces to measure on")
    margin.add_argument("--seed", type=int, default=0, help="which train faces")
    margin.add_argument("--detector", choices=("haar", "blazeface", "yunet"), default="haar")
    margin.add_argument(
        "--model",
        type=Path,
        help="the network's file (default: artifacts/face_detector.onnx for BlazeFace, "
        "artifacts/yunet.onnx for YuNet)",
    )
    margin.add_argument("--raw", action="store_true", help="the network's boxes, uncorrected")

    status = commands.add_parser(
        "status", help="how far a run is, and whether a process trains in it now"
    )
    status.add_argument("--run", type=Path, required=True, help="a run directory from `train`")

    evaluate = commands.add_parser("evaluate", help="score an exported model on test/")
    evaluate.add_argument("--model", type=Path, required=True, help="an exported emotion.onnx")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, required=True)
    evaluate.add_argument("--history", type=Path, help="training_log.csv for the curves")
    evaluate.add_argument("--limit", type=int)
    evaluate.add_argument(
        "--stamp",
        action="store_true",
        help="also write the test metrics into the model's metadata (what GET /model reports)",
    )

    export = commands.add_parser(
        "export", help="export a run's shipped weights (best epoch or weight average) to ONNX"
    )
    export.add_argument("--run", type=Path, required=True, help="a run directory from `train`")
    export.add_argument("--out", type=Path, help="where emotion.onnx goes (default: --run)")
    export.add_argument(
        "--data", type=Path, help="data for the parity and int8 checks (default: the run's)"
    )
    export.add_argument(
        "--crop-margin", type=float, help="override the contract's crop margin (see MODEL_CARD.md)"
    )

    compare = commands.add_parser(
        "compare",
        help="rank exported models on the validation faces none of them trained on",
    )
    compare.add_argument("models", type=Path, nargs="+", help="exported emotion.onnx files")
    compare.add_argument("--data", type=Path, required=True, help="the data they were trained on")

    ensemble = commands.add_parser(
        "ensemble",
        help="combine exported members into one emotion.onnx, weights chosen on validation",
    )
    ensemble.add_argument("members", type=Path, nargs="+", help="exported emotion.onnx files")
    ensemble.add_argument("--data", type=Path, required=True, help="the data they were trained on")
    ensemble.add_argument(
        "--out", type=Path, required=True, help="the ensemble's .onnx (ensemble.json goes beside)"
    )
    ensemble.add_argument(
        "--rounds", type=int, default=20, help="greedy selection rounds (with replacement)"
    )
    ensemble.add_argument(
        "--combine",
        choices=["auto", "logits", "probabilities"],
        default="auto",
        help="average members' logits or probabilities (auto: whichever validation prefers)",
    )
    ensemble.add_argument(
        "--equal-weights",
        action="store_true",
        help="keep every member with equal weight instead of selecting on validation",
    )
    ensemble.add_argument(
        "--max-members",
        type=int,
        help="at most this many distinct members (each costs a face one inference); "
        "greedy spends the budget on those it values most",
    )
    ensemble.add_argument("--no-quantize", action="store_true", help="leave float members in float")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.command == "download":
        from training.download import download

        download(args.out)
    elif args.command == "train":
        from training.train import train

        path = train(
            args.data, args.out, args.config, args.epochs, args.limit, args.resume, args.seed
        )
        if path is None:
            from training.export import export_commands

            print(
                f"trained; export and evaluate where TensorFlow is installed:\n"
                f"{export_commands(args.out, args.data)}"
            )
        else:
            print(f"model written to {path}")
    elif args.command == "trim":
        from training.carry import trim

        print(f"trimmed state written to {trim(args.run, args.to)}: commit that folder")
    elif args.command == "speed":
        from training.speed import training_speed

        training_speed(args.config, args.steps, args.precision)
    elif args.command == "crop-margin":
        from service.settings import DEFAULT_FACE_DETECTOR_PATH, DEFAULT_YUNET_PATH
        from training.crop_margin import crop_margin

        default = DEFAULT_YUNET_PATH if args.detector == "yunet" else DEFAULT_FACE_DETECTOR_PATH
        model = args.model or default
        print(crop_margin(args.data, args.images, args.seed, args.detector, model, args.raw))
    elif args.command == "status":
        from training.status import run_status

        print(run_status(args.run))
    elif args.command == "evaluate":
        from training.data import load_test_split
        from training.evaluate import evaluate_model

        history = args.history or args.model.parent / "training_log.csv"
        metrics = evaluate_model(
            args.model, load_test_split(args.data, args.limit), args.out, history=history
        )
        if args.stamp:
            from training.export import stamp_metrics

            stamp_metrics(args.model, metrics)
        print(
            f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
            f"ECE {metrics['expected_calibration_error']:.4f}  -> {args.out / 'metrics.json'}"
        )
    elif args.command == "export":
        from training.export import export_run, run_dataset

        dataset = run_dataset(args.run, args.data)
        path = export_run(
            args.run,
            args.out or args.run,
            parity=dataset.test,
            validation=dataset.validation,
            crop_margin=args.crop_margin,
        )
        print(f"model written to {path}")
    elif args.command == "compare":
        from training.compare import compare, report

        print(report(compare(args.models, args.data)))
    elif args.command == "ensemble":
        from training.ensemble import COMBINES, ensemble, report

        result = ensemble(
            args.members,
            args.data,
            args.out,
            rounds=args.rounds,
            combines=COMBINES if args.combine == "auto" else (args.combine,),
            equal_weights=args.equal_weights,
            quantize=not args.no_quantize,
            max_members=args.max_members,
        )
        print(report(result))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training.errors import USER_ERRORS

    try:
        run(parse_args(argv))
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: pass --resume to continue from the last finished epoch", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
