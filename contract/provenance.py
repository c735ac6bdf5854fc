"""Where a figure came from: the machine it was measured on and the code that measured it.

The instruction-set features decide how fast a run trains (native bfloat16) and how fast, and how
exactly, the int8 model answers (VNNI; see the model card's "Answers depend on the CPU"), so
every run, metric and benchmark this project records names them; training and serving both do.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

SPEED_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
"""The CPU features that set how fast a run trains (bfloat16) and its int8 model serves (VNNI)."""


def first_cpu(cpuinfo_file: Path = CPUINFO) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo, read once (empty where it cannot be read).

    Every CPU of a machine lists the same model and features, and the file has a block per CPU
    (hundreds of kilobytes on a large host), so reading stops after the first.
    """
    try:
        lines = cpuinfo_file.read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip() and fields:
            break
        key, _, value = line.partition(":")
        if value:
            fields[key.strip()] = value.strip()
    return fields


def cpu_features(cpuinfo_file: Path = CPUINFO) -> set[str]:
    return features_of(first_cpu(cpuinfo_file))


def features_of(cpu: dict[str, str]) -> set[str]:
    return set(cpu.get("flags", "").split())


def machine_description(cpuinfo_file: Path = CPUINFO) -> str:
    """CPU model, core count and speed-setting features, e.g. "AMD EPYC, 2 cores, avx2".

    The features matter: one CPU model name covers machines with and without AVX-512, which
    train and serve two to three times faster or slower (platform.processor() is empty on most
    Linux machines anyway).
    """
    cpu = first_cpu(cpuinfo_file)
    present = features_of(cpu)
    features = " ".join(feature for feature in SPEED_FEATURES if feature in present)
    model = cpu.get("model name") or platform.machine()
    return f"{model}, {os.cpu_count()} cores" + (f", {features}" if features else "")


def code_version() -> str:
    """The code's git revision (with `-dirty` for uncommitted changes), if known."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
