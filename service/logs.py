"""Log records for people (`LOG_FORMAT=text`) or for a log collector (`LOG_FORMAT=json`).

Every record carries the id of the request it belongs to (or "-" outside a request), also in
worker threads: the id lives in a context variable, which anyio copies into the threads that
run the pipeline. uvicorn's own loggers get the same format, so one process writes one kind of
line; uvicorn's access log is replaced by the service's own line per request (`service.access`).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: ContextVar[str] = ContextVar("request_id", default="-")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
"""What an incoming X-Request-ID may look like to be kept (UUIDs, trace ids, ULIDs...); anything
else (too long, spaces, control characters that could forge log lines) is replaced."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(incoming: str | None) -> str:
    """Adopt the client's request id when it is sane, else make one; it applies to the rest of
    the current context (the request's task and the threads it starts)."""
    request_id = incoming if incoming and _SANE_REQUEST_ID.fullmatch(incoming) else None
    request_id = request_id or uuid.uuid4().hex
    _request_id.set(request_id)
    return request_id


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id (a filter on the handler, so records
    of every logger, uvicorn's included, get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and every `extra`
    field given to the logging call (status, duration_ms, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", _request_id.get()),
        }
        entry.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key != "color_message"
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the service and uvicorn (given to uvicorn, which
    applies it in every worker process)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
        "formatter": "default",
        "filters": ["request_id"],
    }
    logger = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "service": logger,
            "uvicorn": logger,
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
