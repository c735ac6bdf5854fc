"""Upload size limits, enforced while the request body streams in.

Starlette would otherwise spool any multipart body, however large, before the endpoint runs.
`BodySizeLimit` counts the bytes as they arrive and stops reading at the limit: a request that
announces too large a `Content-Length` is answered 413 without reading anything, and one that
streams past the limit (chunked, or lying about its length) is cut off at the limit.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.images import ImageRejected

MULTIPART_OVERHEAD = 64 * 1024
"""Room for multipart boundaries and part headers on top of the file itself."""

DEFAULT_BODY_LIMIT = 64 * 1024
"""Paths without a limit of their own take no uploads."""


class BodyTooLarge(HTTPException):
    """Raised inside the body stream; FastAPI passes HTTPExceptions from body parsing through."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=body_too_large(limit))


def body_too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit} bytes: send a smaller file"


class BodySizeLimit:
    """ASGI middleware: a byte limit on request bodies, per path."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        self.app = app
        self.limits = dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
