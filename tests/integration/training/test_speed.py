"""`python -m training speed`: a recipe's training step timed on this machine, as a budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_speed_prints_a_row_a_precision_for_the_recipe(repo_root: Path, smoke_config: Path):
    command = [sys.executable, "-m", "training", "speed", "--config", str(smoke_config)]
    command += ["--steps", "2", "--precision", "float32"]
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    header, columns, row = done.stdout.strip().splitlines()
    assert "smoke.toml, batch 32, 2 timed steps a precision, 808 steps an epoch" in header
    assert columns.split() == [
        "precision",
        "s",
        "a",
        "step",
        "s",
        "an",
        "epoch",
        "CPU",
        "s",
        "a",
        "step",
    ]
    name, step, epoch, cpu = row.split()
    assert name == "float32" and float(step) > 0 and float(cpu) > 0
    assert float(epoch) == pytest.approx(float(step) * 808, rel=0.01, abs=1)
