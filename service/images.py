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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from service.memory_budget import BudgetExhausted, MemoryBudget

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
"""Pillow format names tried on an upload; anything else (SVG, HTML, zip, GIF...) is refused."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn the image a quarter: its upright width is its stored height."""
_TRANSPOSE_BY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""What turns an image with each EXIF orientation upright (as `ImageOps.exif_transpose` does)."""
_EIGHT_BIT_BAND_PIXELS = 1 << 20
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
"""Bytes a pixel in Pillow's memory, by mode; every other mode takes 4."""
_ALPHA_BACKGROUND = "white"
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
    memory: MemoryBudget | None = None
    """Shared by every decode of the process (`service.memory_budget`); None: unbounded, for
    the command-line tools that decode one image at a time."""


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
            with _reserved(limits.memory, _decoding_bytes(image, mode, full_width * full_height)):
                return _load_upright(image, mode, limits, full_width, full_height)
        except BudgetExhausted as error:
            raise ImageRejected(
                503,
                "the service is decoding other large images: retry in a few seconds, or send a "
                "smaller image",
                reason="decoding_busy",
            ) from error


def _load_upright(
    image: Image.Image,
    mode: Literal["L", "RGB"],
    limits: ImageLimits,
    full_width: int,
    full_height: int,
) -> DecodedImage:
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
    # Flattened to `mode` before it is turned upright: a 48-megapixel RGBA file is 190 MB as
    # Pillow holds it, and every full-size copy of it counts against the process's memory.
    orientation = _exif_orientation(image)
    flat = _flatten(image, mode)
    if orientation in _TRANSPOSE_BY_ORIENTATION:
        flat = flat.transpose(_TRANSPOSE_BY_ORIENTATION[orientation])
    if orientation in _SWAPPING_ORIENTATIONS:
        full_width, full_height = full_height, full_width
    return DecodedImage(np.asarray(flat, dtype=np.uint8), full_width, full_height)


def _reserved(budget: MemoryBudget | None, nbytes: int) -> AbstractContextManager[None]:
    return nullcontext() if budget is None else budget.reserve(nbytes)


def _decoding_bytes(image: Image.Image, mode: Literal["L", "RGB"], full_pixels: int) -> int:
    """The memory that decoding `image` (its header read, a JPEG's draft size set) into `mode`
    takes at its peak, from the header alone: 1.0-1.9x what 48-megapixel PNG, TIFF and JPEG
    files of every kind measured. Pillow keeps multi-band pixels in 4 bytes; the flattening
    makes a copy or two of the output."""
    width, height = image.size
    output = width * height * (4 if mode == "RGB" else 1)
    storage = width * height * _STORAGE_BYTES.get(image.mode, 4)
    if image.format != "JPEG":
        return storage + max(storage, output) + 2 * output
    # libjpeg decodes a baseline file a few rows at a time, at the draft's reduced size; a
    # progressive one first gathers every DCT coefficient (2 bytes a pixel of each component,
    # at full size whatever the draft), then decodes.
    coefficients = 0
    if image.info.get("progressive") or image.info.get("progression"):
        sampling = [(h, v) for _, h, v, _ in getattr(image, "layer", [])] or [(1, 1)]
        most = max(h for h, _ in sampling) * max(v for _, v in sampling)
        coefficients = sum(2 * full_pixels * h * v // most for h, v in sampling)
    return coefficients + storage + 2 * output


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


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright as stored); a damaged EXIF block counts as 1."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as error:
        log.info("ignoring unreadable EXIF orientation: %s", error)
        return 1


def _flatten(image: Image.Image, mode: Literal["L", "RGB"]) -> Image.Image:
    """`image` as 8-bit `mode`: 16-bit samples scaled down, transparency shown on white,
    palettes, CMYK and YCbCr expanded. Each step makes at most one copy the size of the output,
    besides the decoded image itself (a hostile client's 48-megapixel file must not cost a
    gigabyte)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        narrow = _eight_bit(image)
        return narrow if mode == "L" else narrow.convert(mode)
    if image.mode == "F":
        raise ImageRejected(
            415,
            "32-bit floating-point images are not supported: send 8- or 16-bit",
            reason="unsupported_depth",
        )
    if image.mode in ("RGBA", "LA") or _has_transparency(image):
        with_alpha = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
        shown = Image.new(mode, image.size, _ALPHA_BACKGROUND)
        shown.paste(with_alpha.convert(mode), mask=with_alpha.getchannel("A"))
        return shown
    if image.mode not in ("L", "RGB", "P", "1"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB...: through RGB, as browsers show them
    return image if image.mode == mode else image.convert(mode)


def _has_transparency(image: Image.Image) -> bool:
    """Modes with an alpha channel other than RGBA and LA (premultiplied, palette), or a palette
    with a transparent entry."""
    return image.mode in ("PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit samples (0..65535) rounded to 8-bit, a band of rows at a time so that no temporary
    is the size of the image; 32-bit integer TIFFs are clipped to that range."""
    width, height = image.size
    narrow = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _EIGHT_BIT_BAND_PIXELS // width)
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=np.int64)
        narrow[top : top + rows] = np.clip((band + 128) // 257, 0, 255)
    return Image.fromarray(narrow)
