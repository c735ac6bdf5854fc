"""Uploaded bytes -> a validated, decoded, upright grayscale image.

Everything a client can get wrong about a file is caught here and raised as `ImageRejected`,
which carries the HTTP status and a message that says what to send instead. Pillow reads the
header first; the pixel count and aspect ratio are checked on it before a single pixel is
decoded, so a 1 KB file that claims 100000x100000 pixels costs nothing.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
"""Pillow format names tried on an upload; anything else (SVG, HTML, zip, GIF...) is refused."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn the image a quarter: its upright width is its stored height."""
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


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded upright, possibly at a fraction of its resolution.

    `pixels` is what the pipeline works on (grayscale, or RGB for drawing the answer); `width`
    and `height` are the full upright size that answers report, so boxes found on `pixels` are
    mapped back by `width / pixels width`.
    """

    pixels: np.ndarray
    width: int
    height: int


def decode_grayscale(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode an upload into an upright `uint8` grayscale array of shape `(height, width)`.

    EXIF orientation is applied, so the array (and every box measured on it) is the image as a
    viewer shows it. Multi-frame files (animated WebP/PNG, multi-page TIFF) give their first frame.
    """
    return decode_upright(data, limits).pixels


def decode_rgb(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode an upload into an upright `uint8` RGB array of shape `(height, width, 3)`: the same
    pixels `decode_grayscale` sees, in colour, for drawing the answer on what the client sent."""
    return _decode(data, limits, "RGB", min_side=None).pixels


def decode_upright(
    data: bytes, limits: ImageLimits, *, min_side: int | None = None
) -> DecodedImage:
    """`decode_grayscale`, and with `min_side` a JPEG is decoded at a reduced size: 1/2, 1/4 or
    1/8 of its resolution, the smallest whose longer side is still at least `min_side` pixels.

    libjpeg scales while it decodes (it drops DCT coefficients), so a 12-megapixel photo decoded
    at 1/4 costs about a tenth of the full decode and a sixteenth of the memory; the pipeline
    asks for just enough pixels to find faces and cut 48x48 crops. Other formats cannot decode
    partially and are decoded in full.
    """
    return _decode(data, limits, "L", min_side)


def _decode(
    data: bytes, limits: ImageLimits, mode: Literal["L", "RGB"], min_side: int | None
) -> DecodedImage:
    """The upload decoded, upright, 8-bit, without alpha (see `_flatten`), in `mode` (gray "L"
    or colour "RGB"). The conversion happens before the file is closed: a closed
    image cannot be read."""
    if not data:
        raise ImageRejected(400, "the uploaded file is empty", reason="empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(413, f"the file is {len(data)} bytes; the limit is {limits.max_bytes}")
    image = _open_header(data, limits)
    with image:
        full_width, full_height = image.size
        if image.format == "JPEG":
            # Gray: decode the luma channel only (RGB files), the same gray (ITU-R 601) at a
            # third of the memory and time of decoding colour and converting it. Either mode
            # may decode at reduced size.
            image.draft(mode if mode == "L" else image.mode, _draft_size(image.size, min_side))
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
        upright, swapped = _exif_upright(image)
        if swapped:
            full_width, full_height = full_height, full_width
        pixels = np.asarray(_flatten(upright).convert(mode), dtype=np.uint8)
        return DecodedImage(pixels, full_width, full_height)


def _draft_size(size: tuple[int, int], min_side: int | None) -> tuple[int, int]:
    """The size to ask Pillow's JPEG `draft` for: it picks the largest reduction (8, 4, 2) that
    keeps the image at least this large."""
    width, height = size
    if min_side is None or max(width, height) <= min_side:
        return size
    scale = min_side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


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


def _exif_upright(image: Image.Image) -> tuple[Image.Image, bool]:
    """Rotate/flip per the EXIF orientation tag, and say whether that swapped width and height;
    a damaged EXIF block leaves the image as is."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        return ImageOps.exif_transpose(image), orientation in _SWAPPING_ORIENTATIONS
    except Exception as error:
        log.info("ignoring unreadable EXIF orientation: %s", error)
        return image, False


def _flatten(image: Image.Image) -> Image.Image:
    """8-bit L or RGB: 16-bit samples scaled down, transparency shown on white, palettes,
    CMYK and YCbCr expanded."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit samples (0..65535) to 8-bit; 32-bit integer TIFFs are clipped to that range.
        wide = np.asarray(image).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
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
    return image
