"""Uploaded bytes -> a validated, decoded, upright grayscale image.

Everything a client can get wrong about a file is caught here and raised as `ImageRejected`,
which carries the HTTP status and a message that says what to send instead. Pillow reads the
header first; the pixel count and aspect ratio are checked on it before a single pixel is
decoded, so a 1 KB file that claims 100000x100000 pixels costs nothing.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
"""Pillow format names tried on an upload; anything else (SVG, HTML, zip, GIF...) is refused."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_BACKGROUND = (255, 255, 255, 255)
"""Transparent pixels are shown on white, as a browser shows them on a default page."""


_REASON_BY_STATUS = {400: "corrupt", 413: "too_large", 415: "not_an_image", 422: "aspect_ratio"}


class ImageRejected(Exception):
    """An upload that cannot be used; `status_code` and `detail` go back to the client, and
    `reason` (a short fixed word) labels the rejection in the service's metrics."""

    def __init__(self, status_code: int, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.reason = reason or _REASON_BY_STATUS.get(status_code, "other")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_aspect_ratio: float


def decode_grayscale(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode an upload into an upright `uint8` grayscale array of shape `(height, width)`.

    EXIF orientation is applied, so the array (and every box measured on it) is the image as a
    viewer shows it. Multi-frame files (animated WebP/PNG, multi-page TIFF) give their first frame.
    """
    if not data:
        raise ImageRejected(400, "the uploaded file is empty", reason="empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(413, f"the file is {len(data)} bytes; the limit is {limits.max_bytes}")
    image = _open_header(data, limits)
    with image:
        if image.format == "JPEG" and image.mode == "RGB":
            # Decode the luma channel only: the same gray (ITU-R 601) at a third of the memory
            # and time of decoding colour and converting it.
            image.draft("L", image.size)
        try:
            image.load()
        except Image.DecompressionBombError as error:
            raise _too_many_pixels(image.size, limits) from error
        except Exception as error:
            # Pillow's decoders signal a damaged file with many exception types (OSError,
            # SyntaxError, ValueError, struct.error, EOFError...): all of them are the client's.
            raise ImageRejected(
                400, f"the {image.format} image is truncated or corrupt ({error})"
            ) from error
        upright = _exif_upright(image)
        return _to_grayscale(upright)


def _open_header(data: bytes, limits: ImageLimits) -> Image.Image:
    # Pillow refuses on its own past twice its MAX_IMAGE_PIXELS (DecompressionBombError); below
    # that, the pixel limit checked here answers first. (warnings.catch_warnings would silence
    # Pillow's warning for such sizes, but it is not thread-safe.)
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as error:
        raise ImageRejected(
            415, "the file is not a supported image: send JPEG, PNG, WebP, BMP or TIFF"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageRejected(
            413,
            f"the image claims more than the limit of {limits.max_pixels} pixels",
            reason="too_many_pixels",
        ) from error
    except Exception as error:
        raise ImageRejected(400, f"the image header is corrupt ({error})") from error

    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageRejected(400, f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        image.close()
        raise _too_many_pixels(image.size, limits)
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        image.close()
        raise ImageRejected(
            422,
            f"the image is {width}x{height}: its aspect ratio {ratio:.1f} is over the limit of "
            f"{limits.max_aspect_ratio:g}",
        )
    return image


def _too_many_pixels(size: tuple[int, int], limits: ImageLimits) -> ImageRejected:
    width, height = size
    return ImageRejected(
        413,
        f"the image is {width}x{height} = {width * height} pixels; the limit is "
        f"{limits.max_pixels}: send a smaller image",
        reason="too_many_pixels",
    )


def _exif_upright(image: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag; a damaged EXIF block leaves the image as is."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:
        log.info("ignoring unreadable EXIF orientation: %s", error)
        return image


def _to_grayscale(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit samples (0..65535) to 8-bit; 32-bit integer TIFFs are clipped to that range.
        wide = np.asarray(image).astype(np.float32)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if mode == "F":
        raise ImageRejected(
            415,
            "32-bit floating-point images are not supported: send 8- or 16-bit",
            reason="unsupported_depth",
        )
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND)
        image = Image.alpha_composite(background, rgba)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)
