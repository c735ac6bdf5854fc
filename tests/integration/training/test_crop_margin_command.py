"""`python -m training crop-margin`: the contract's crop margin, measured on real FER2013 faces
with the service's own detectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FER2013 = REPO_ROOT.parent / "shared" / "data" / "fer2013.zip"


@pytest.mark.slow
@pytest.mark.skipif(not FER2013.is_file(), reason="FER2013 is not beside this clone (../shared)")
@pytest.mark.parametrize("detector", ["yunet", "blazeface"])
def test_the_measured_margin_is_the_one_the_recipe_ships(repo_root: Path, detector: str):
    command = [sys.executable, "-m", "training", "crop-margin", "--data", str(FER2013)]
    command += ["--images", "120", "--detector", detector]
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    haar, network = result["haar"], result[detector]
    assert haar["images"] == network["images"] == 120
    assert haar["one_face_found"] > 40 and network["one_face_found"] > 80
    # On 120 faces the median is within a few percent of the 3,000-face measurement that set
    # the shipped 1.05; the network's corrected boxes frame faces as Haar's do.
    assert 0.98 < haar["crop_margin_median"] < 1.12
    # (Uncorrected, the 120-face medians differ by 0.06 for BlazeFace and 0.09 for YuNet.)
    assert abs(network["crop_margin_median"] - haar["crop_margin_median"]) < 0.04
