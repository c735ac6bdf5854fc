"""Realistic photos of any size, built at run time from the real portrait (nothing large is
committed).

`scene(width, height)` is the portrait as a phone or a webcam would frame it at that size: the
portrait scaled to the frame's height, centred, on a heavily blurred enlargement of itself (the
"blurred fill" photo apps use), so the frame has a real photo's texture everywhere and exactly
one face. Every size shows the same scene, which is what a cost-against-size measure needs.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

PORTRAIT_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "astronaut.jpg"
"""NASA's public-domain portrait (tests/data/README.md), which every scene is made of."""

VIDEO_SIZES = ((427, 240), (854, 480), (1280, 720), (1920, 1080))
"""16:9 frames from 240p to 1080p: 20x the pixels from first to last."""
PORTRAIT_FACE_CENTRE = (224, 113)
"""Where the face is in the 512x512 portrait the scenes are made of (tests/data/README.md)."""


@cache
def _portrait() -> Image.Image:
    with Image.open(PORTRAIT_FILE) as image:
        return image.convert("RGB")


def scene(width: int, height: int) -> Image.Image:
    """The portrait framed at `width` x `height` (landscape or square), one face."""
    portrait = _portrait()
    side = min(width, height)
    background = portrait.resize((max(width, height),) * 2, Image.Resampling.BILINEAR)
    background = background.crop((0, 0, width, height)).filter(ImageFilter.GaussianBlur(24))
    background.paste(
        portrait.resize((side, side), Image.Resampling.LANCZOS),
        ((width - side) // 2, (height - side) // 2),
    )
    return background


def face_in_scene(x: float, y: float, width: int, height: int) -> bool:
    """Whether (`x`, `y`), a box's centre, is the face of `scene(width, height)`: within a tenth
    of the frame's height of where the portrait's face is."""
    scale = min(width, height) / 512  # the portrait fills the frame's shorter side, centred
    expected_x = (width - min(width, height)) / 2 + PORTRAIT_FACE_CENTRE[0] * scale
    expected_y = (height - min(width, height)) / 2 + PORTRAIT_FACE_CENTRE[1] * scale
    return abs(x - expected_x) < height / 10 and abs(y - expected_y) < height / 10


def jpeg(image: Image.Image | np.ndarray, quality: int = 90) -> bytes:
    """`image` as a baseline JPEG, as cameras and browsers send them."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scene_jpeg(width: int, height: int) -> bytes:
    return jpeg(scene(width, height))


def face_crop_png() -> bytes:
    """A FER2013-style input: the portrait's face as a 48x48 grayscale PNG (for detect=never)."""
    face = _portrait().convert("L").crop((165, 55, 285, 175)).resize((48, 48), Image.Resampling.BOX)
    buffer = io.BytesIO()
    face.save(buffer, format="PNG")
    return buffer.getvalue()
