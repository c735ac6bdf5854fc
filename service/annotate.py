"""An answer drawn on its image: a box and a label on every face, so a person can check at a
glance which face got which emotion. What `POST /predict/annotated` sends back.

The image is the one the client sent, decoded the way `/predict` decoded it (upright per EXIF,
8-bit, transparency on white), in colour, at its full size: the boxes land where `/predict` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from service.images import ImageLimits, decode_rgb
from service.schemas import Face

PNG = "image/png"
JPEG = "image/jpeg"
MediaType = Literal["image/png", "image/jpeg"]

JPEG_QUALITY = 90

EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (0xD6, 0x28, 0x28),
    "disgust": (0x6A, 0x8D, 0x1F),
    "fear": (0x7B, 0x4F, 0xC9),
    "happy": (0xF2, 0xB1, 0x1B),
    "neutral": (0x8A, 0x94, 0xA6),
    "sad": (0x2F, 0x6F, 0xD6),
    "surprise": (0x15, 0xA3, 0xA3),
}
"""RGB, one per emotion; the demo page (service/static/app.css) uses the same colours."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_REFERENCE_SIDE = 640
"""Lines and text are sized for an image of this longest side and scaled with the image, so a
label reads the same on a thumbnail and on a 12-megapixel photo."""


def annotated_image(
    upload: bytes, faces: Sequence[Face], limits: ImageLimits, media_type: MediaType
) -> bytes:
    """The upload with `faces` drawn on it, encoded as `media_type`."""
    canvas = cv2.cvtColor(decode_rgb(upload, limits), cv2.COLOR_RGB2BGR)
    draw_faces(canvas, faces)
    return encode(canvas, media_type)


def draw_faces(canvas: np.ndarray, faces: Sequence[Face]) -> None:
    """Draw, in place on a BGR image, each face's box and an `emotion NN%` label above it (inside
    the box when there is no room above, as for a whole-image face)."""
    height, width = canvas.shape[:2]
    unit = max(height, width) / _REFERENCE_SIDE
    thickness = max(1, round(2 * unit))
    font_scale = max(0.35, 0.7 * unit)
    for face in faces:
        box = face.box
        color = _bgr(EMOTION_COLORS[face.emotion])
        # The line is drawn inside the box, so a box on the image's edge stays fully visible.
        inset = thickness // 2
        cv2.rectangle(
            canvas,
            (box.x + inset, box.y + inset),
            (box.x + box.width - 1 - inset, box.y + box.height - 1 - inset),
            color,
            thickness,
            cv2.LINE_AA,
        )
        _label(canvas, f"{face.emotion} {face.confidence:.0%}", box.x, box.y, color, font_scale)


def _label(
    canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float
) -> None:
    """A filled tag with `text`, its bottom-left at (x, y), kept inside the image."""
    width = canvas.shape[1]
    weight = max(1, round(scale * 1.6))
    (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, weight)
    pad = max(2, round(text_height * 0.35))
    tag_width, tag_height = text_width + 2 * pad, text_height + baseline + 2 * pad
    left = min(max(0, x), max(0, width - tag_width))
    top = y - tag_height if y - tag_height >= 0 else y
    cv2.rectangle(canvas, (left, top), (left + tag_width, top + tag_height), color, cv2.FILLED)
    ink = (0, 0, 0) if _luminance(color) > 140 else (255, 255, 255)
    origin = (left + pad, top + pad + text_height)
    cv2.putText(canvas, text, origin, _FONT, scale, ink, weight, cv2.LINE_AA)


def encode(canvas: np.ndarray, media_type: MediaType) -> bytes:
    """A BGR image as PNG (lossless) or JPEG (quality `JPEG_QUALITY`) file bytes."""
    if media_type == JPEG:
        ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, data = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {canvas.shape} image as {media_type}")
    return data.tobytes()


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = rgb
    return blue, green, red


def _luminance(bgr: tuple[int, int, int]) -> float:
    blue, green, red = bgr
    return 0.299 * red + 0.587 * green + 0.114 * blue
