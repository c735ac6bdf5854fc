"""Run `python -m service` as a real process on a free port, as `make serve` and Docker do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def running_service(
    model_path: Path,
    *,
    python: str = sys.executable,
    cwd: Path | None = None,
    settings: Mapping[str, str] | None = None,
    command: tuple[str, ...] = ("-m", "service"),
) -> Iterator[str]:
    """Start the service, wait until /ready says 200, yield its base URL, then stop it.
    `command` follows `python`; `{port}` in it is replaced by the port."""
    port = free_port()
    env = service_env(model_path, HOST="127.0.0.1", PORT=str(port), **(settings or {}))
    process = subprocess.Popen(
        [python, *(part.format(port=port) for part in command)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, base_url)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def _wait_until_ready(process: subprocess.Popen[str], base_url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"the service exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready at {base_url} after {STARTUP_SECONDS} s")
