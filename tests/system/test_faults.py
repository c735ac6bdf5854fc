"""Parts failing under a real `python -m service`: a worker process killed, the temporary directory
full, the model file replaced or deleted. Each time the service keeps answering, says what is
wrong where it can, and recovers when the part comes back.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from harness.load import LoadRun, run_load
from harness.server import ServiceProcess, can_mount_privately, service_process
from service.uploads import DISK_FULL
from tests.system.test_slow_clients import metric

LOAD_CLIENTS = 4


def _workers(service: ServiceProcess) -> set[int]:
    """The pids of the live worker processes uvicorn's supervisor has started (not its helpers).

    A worker just killed stays a zombie until the supervisor reaps it: it is no worker any more,
    and its command line can no longer be read."""
    workers = set()
    for child in psutil.Process(service.process.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                workers.add(child.pid)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return workers


def _serving_pids(output: str) -> list[str]:
    return re.findall(r"process (\d+) serving model", output)


def test_a_worker_killed_under_load_fails_only_its_own_requests_and_is_replaced(
    model_path, portrait_bytes
):
    """WORKERS=2 under a steady load; one worker is killed with SIGKILL. The other goes on
    answering, at most the requests in flight on the killed one fail (one per client), and the
    supervisor starts a new worker, which serves."""
    with service_process(model_path, settings={"WORKERS": "2", "LOG_LEVEL": "info"}) as service:
        deadline = time.monotonic() + 60
        while len(_workers(service)) < 2 or len(_serving_pids(service.output())) < 2:
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.1)
        victim = min(_workers(service))
        runs: list[LoadRun] = []
        loader = threading.Thread(
            target=lambda: runs.append(
                run_load(service.url, [portrait_bytes], clients=LOAD_CLIENTS, seconds=6)
            )
        )
        loader.start()
        time.sleep(2)  # the load is under way on both workers
        os.kill(victim, signal.SIGKILL)
        loader.join()
        (run,) = runs
        failed = run.with_status(None)
        assert set(run.statuses) <= {200, None}, run.statuses
        assert len(failed) <= LOAD_CLIENTS, [outcome.error for outcome in failed]
        assert len(run.with_status(200)) > len(failed)

        deadline = time.monotonic() + 60
        while len(_workers(service)) < 2 or len(_serving_pids(service.output())) < 3:
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.1)
        assert victim not in _workers(service)
        for _ in range(10):
            with httpx.Client(base_url=service.url, timeout=30) as fresh:  # any worker may accept
                assert fresh.post("/predict", files={"file": portrait_bytes}).status_code == 200


def _can_mount_a_tmpfs() -> bool:
    with tempfile.TemporaryDirectory() as directory:
        return can_mount_privately(f"mount -t tmpfs -o size=1m tmpfs {directory}")


@pytest.fixture
def service_on_a_small_tmpfs(model_path, tmp_path) -> Iterator[tuple[ServiceProcess, Path]]:
    """The service with TMPDIR on a 4 MB tmpfs of its own (a private mount namespace), and that
    directory as this process sees it (through the service's /proc root)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    script = (
        f"mount -t tmpfs -o size=4m,mode=1777 tmpfs {scratch} && exec {sys.executable} -m service"
    )
    with service_process(
        model_path,
        python="unshare",
        command=("--mount", "--propagation", "private", "sh", "-c", script),
        settings={"TMPDIR": str(scratch), "LOG_LEVEL": "warning"},
    ) as service:
        yield service, Path(f"/proc/{service.process.pid}/root") / scratch.relative_to("/")


def _fill(directory: Path) -> Path:
    """A file that takes every free byte of `directory`'s file system, once the files the
    service spooled there before are gone (it closes them just after its answer)."""
    deadline = time.monotonic() + 10
    while (stat := os.statvfs(directory)).f_bfree < stat.f_blocks - 16:
        assert time.monotonic() < deadline, "the service still holds spooled files"
        time.sleep(0.05)
    filler = directory / "filler"
    try:
        with filler.open("wb") as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    except OSError as error:
        assert error.errno == errno.ENOSPC
    return filler


@pytest.mark.skipif(not _can_mount_a_tmpfs(), reason="needs root and mount namespaces (unshare)")
def test_a_full_temporary_directory_is_a_507_and_the_service_recovers(
    service_on_a_small_tmpfs, portrait_bytes
):
    """Files over 1 MB are spooled to the temporary directory: while it is full they are
    refused with 507 and a JSON detail (smaller ones, kept in memory, still succeed), and once
    there is room again they succeed."""
    service, tmpdir = service_on_a_small_tmpfs
    big = portrait_bytes + b"\0" * 1_500_000  # JPEG decoders ignore bytes after the image
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.post("/predict", files={"file": big}).status_code == 200
        refused_before = metric(service.url, "emotion_uploads_refused_total", reason="disk_full")
        filler = _fill(tmpdir)
        refused = http.post("/predict", files={"file": big})
        assert refused.status_code == 507, refused.text
        assert refused.json() == {"detail": DISK_FULL}
        assert refused.headers["retry-after"]
        batch = http.post("/predict/batch", files=[("files", big), ("files", portrait_bytes)])
        assert batch.status_code == 507
        assert http.post("/predict", files={"file": portrait_bytes}).status_code == 200
        after = metric(service.url, "emotion_uploads_refused_total", reason="disk_full")
        assert after - refused_before == 2
        filler.unlink()
        assert http.post("/predict", files={"file": big}).status_code == 200
    assert "Traceback" not in service.output()


def test_the_model_file_replaced_or_deleted_while_serving(model_path, portrait_bytes, tmp_path):
    """The service serves the model it loaded whatever happens to the file, and /model says
    whether the file on disk is still that model."""
    served = tmp_path / "emotion.onnx"
    shutil.copyfile(model_path, served)
    with (
        service_process(served, settings={"LOG_LEVEL": "warning"}) as service,
        httpx.Client(base_url=service.url, timeout=30) as http,
    ):
        model = http.get("/model").json()
        assert model["file_on_disk"] == "unchanged"

        def still_serving() -> None:
            answer = http.post("/predict", files={"file": portrait_bytes})
            assert answer.status_code == 200
            assert answer.json()["model"] == model["id"]
            assert http.get("/ready").status_code == 200

        replacement = tmp_path / "replacement.onnx"
        replacement.write_bytes(b"not a model: a deploy half done")
        replacement.replace(served)  # atomically, as a deploy would
        still_serving()
        assert http.get("/model").json()["file_on_disk"] == "replaced"

        served.write_bytes(model_path.read_bytes()[:1000])  # overwritten in place, truncated
        still_serving()
        assert http.get("/model").json()["file_on_disk"] == "replaced"

        served.unlink()
        still_serving()
        assert http.get("/model").json() == {**model, "file_on_disk": "missing"}

        shutil.copyfile(model_path, served)
        assert http.get("/model").json()["file_on_disk"] == "unchanged"
