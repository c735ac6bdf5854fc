"""`python -m training ensemble` on tiny members trained here: one graph that answers as its members
do together, the members it must refuse, and what it tells the service and `compare`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from scipy.special import softmax

from contract.emotion import (
    CONFIG_KEY,
    ENSEMBLE_KEY,
    LABELS,
    METADATA_KEY,
    TRAINING_KEY,
    ModelContract,
)
from harness.server import running_service
from service.model import EmotionModel
from tests.fixtures.onnx_metadata import edited, metadata_of, with_metadata
from tests.fixtures.training import exported_in_float, write_zip
from training.__main__ import main
from training.compare import compare, report
from training.ensemble import EVIDENCE_FILE, ensemble
from training.ensemble_graph import build_graph, check_parity
from training.ensemble_members import answers, flipped, load_member
from training.ensemble_selection import Choice, Step, best_prefix, reference_probabilities
from training.errors import EnsembleError
from training.export import run_dataset
from training.train import as_images, train

MEMBER_CONFIG = """
[model]
filters = [8, 16]
convs_per_stage = 1
dense_units = 16

[train]
epochs = 12
batch_size = 8
warmup_epochs = 0
swa_epochs = 0

[augment]
flip = false
shift = 0.0
rotation_degrees = 0.0
zoom = 0.0
contrast = 0.1
"""
"""The smoke network, trained long enough in small batches to read the generated faces well
above chance (batch-norm statistics need a few hundred steps), so that a damaged member costs
something. At 8 epochs, on an AVX2 EPYC, one seed stayed near chance (0.29) and both failed
the int8 export's guard (2 of 21 answers changed); at 12 both read 0.86-1.0 and int8 agrees."""


@pytest.fixture(scope="module")
def member_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """21 validation faces: enough for a damaged member to show."""
    return write_zip(tmp_path_factory.mktemp("members") / "fer2013.zip", {"train": 30, "test": 2})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, member_data: Path) -> list[Path]:
    """Two members of one split that differ in their training seed."""
    root = tmp_path_factory.mktemp("runs")
    config = root / "member.toml"
    config.write_text(MEMBER_CONFIG)
    for seed in (1, 2):
        train(member_data, root / f"seed{seed}", config, seed=seed)
    return [root / "seed1", root / "seed2"]


@pytest.fixture(scope="module")
def members(runs: list[Path]) -> list[Path]:
    return [run / "emotion.onnx" for run in runs]


@pytest.fixture(scope="module")
def validation_images(runs: list[Path], member_data: Path) -> tuple[np.ndarray, np.ndarray]:
    validation = run_dataset(runs[0], member_data).validation
    return as_images(validation.x), validation.y


def damaged(path: Path, out: Path) -> Path:
    """The member with its logits handed to the wrong emotions (each one moved along by one):
    a confident, useless member that still carries the right contract and split."""

    def change(model) -> None:
        graph = model.graph
        (softmax_node,) = [n for n in graph.node if n.op_type == "Softmax"]
        logits = softmax_node.input[0]
        order = np.roll(np.arange(len(LABELS)), 1)
        graph.initializer.append(numpy_helper.from_array(order.astype(np.int64), "damage/order"))
        graph.node.insert(
            list(graph.node).index(softmax_node),
            helper.make_node("Gather", [logits, "damage/order"], ["damage/logits"], axis=1),
        )
        softmax_node.input[0] = "damage/logits"

    return edited(path, out, change)


def probabilities_of(paths: list[Path], images: np.ndarray) -> list[np.ndarray]:
    crops = images[..., 0].astype(np.uint8)
    return [EmotionModel.load(path).predict(crops).astype(np.float64) for path in paths]


@pytest.mark.parametrize("combine", ["logits", "probabilities"])
def test_the_ensemble_answers_as_its_members_do_together(
    members: list[Path], member_data: Path, tmp_path: Path, validation_images, combine: str
) -> None:
    result = ensemble(
        members, member_data, tmp_path / "emotion.onnx", combines=(combine,), equal_weights=True
    )
    images, _ = validation_images
    served = EmotionModel.load(result.path)
    recorded = json.loads(metadata_of(result.path)[ENSEMBLE_KEY])
    assert recorded["combine"] == combine
    if recorded["flip_tta"]:
        pytest.skip("validation chose flip averaging; its wiring is checked on its own below")
    # Recomputed here from each member as the service serves it, one by one: geometric or
    # arithmetic mean of their probabilities, then the ensemble's temperature.
    each = probabilities_of(members, images)
    if combine == "logits":
        scores = np.mean([np.log(p) for p in each], axis=0)
    else:
        scores = np.log(np.mean(each, axis=0))
    expected = softmax(scores / recorded["temperature"], axis=1)
    np.testing.assert_allclose(served.predict(images[..., 0].astype(np.uint8)), expected, atol=1e-4)
    assert result.evidence["parity"]["max_difference"] <= 1e-4
    assert [m["weight"] for m in recorded["members"]] == [0.5, 0.5]


def test_metadata_keeps_the_contract_and_lists_the_members(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    result = ensemble(members, member_data, tmp_path / "emotion.onnx")
    served, first = EmotionModel.load(result.path), EmotionModel.load(members[0])
    assert served.contract == first.contract
    assert (served.input_name, served.output_name) == (first.input_name, first.output_name)
    recorded = json.loads(metadata_of(result.path)[ENSEMBLE_KEY])
    ids = {hashlib.sha256(path.read_bytes()).hexdigest() for path in members}
    assert {m["id"] for m in recorded["members"]} <= ids
    assert sum(m["weight"] for m in recorded["members"]) == pytest.approx(1.0)
    assert recorded["validation"]["accuracy"] == result.evidence["ensemble"]["accuracy"]
    assert recorded["split"] == result.evidence["validation"]["split"]
    for member in recorded["members"]:
        # Named by its run's folder, as a reader finds it, and without the host's paths.
        assert member["name"] in {path.parent.name for path in members}
        assert 0 <= member["validation"]["accuracy"] <= 1
        assert member["quantization"] == "int8"  # members already int8 are reused as they are
    # The service lists the members it read back.
    assert [(m.id, m.weight) for m in served.training.members] == [
        (m["id"], m["weight"]) for m in recorded["members"]
    ]
    evidence = json.loads((tmp_path / EVIDENCE_FILE).read_text())
    assert evidence["selection"]["steps"][0]["members"] == 1
    assert {c["id"] for c in evidence["candidates"]} == ids


def test_greedy_selection_leaves_a_damaged_member_out(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    broken = damaged(members[0], tmp_path / "damaged.onnx")
    result = ensemble([broken, *members], member_data, tmp_path / "emotion.onnx")
    alone = {c["file"]: c["validation"]["accuracy"] for c in result.evidence["candidates"]}
    assert alone[str(broken)] < min(alone[str(path)] for path in members)  # it does matter
    broken_id = hashlib.sha256(broken.read_bytes()).hexdigest()
    assert broken_id not in {m["id"] for m in result.evidence["members"]}
    assert result.evidence["ensemble"]["accuracy"] >= max(alone.values())


def test_members_with_other_validation_faces_are_refused(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    recorded = metadata_of(members[1])
    config = json.loads(recorded[CONFIG_KEY])
    config["train"]["split_seed"] = config["train"].get("split_seed", 1337) + 1
    training = json.loads(recorded[TRAINING_KEY]) | {"limit": None}
    other = with_metadata(
        members[1],
        tmp_path / "other_split.onnx",
        {CONFIG_KEY: json.dumps(config), TRAINING_KEY: json.dumps(training)},
    )
    with pytest.raises(EnsembleError, match="other validation faces"):
        ensemble([members[0], other], member_data, tmp_path / "emotion.onnx")
    assert not (tmp_path / "emotion.onnx").exists()


def test_a_member_trained_on_another_data_file_is_refused(
    members: list[Path], finished_run: Path, member_data: Path, tmp_path: Path
) -> None:
    with pytest.raises(EnsembleError, match="other validation faces"):
        ensemble([members[0], finished_run / "emotion.onnx"], member_data, tmp_path / "e.onnx")
    assert not (tmp_path / "e.onnx").exists()


def test_members_with_another_contract_are_refused(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    wider = ModelContract.from_json(metadata_of(members[1])[METADATA_KEY])
    wider = ModelContract(crop_margin=wider.crop_margin + 0.25)
    other = with_metadata(members[1], tmp_path / "wider.onnx", {METADATA_KEY: wider.to_json()})
    with pytest.raises(EnsembleError, match="another contract"):
        ensemble([members[0], other], member_data, tmp_path / "emotion.onnx")
    assert not (tmp_path / "emotion.onnx").exists()


def test_one_member_given_twice_is_one_member(
    members: list[Path], member_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "emotion.onnx"
    code = main(["ensemble", str(members[0]), str(members[0]), "--data", str(member_data),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "greedy (logits averaged)" in printed or "greedy (probabilities averaged)" in printed
    assert "parity" in printed
    (member,) = json.loads(metadata_of(out)[ENSEMBLE_KEY])["members"]
    assert member["weight"] == 1.0
    assert member["id"] == hashlib.sha256(members[0].read_bytes()).hexdigest()


def test_the_command_refuses_in_one_line(
    members: list[Path], member_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = ModelContract(crop_margin=2.0).to_json()
    other = with_metadata(members[1], tmp_path / "wider.onnx", {METADATA_KEY: wider})
    code = main(["ensemble", str(members[0]), str(other), "--data", str(member_data),
                 "--out", str(tmp_path / "emotion.onnx")])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_the_command_holds_the_ensemble_to_a_member_budget(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    """`--max-members 1`: one network in the file, whatever the rounds; the evidence says so."""
    out = tmp_path / "emotion.onnx"
    code = main(["ensemble", *map(str, members), "--data", str(member_data), "--out", str(out),
                 "--max-members", "1", "--rounds", "6"])  # fmt: skip
    assert code == 0
    recorded = json.loads(metadata_of(out)[ENSEMBLE_KEY])
    assert len(recorded["members"]) == 1 and recorded["members"][0]["weight"] == 1.0
    selection = json.loads((tmp_path / EVIDENCE_FILE).read_text())["selection"]
    assert selection["max_members"] == 1
    assert {step["members"] for step in selection["steps"]} == {1}
    with pytest.raises(EnsembleError, match="no --max-members"):
        ensemble(members, member_data, tmp_path / "e.onnx", equal_weights=True, max_members=2)


def test_flip_averaging_is_wired_as_the_members_answer_mirrored_faces(
    members: list[Path], validation_images, tmp_path: Path
) -> None:
    images, _ = validation_images
    loaded = [load_member(path) for path in members]
    plain = [answers(member, images) for member in loaded]
    mirrored = [answers(member, flipped(images)) for member in loaded]
    for combine in ("logits", "probabilities"):
        choice = Choice(combine, (1, 3), True, 1.3, 0.0, 0.0, [], 1, {}, {})
        model = build_graph(loaded, choice.weights, choice, 17)
        expected = reference_probabilities(plain, mirrored, choice)
        assert check_parity(model, images, expected)["max_difference"] <= 1e-4
        # ...and it is not the unmirrored answer (the faces are not symmetric).
        assert not np.allclose(expected, reference_probabilities(plain, None, choice), atol=1e-4)


def test_compare_scores_the_ensemble_beside_its_members(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    result = ensemble(members, member_data, tmp_path / "emotion.onnx", equal_weights=True)
    comparison = compare([result.path, *members], member_data)
    scored = {score.path: score for score in comparison.scores}
    assert set(scored) == {result.path, *members}
    assert scored[result.path].accuracy == pytest.approx(result.evidence["ensemble"]["accuracy"])
    printed = report(comparison)
    assert f"{result.path} (ensemble of 2)" in printed
    assert f"{members[0]} (ensemble" not in printed


def test_the_service_lists_the_members_over_http(
    members: list[Path], member_data: Path, tmp_path: Path
) -> None:
    model = shutil.copy(
        ensemble(members, member_data, tmp_path / "built.onnx").path, tmp_path / "emotion.onnx"
    )
    recorded = json.loads(metadata_of(Path(model))[ENSEMBLE_KEY])["members"]
    with running_service(Path(model)) as url:
        info = httpx.get(f"{url}/model", timeout=10).json()
    assert info["members"] == [
        {
            "id": m["id"],
            "name": m["name"],
            "weight": m["weight"],
            "validation_accuracy": m["validation"]["accuracy"],
        }
        for m in recorded
    ]
    assert info["metrics"]["validation"]["accuracy"] == pytest.approx(
        json.loads(metadata_of(Path(model))[ENSEMBLE_KEY])["validation"]["accuracy"]
    )


def test_float_members_go_int8_only_where_validation_loses_nothing(
    runs: list[Path], member_data: Path, tmp_path: Path
) -> None:
    member = exported_in_float(runs[0], member_data, tmp_path)
    assert not load_member(member).int8
    result = ensemble([member], member_data, tmp_path / "emotion.onnx")
    quantization = result.evidence["quantization"]
    (listed,) = result.evidence["members"]
    operators = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    if listed["quantization"] == "int8":
        assert "QuantizeLinear" in operators
        assert quantization["accuracy"] >= quantization["float_accuracy"]
        check = quantization["checks"][listed["id"]]
        assert check["kept"] == "int8" and check["kernel_agreement"] >= 0.99
    else:
        assert "QuantizeLinear" not in operators
    # Either way, the graph written answers as its members one by one.
    assert result.evidence["parity"]["max_difference"] <= 1e-4


def test_a_round_with_more_members_must_be_more_accurate_not_only_better_calibrated() -> None:
    steps = [
        Step(0, (1, 0, 0), 0.40, 1.50),
        Step(1, (1, 1, 0), 0.42, 1.53),  # more accurate: a second member earns its cost
        Step(0, (2, 1, 0), 0.42, 1.52),  # the same members, better calibrated
        Step(2, (2, 1, 1), 0.42, 1.40),  # a third member, no more accurate: not worth its cost
        Step(0, (3, 1, 1), 0.41, 1.39),
    ]
    assert best_prefix(steps) == steps[2]


@pytest.fixture(scope="module")
def members_of_two_shapes(
    tmp_path_factory: pytest.TempPathFactory, member_data: Path
) -> list[Path]:
    """A member that reads the centre 40x40 of each face and one that reads it whole, both
    averaging each face with its mirror image inside their graphs: the crop's extra `Slice` makes
    the exporter number its symbolic dimensions differently, so that the crop member's `unk__3`
    is its doubled batch and the other's a single one (as with the real crop40 member)."""
    root = tmp_path_factory.mktemp("shapes")
    recipe = MEMBER_CONFIG.replace("swa_epochs = 0\n", 'swa_epochs = 0\nflip_tta = "on"\n')
    paths = []
    for name, crop in (("crop40", 40), ("whole", 0)):
        config = root / f"{name}.toml"
        config.write_text(recipe.replace("[model]\n", f"[model]\ninput_crop = {crop}\n"))
        train(member_data, root / name, config, seed=3)
        paths.append(root / name / "emotion.onnx")
    return paths


@pytest.mark.parametrize("flip_tta", [False, True])
def test_members_of_different_shapes_run_together_at_any_batch_size(
    members_of_two_shapes: list[Path], validation_images, flip_tta: bool
) -> None:
    """Found with the real 40x40-crop member: every member's exporter names its dimensions
    `unk__N` from zero, and onnxruntime, trusting one name to mean one size, reused a buffer of
    the wrong size and refused to run the combined graph."""
    images, _ = validation_images
    faces = np.concatenate([images] * 4)  # enough faces for every batch size below
    loaded = [load_member(path) for path in members_of_two_shapes]
    plain = [answers(member, faces) for member in loaded]
    mirrored = [answers(member, flipped(faces)) for member in loaded]
    choice = Choice("logits", (1, 1), flip_tta, 1.0, 0.0, 0.0, [], 1, {}, {})
    model = build_graph(loaded, choice.weights, choice, 17)
    expected = reference_probabilities(plain, mirrored if flip_tta else None, choice)
    assert check_parity(model, faces, expected)["max_difference"] <= 1e-4
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for size in (len(faces), 1, len(faces) // 2, 3):
        (answer,) = session.run(None, {"image": faces[:size]})
        np.testing.assert_allclose(answer, expected[:size], atol=1e-4)
