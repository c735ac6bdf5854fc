"""`python -m service`: check the model and the face detector, then serve with uvicorn.

The model and the face detector are loaded (the model warmed up) before the server starts, so
a missing or unusable file stops the process at once with one clear message and a non-zero exit
status, not a traceback. With one worker those are the ones served. With `WORKERS` > 1 uvicorn
starts that many processes from the app factory; each loads and warms its own copies in its
lifespan before it takes a connection, and their metrics meet in a directory on the temporary
file system; their supervisor checks the files in a short-lived child process
(`service.startup`), so that it holds no copy of its own.
"""

from __future__ import annotations

import logging.config
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from service.connections import OPEN_FILES_BESIDES_CONNECTIONS, GuardedHttpProtocol
from service.logs import logging_config
from service.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from service.settings import Settings
from service.startup import Unservable, check_in_a_child, load_checked

EXIT_CONFIGURATION = 2


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"error: bad configuration in the environment:\n{error}", file=sys.stderr)
        return EXIT_CONFIGURATION
    log_config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(log_config)

    try:
        served = load_checked(settings) if settings.workers == 1 else check_in_a_child()
    except Unservable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION

    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": log_config,
        "access_log": False,  # the service logs each request itself, with its request id
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "http": GuardedHttpProtocol,  # header timeout and size, connection limit
    }
    _allow_open_files(settings.max_connections + OPEN_FILES_BESIDES_CONNECTIONS)
    # uvicorn shuts down gracefully at SIGTERM and then raises the signal again for whatever
    # handled it before; with this no-op handler there, a requested stop that went well exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if served is not None:
        from service.app import create_app

        model, detector = served
        uvicorn.run(create_app(settings, model=model, detector=detector), **options)
    else:
        config = uvicorn.Config(
            "service.app:create_app", factory=True, workers=settings.workers, **options
        )
        with _metrics_shared_between_workers():
            _Workers(config, sockets=[config.bind_socket()]).run()
    return 0


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files towards `wanted` (as far as the hard limit allows), so
    that MAX_CONNECTIONS, not a default of 1024 descriptors, bounds the connections; the worker
    processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class _Workers(Multiprocess):
    """uvicorn's supervisor of worker processes (what `uvicorn.run` uses for workers > 1), which
    also lets go of the listening socket at SIGTERM. Each worker closes its copy when it starts
    to shut down, but the supervisor's own copy would keep the port open: new connections would
    wait in the backlog until every worker had finished, then be reset, instead of being refused
    at once (so that a client or load balancer tries elsewhere)."""

    def handle_term(self) -> None:
        self._close_sockets()
        super().handle_term()

    def handle_int(self) -> None:
        self._close_sockets()
        super().handle_int()

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


@contextmanager
def _metrics_shared_between_workers() -> Iterator[None]:
    """Point the workers at an empty directory for their metrics (they inherit the environment):
    the one PROMETHEUS_MULTIPROC_DIR names, else a fresh one in the temporary directory, removed
    at the end."""
    given = os.environ.get(MULTIPROC_ENV)
    directory = Path(given or tempfile.mkdtemp(prefix="emotion-metrics-"))
    prepare_multiprocess_dir(directory)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
