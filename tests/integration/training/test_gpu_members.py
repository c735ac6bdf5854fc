"""scripts/gpu_members.sh, the one call that trains several members on a lent GPU machine, run
here on Keras over JAX without TensorFlow, as there (JAX on the CPU stands in for the GPU). Two
members at once: one carried through git and resumed, one fresh; each comes back as one archive
that the device tool can return."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from tests.fixtures.training import run_killed_after
from training.carry import trim
from training.run_dir import AVERAGED_WEIGHTS, BEST_WEIGHTS, LOG_FILE, RUN_FILE, logged_epochs

# Tiny, weight averaging from epoch 2 on: 8 epochs in all, killed after 3.
CARRIED_RECIPE = """
[model]
filters = [8, 16]
convs_per_stage = 1
dense_units = 16

[train]
epochs = 2
swa_epochs = 6
batch_size = 32
warmup_epochs = 0
"""


def test_members_train_side_by_side_and_come_back_as_archives(
    tmp_path: Path,
    tiny_zip: Path,
    smoke_config: Path,
    repo_root: Path,
    python_without_tensorflow: Path,
) -> None:
    killed = run_killed_after(3, tiny_zip, CARRIED_RECIPE, tmp_path / "killed")
    done = len(logged_epochs(killed))
    carried = tmp_path / "carried"
    trim(killed, carried / "carried")

    out = tmp_path / "out"
    finished = subprocess.run(
        [
            *("bash", "scripts/gpu_members.sh", "--data", str(tiny_zip), "--minutes", "5"),
            *("--out", str(out), "carried:1337", f"fresh:2:{smoke_config}"),
        ],
        cwd=repo_root,
        env={
            **os.environ,
            "CARRIED_DIR": str(carried),
            "PYTHON": str(python_without_tensorflow),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    assert sorted(path.name for path in out.iterdir()) == [
        "carried.run.tar.gz",
        "fresh.run.tar.gz",
    ]

    unpacked = tmp_path / "unpacked"
    for archive in out.iterdir():
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")

    resumed = unpacked / "carried"
    sessions = json.loads((resumed / RUN_FILE).read_text())["sessions"]
    assert [(s["epochs_before"], s["backend"]) for s in sessions] == [
        (0, "tensorflow"),
        (done, "jax"),
    ]
    assert [int(row["epoch"]) for row in logged_epochs(resumed)] == list(range(8))
    assert (resumed / AVERAGED_WEIGHTS).is_file()
    assert not (resumed / "checkpoint").exists(), "the checkpoint is left on the machine"

    fresh = unpacked / "fresh"
    record = json.loads((fresh / RUN_FILE).read_text())
    assert record["seed"] == 2
    assert [s["backend"] for s in record["sessions"]] == ["jax"]
    assert (fresh / BEST_WEIGHTS).is_file() and (fresh / LOG_FILE).is_file()
    assert "export and evaluate where TensorFlow is installed" in (fresh / "gpu.log").read_text()
