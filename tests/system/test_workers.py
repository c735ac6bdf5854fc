"""Several worker processes (`WORKERS`), each with its share of the CPUs, and /metrics that adds
them up; and how that share is counted."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

import cv2
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contract.provenance import machine_description
from harness.server import service_process
from service.cpus import ThreadBudget, available_cpus, cgroup_cpu_quota


def _predict_total(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "emotion_http_requests_total" and sample.labels["route"] == "/predict"
    )


def test_two_workers_share_the_cpus_and_add_up_their_metrics(model_path, portrait_bytes, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over by an earlier run")
    settings = {"WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with service_process(model_path, settings=settings) as service:
        assert not (metrics_dir / "counter_999999.db").exists()  # emptied at start
        output = _wait_for_two(service)
        share = ThreadBudget.for_process(workers=2)
        started = re.findall(
            rf"process (\d+) serving model \w+ from .* with {share.onnxruntime} onnxruntime "
            rf"and {share.opencv} OpenCV threads, .* on {re.escape(machine_description())}",
            output,
        )
        assert len(set(started)) == 2, output
        # The supervisor checked the files in a child process: it holds no runtime of its own.
        supervisor = Path(f"/proc/{service.process.pid}/maps").read_text()
        assert "onnxruntime" not in supervisor and "cv2" not in supervisor
        sent = 0
        with httpx.Client(base_url=service.url, timeout=30) as http:
            # until both workers have answered some (the kernel picks who accepts)
            deadline = time.monotonic() + 60
            while len(_pids_with_counters(metrics_dir)) < 2:
                assert time.monotonic() < deadline, "one worker answered everything"
                with httpx.Client(base_url=service.url, timeout=30) as fresh:  # new connection
                    assert fresh.post("/predict", files={"file": portrait_bytes}).is_success
                sent += 1
            assert _pids_with_counters(metrics_dir) == set(started)
            for _ in range(4):  # whichever worker answers /metrics, it counts everything
                assert _predict_total(http.get("/metrics").text) == sent


def _wait_for_two(service) -> str:
    """The output once both workers have said what they serve, with how many threads."""
    deadline = time.monotonic() + 30
    while len(re.findall("OpenCV threads", output := service.output())) < 2:
        assert time.monotonic() < deadline, output
        time.sleep(0.05)
    return output


def _pids_with_counters(directory: Path) -> set[str]:
    return {path.stem.split("_")[-1] for path in directory.glob("counter_*.db")}


def test_each_process_sizes_onnxruntime_and_opencv_to_its_share(make_client):
    expected = ThreadBudget.for_process(workers=2)
    with make_client(workers=2) as client:
        session = client.app.state.service.model.session
        assert session.get_session_options().intra_op_num_threads == expected.onnxruntime
        assert cv2.getNumThreads() == expected.opencv
    with make_client(workers=2, intra_op_threads=3, opencv_threads=2) as client:
        session = client.app.state.service.model.session
        assert session.get_session_options().intra_op_num_threads == 3
        assert cv2.getNumThreads() == 2


@pytest.mark.parametrize(
    ("workers", "cpus", "share"),
    [(1, 2, 2), (2, 2, 1), (4, 2, 1), (2, 16, 8), (3, 16, 5)],
)
def test_the_share_of_each_process(workers, cpus, share):
    assert ThreadBudget.for_process(workers=workers, cpus=cpus) == ThreadBudget(share, share)
    assert ThreadBudget.for_process(
        workers=workers, cpus=cpus, intra_op_threads=7, opencv_threads=5
    ) == ThreadBudget(7, 5)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({}, None),
        ({"cpu.max": "garbage\n"}, None),
    ],
    ids=["v2-unlimited", "v2-1.5", "v2-2", "v1-unlimited", "v1-half", "none", "unreadable"],
)
def test_the_cgroup_cpu_quota_is_read_from_v2_or_v1(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_a_cpu_quota_caps_the_cpus_counted(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1  # half a CPU rounds up to one
    assert available_cpus(tmp_path / "nothing-here") >= 1


AVX512_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
"""


@pytest.mark.parametrize(
    ("cpuinfo", "described"),
    [
        (AVX512_EPYC, "AMD EPYC 9R14, {cores} cores, avx2 avx512f avx512_vnni avx512_bf16"),
        (
            AVX512_EPYC.replace(" avx512f avx512bw avx512_vnni avx512_bf16", ""),
            "AMD EPYC 9R14, {cores} cores, avx2",
        ),
    ],
    ids=["avx512", "avx2"],
)
def test_the_machine_is_named_with_the_features_that_set_its_speed(tmp_path, cpuinfo, described):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert machine_description(tmp_path / "cpuinfo") == described.format(cores=os.cpu_count())


def test_a_machine_without_cpuinfo_is_still_named(tmp_path):
    assert (
        machine_description(tmp_path / "missing") == f"{platform.machine()}, {os.cpu_count()} cores"
    )
