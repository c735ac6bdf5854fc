"""Run `python -m service` as a real process on a free port, as `make serve` and Docker do."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_env(model_path: Path | None, **settings: str) -> dict[str, str]:
    """The current environment without the service's settings (nor PYTHONPATH: the service must
    import from its working directory), plus `settings`."""
    unwanted = {"HOST", "PORT", "MODEL_PATH", "PYTHONPATH"}
    env = {key: value for key, value in os.environ.items() if key not in unwanted}
    if model_path is not None:
        env["MODEL_PATH"] = str(model_path)
    env.update(settings)
    return env


@dataclass
class ServiceProcess:
    """A started service: its URL, its process, and when it started and became ready."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    """The process's stdout and stderr: a file, not a pipe nobody reads, which would block the
    server once a few thousand access-log lines had filled it."""
    started_at: float
    """`time.monotonic()` just before the process was spawned."""
    ready_at: float = math.nan
    """`time.monotonic()` when `/ready` first answered 200."""

    @property
    def startup_seconds(self) -> float:
        return self.ready_at - self.started_at

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, seconds: float = 10) -> str:
        """The output once it contains `text` (a log line is written just after its answer)."""
        deadline = time.monotonic() + seconds
        while text not in (output := self.output()):
            assert time.monotonic() < deadline, f"no {text!r} in the output:\n{output}"
            time.sleep(0.05)
        return output


@contextmanager
def service_process(
    model_path: Path | None,
    *,
    python: str = sys.executable,
    cwd: Path | None = None,
    settings: Mapping[str, str] | None = None,
    command: tuple[str, ...] = ("-m", "service"),
    poll_seconds: float = 0.2,
) -> Iterator[ServiceProcess]:
    """Start the service, wait until /ready says 200 (asking every `poll_seconds`), yield it,
    then stop it (SIGTERM, then SIGKILL after 20 s). `command` follows `python`; `{port}` in it
    is replaced by the port."""
    port = free_port()
    env = service_env(model_path, HOST="127.0.0.1", PORT=str(port), **(settings or {}))
    with tempfile.TemporaryDirectory(prefix="service-") as logs:
        log_path = Path(logs) / "output.log"
        with log_path.open("wb") as log:
            started_at = time.monotonic()
            process = subprocess.Popen(
                [python, *(part.format(port=port) for part in command)],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = ServiceProcess(f"http://127.0.0.1:{port}", process, log_path, started_at)
        try:
            _wait_until_ready(service, poll_seconds)
            yield service
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_service(model_path: Path | None, **options: Any) -> Iterator[str]:
    """`service_process` (same options), yielding only the base URL."""
    with service_process(model_path, **options) as service:
        yield service.url


def _wait_until_ready(service: ServiceProcess, poll_seconds: float) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"the service exited with {service.process.returncode}:\n{service.output()}"
            )
        try:
            if httpx.get(f"{service.url}/ready", timeout=2).status_code == 200:
                service.ready_at = time.monotonic()
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_seconds)
    raise RuntimeError(f"the service was not ready at {service.url} after {STARTUP_SECONDS} s")


def can_mount_privately(script: str) -> bool:
    """Whether `script` (mount commands) runs in a private mount namespace of its own: it needs
    Linux, `unshare`, and root or the capability to mount."""
    if sys.platform != "linux" or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
    )
    return probe.returncode == 0
