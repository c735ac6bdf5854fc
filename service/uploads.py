"""Upload size limits, enforced while the request body streams in.

Starlette would otherwise spool any multipart body, however large, before the endpoint runs.
`BodySizeLimit` counts the bytes as they arrive and stops reading at the limit: a request that
announces too large a `Content-Length` is answered 413 without reading anything, and one that
streams past the limit (chunked, or lying about its length) is cut off at the limit.

Starlette spools each uploaded file over 1 MB to the temporary directory. When that directory is
full, the upload is answered 507 with a JSON `detail` (`answer_disk_full`), not the 400 FastAPI
makes of any error while it parses a body, nor a 500: the next upload succeeds once there is room.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

from fastapi import Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.images import ImageRejected
from service.metrics import UPLOADS_REFUSED
from service.middleware import HttpMiddleware
from service.retry import DISK_FULL_SECONDS, retry_after

MULTIPART_OVERHEAD = 64 * 1024
"""Room for multipart boundaries and part headers on top of the file itself."""

DEFAULT_BODY_LIMIT = 64 * 1024
"""Paths without a limit of their own take no uploads."""

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL = (
    "the service has no room left to hold the upload (its temporary directory is full): "
    "retry later, or send a smaller file"
)


class BodyTooLarge(HTTPException):
    """Raised inside the body stream; FastAPI passes HTTPExceptions from body parsing through."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=body_too_large(limit))


def body_too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes: send a smaller file"


class BodySizeLimit(HttpMiddleware):
    """ASGI middleware: a byte limit on request bodies, per path."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        super().__init__(app)
        self.limits = dict(limits)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get(scope["path"].rstrip("/") or "/", DEFAULT_BODY_LIMIT)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = JSONResponse(
                {"detail": body_too_large(limit)}, status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return

        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_within_limit, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes | ImageRejected:
    """The file's bytes, or why it cannot be used. Its name is never used for anything."""
    if upload.size is not None and upload.size > max_bytes:
        return _file_too_large(upload.size, max_bytes)
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        return _file_too_large(None, max_bytes)
    if not data:
        return ImageRejected(400, "the uploaded file is empty", reason="empty")
    return data


def spooled_upload(upload: UploadFile, max_bytes: int) -> ImageRejected | None:
    """Why an upload read from where the server spooled it (a video, decoded as a stream, not
    read into memory) cannot be used, or None: the same size refusals as `read_upload`."""
    if upload.size is not None and upload.size > max_bytes:
        return _file_too_large(upload.size, max_bytes)
    if not upload.size:
        return ImageRejected(400, "the uploaded file is empty", reason="empty")
    return None


def _file_too_large(size: int | None, max_bytes: int) -> ImageRejected:
    size_text = f"{size} bytes" if size is not None else f"over {max_bytes} bytes"
    return ImageRejected(413, f"the file is {size_text}; the limit is {max_bytes} bytes")


def _disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk or quota."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def _disk_full_response() -> JSONResponse:
    UPLOADS_REFUSED.labels(reason="disk_full").inc()
    return JSONResponse(
        {"detail": DISK_FULL},
        status_code=507,
        headers=retry_after(DISK_FULL_SECONDS),
    )


async def answer_http_error(request: Request, error: HTTPException) -> Response:
    """FastAPI's answer to an `HTTPException`, but 507 where the error came from a full disk
    (FastAPI turns a failed spool into a 400 "error parsing the body")."""
    if _disk_full(error):
        return _disk_full_response()
    return await http_exception_handler(request, error)


async def answer_disk_full(request: Request, error: OSError) -> Response:
    """507 for a full disk met anywhere else; any other `OSError` is a bug of ours (a 500)."""
    if _disk_full(error):
        return _disk_full_response()
    raise error
