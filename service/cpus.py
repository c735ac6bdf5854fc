"""How many CPUs this process may use, and how many threads each pool gets from them.

`os.cpu_count()` is the wrong number in two common places: under `taskset`/cpusets (fewer CPUs
are usable) and in a container with a CPU limit (a Kubernetes pod limited to 2 CPUs on a 64-core
node still sees 64). onnxruntime and OpenCV size their pools from the core count by default, so
a limited container would run 64 spinning threads on 2 CPUs' worth of time. Here the count is
the CPU affinity, capped by the cgroup CPU quota (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), and
each of `WORKERS` processes takes an equal share of it.

What the CPUs are, rather than how many, is `contract.provenance`'s: every figure names them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on, capped by its cgroup's CPU quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU limit of the cgroup as a number of CPUs (1.5 for `150000 100000`), or None when
    there is none or it cannot be read."""
    v2 = _read_words(cgroup_root / "cpu.max")
    if v2 is not None and len(v2) == 2:
        return _ratio(v2[0], v2[1])
    quota = _read_words(cgroup_root / "cpu" / "cpu.cfs_quota_us")
    period = _read_words(cgroup_root / "cpu" / "cpu.cfs_period_us")
    if quota and period:
        return _ratio(quota[0], period[0])
    return None


def _read_words(path: Path) -> list[str] | None:
    try:
        return path.read_text().split()
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    """`max` or `-1` mean unlimited; anything unreadable is treated as no limit."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


@dataclass(frozen=True)
class ThreadBudget:
    """Threads of one server process: its share of the CPUs, unless a setting says otherwise.

    One onnxruntime session and OpenCV's pool are shared by all the requests of a process, so
    sizing them to the process's share keeps WORKERS processes from oversubscribing the CPUs.
    """

    onnxruntime: int
    opencv: int

    @classmethod
    def for_process(
        cls, *, workers: int, intra_op_threads: int = 0, opencv_threads: int = 0, cpus: int = 0
    ) -> ThreadBudget:
        share = max(1, (cpus or available_cpus()) // workers)
        return cls(onnxruntime=intra_op_threads or share, opencv=opencv_threads or share)
