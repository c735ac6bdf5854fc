"""bytes -> upright grayscale: every accepted format and depth, and every refusal."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from harness.photos import scene
from service.images import (
    ImageLimits,
    ImageRejected,
    decode_grayscale,
    decode_rgb,
    decode_upright,
)
from service.memory_budget import MemoryBudget
from tests.fixtures.service import encode

LIMITS = ImageLimits(max_bytes=10 * 1024 * 1024, max_pixels=50_000_000, max_aspect_ratio=20.0)


def rejected(data: bytes, limits: ImageLimits = LIMITS) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode_grayscale(data, limits)
    return caught.value


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header claims `width` x `height`."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("format", "options", "tolerance"),
    [
        ("PNG", {}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("JPEG", {"quality": 95}, 4),
        ("WEBP", {"quality": 90}, 6),
    ],
)
def test_every_format_decodes_to_the_same_grayscale(
    portrait, portrait_gray, format, options, tolerance
):
    gray = decode_grayscale(encode(portrait, format, **options), LIMITS)
    assert gray.dtype == np.uint8
    assert gray.shape == (512, 512)
    difference = np.abs(gray.astype(int) - portrait_gray.astype(int))
    assert difference.mean() <= tolerance


def test_grayscale_and_palette_and_one_bit_images_decode(portrait, portrait_gray):
    assert np.array_equal(decode_grayscale(encode(portrait.convert("L")), LIMITS), portrait_gray)
    palette = portrait.convert("P")
    expected = np.asarray(palette.convert("L"))
    assert np.array_equal(decode_grayscale(encode(palette), LIMITS), expected)
    one_bit = decode_grayscale(encode(portrait.convert("1")), LIMITS)
    assert set(np.unique(one_bit)) <= {0, 255}


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_sixteen_bit_grayscale_is_scaled_to_eight_bits(portrait_gray, format):
    wide = portrait_gray.astype(np.uint16) * 257  # 0..255 -> 0..65535
    data = encode(Image.fromarray(wide), format)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")  # really stored as 16-bit
    assert np.array_equal(decode_grayscale(data, LIMITS), portrait_gray)


def sixteen_bit_png(portrait, alpha: bool) -> bytes:
    """A 16-bit-per-channel PNG (Pillow writes only 8-bit colour, OpenCV writes 16)."""
    bgr = (np.asarray(portrait).astype(np.uint16) * 257)[:, :, ::-1]
    if alpha:
        bgr = np.dstack([bgr, np.full(bgr.shape[:2], 65535, np.uint16)])
    ok, encoded = cv2.imencode(".png", bgr)
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize(
    ("make", "tolerance"),
    [
        pytest.param(lambda image: sixteen_bit_png(image, alpha=False), 0.5, id="png-16-bit-rgb"),
        pytest.param(lambda image: sixteen_bit_png(image, alpha=True), 0.5, id="png-16-bit-rgba"),
        pytest.param(lambda image: encode(image.convert("CMYK"), "JPEG"), 4, id="jpeg-cmyk"),
        pytest.param(
            lambda image: encode(image, "JPEG", progressive=True), 4, id="jpeg-progressive"
        ),
        pytest.param(lambda image: encode(image, "TIFF", compression="tiff_lzw"), 0, id="tiff-lzw"),
        pytest.param(lambda image: encode(image.convert("RGBA"), "BMP"), 0, id="bmp-rgba"),
    ],
)
def test_other_layouts_decode_to_the_same_grayscale(portrait, portrait_gray, make, tolerance):
    gray = decode_grayscale(make(portrait), LIMITS)
    assert gray.shape == (512, 512)
    assert np.abs(gray.astype(int) - portrait_gray.astype(int)).mean() <= tolerance


def test_transparent_pixels_are_shown_on_white(portrait):
    rgba = portrait.convert("RGBA")
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[:, :100] = 0  # the left strip fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    gray = decode_grayscale(encode(rgba), LIMITS)
    assert np.all(gray[:, :100] == 255)
    assert np.array_equal(gray[:, 100:], np.asarray(portrait.convert("L"))[:, 100:])

    la = decode_grayscale(encode(rgba.convert("LA")), LIMITS)
    assert np.all(la[:, :100] == 255)


@pytest.mark.parametrize(
    ("make", "tolerance"),
    [
        pytest.param(lambda image: encode(image), 0, id="png"),
        pytest.param(lambda image: encode(image, "JPEG", quality=95), 4, id="jpeg"),
        pytest.param(lambda image: sixteen_bit_png(image, alpha=True), 0.5, id="png-16-bit-rgba"),
        pytest.param(lambda image: encode(image.convert("CMYK"), "JPEG"), 6, id="jpeg-cmyk"),
    ],
)
def test_colour_decodes_to_the_same_pixels_in_rgb(portrait, portrait_gray, make, tolerance):
    data = make(portrait)
    rgb = decode_rgb(data, LIMITS)
    assert rgb.dtype == np.uint8 and rgb.shape == (512, 512, 3)
    assert np.abs(rgb.astype(int) - np.asarray(portrait).astype(int)).mean() <= tolerance
    gray = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert np.abs(gray - decode_grayscale(data, LIMITS).astype(int)).mean() <= 1


def test_grayscale_sixteen_bit_decodes_to_gray_rgb(portrait_gray):
    rgb = decode_rgb(encode(Image.fromarray(portrait_gray.astype(np.uint16) * 257)), LIMITS)
    assert all(np.array_equal(rgb[:, :, channel], portrait_gray) for channel in range(3))


def test_exif_orientation_is_honoured(portrait):
    stored = portrait.crop((0, 0, 400, 300))  # wide as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    gray = decode_grayscale(data, LIMITS)
    assert gray.shape == (400, 300)  # tall as displayed
    expected = np.asarray(stored.convert("L").transpose(Image.Transpose.ROTATE_270))
    assert np.abs(gray.astype(int) - expected.astype(int)).mean() < 4


def test_a_large_jpeg_is_decoded_reduced_to_just_over_the_size_asked():
    photo = scene(1920, 1080)
    data = encode(photo, "JPEG", quality=92)
    decoded = decode_upright(data, LIMITS, min_side=640)
    assert (decoded.width, decoded.height) == (1920, 1080)  # what answers report
    assert decoded.pixels.shape == (540, 960)  # 1/2: 1/4 would be under 640 pixels wide
    expected = cv2.resize(np.asarray(photo.convert("L")), (960, 540), interpolation=cv2.INTER_AREA)
    assert np.abs(decoded.pixels.astype(int) - expected.astype(int)).mean() < 3
    assert decode_upright(data, LIMITS, min_side=400).pixels.shape == (270, 480)  # 1/4
    assert decode_upright(data, LIMITS, min_side=48).pixels.shape == (135, 240)  # 1/8, the most
    assert decode_upright(data, LIMITS).pixels.shape == (1080, 1920)  # nothing asked: in full


def test_a_reduced_decode_reports_the_upright_size_of_an_exif_rotated_photo():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": stored wide, shown tall
    data = encode(scene(1920, 1080), "JPEG", exif=exif.tobytes())
    decoded = decode_upright(data, LIMITS, min_side=640)
    assert (decoded.width, decoded.height) == (1080, 1920)
    assert decoded.pixels.shape == (960, 540)


@pytest.mark.parametrize("format", ["PNG", "WEBP"])
def test_formats_that_cannot_decode_reduced_are_decoded_in_full(format):
    decoded = decode_upright(encode(scene(1280, 720), format), LIMITS, min_side=320)
    assert decoded.pixels.shape == (720, 1280)
    assert (decoded.width, decoded.height) == (1280, 720)


def test_first_frame_of_a_multi_page_tiff(portrait, portrait_gray):
    buffer = io.BytesIO()
    black = Image.new("RGB", portrait.size)
    portrait.save(buffer, format="TIFF", save_all=True, append_images=[black])
    assert np.array_equal(decode_grayscale(buffer.getvalue(), LIMITS), portrait_gray)


def test_empty_upload_is_400():
    error = rejected(b"")
    assert (error.status_code, error.detail) == (400, "the uploaded file is empty")


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("face.jpg", b"not really")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"just some text, not an image", id="text"),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48">'
            b'<circle cx="24" cy="24" r="20"/></svg>',
            id="svg",
        ),
        pytest.param(b"<!DOCTYPE html><html><body><img src=x></body></html>", id="html"),
        pytest.param(_zip(), id="zip"),
        pytest.param(encode(Image.new("RGB", (48, 48)), "GIF"), id="gif"),
        pytest.param(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", id="pdf"),
    ],
)
def test_what_is_not_a_supported_image_is_415(data):
    error = rejected(data)
    assert error.status_code == 415
    assert "JPEG, PNG, WebP, BMP or TIFF" in error.detail


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_truncated_images_are_400(portrait, format):
    data = encode(portrait, format)
    error = rejected(data[: len(data) // 2])
    assert error.status_code == 400
    assert "truncated or corrupt" in error.detail or "corrupt" in error.detail


def test_corrupt_png_data_is_400(portrait):
    data = bytearray(encode(portrait, "PNG"))
    data[200:260] = b"\xff" * 60  # inside the first IDAT chunk: CRC and zlib stream broken
    assert rejected(bytes(data)).status_code == 400


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (9000, 9000)])
def test_header_claiming_too_many_pixels_is_413_before_decoding(width, height):
    data = png_claiming(width, height)
    assert len(data) < 1024
    error = rejected(data)
    assert error.status_code == 413
    assert "50000000" in error.detail


def test_pixel_limit_is_configurable(portrait):
    small = ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=100 * 100, max_aspect_ratio=20)
    assert rejected(encode(portrait), small).status_code == 413
    assert decode_grayscale(encode(portrait.resize((100, 100))), small).shape == (100, 100)


@pytest.mark.parametrize("size", [(4000, 10), (10, 4000)])
def test_absurd_aspect_ratio_is_422(size):
    error = rejected(encode(Image.new("L", size, 128)))
    assert error.status_code == 422
    assert "aspect ratio" in error.detail


def test_file_over_the_byte_limit_is_413(portrait):
    tight = ImageLimits(max_bytes=1000, max_pixels=LIMITS.max_pixels, max_aspect_ratio=20)
    assert rejected(encode(portrait), tight).status_code == 413


def test_floating_point_tiff_is_415():
    data = encode(Image.fromarray(np.zeros((48, 48), np.float32)), "TIFF")
    error = rejected(data)
    assert error.status_code == 415
    assert "floating-point" in error.detail


def test_an_image_waits_for_decoding_memory_then_is_a_503(portrait):
    budget = MemoryBudget(16 * 1024 * 1024, wait_seconds=0.05)
    limits = ImageLimits(LIMITS.max_bytes, LIMITS.max_pixels, LIMITS.max_aspect_ratio, budget)
    photo = encode(portrait, "PNG")
    assert decode_grayscale(photo, limits).shape == portrait.size[::-1]
    with budget.reserve(budget.capacity_bytes):  # other decodes hold all of it
        refused = rejected(photo, limits)
    assert (refused.status_code, refused.reason) == (503, "decoding_busy")
    assert "retry" in refused.detail
    assert budget.reserved_bytes == 0


# What a decode takes at its peak, measured in a fresh process against what the header made it
# reserve. VmHWM is the high-water mark of this process's own resident memory; ru_maxrss would
# start at the parent's (pytest's) after fork.
_PEAK_SCRIPT = """
import sys
from PIL import Image
from service.images import ImageLimits, _decode, _decoding_bytes, _draft_size

def high_water():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024

data = open(sys.argv[1], "rb").read()
mode, min_side = sys.argv[2], int(sys.argv[3]) or None
header = Image.open(sys.argv[1])
full = header.size[0] * header.size[1]
if header.format == "JPEG":
    header.draft(mode if mode == "L" else header.mode, _draft_size(header.size, min_side))
estimate = _decoding_bytes(header, mode, full)
before = high_water()
_decode(data, ImageLimits(10**9, 10**9, 20.0), mode, min_side)
print(estimate, high_water() - before)
"""


def _large(kind: str) -> tuple[bytes, str]:
    """24-megapixel files that cost the most to decode for their size, as a hostile client
    would send them (a few hundred KB each)."""
    gray = np.full((4000, 6000), 128, np.uint8)
    gray[::40] = 0
    if kind == "rgba-png":
        return encode(np.dstack([gray, gray, gray, 255 - gray]), "PNG"), ".png"
    if kind == "16-bit-png":
        return encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"), ".png"
    colour = Image.fromarray(np.dstack([gray, gray, gray]))
    return encode(colour, "JPEG", progressive=True, subsampling=0, quality=90), ".jpg"


@pytest.mark.parametrize(
    "kind, mode, min_side",
    [
        ("rgba-png", "L", 1280),
        ("16-bit-png", "L", 1280),
        ("progressive-jpeg", "L", 1280),
        ("rgba-png", "RGB", 0),
        ("progressive-jpeg", "RGB", 0),
    ],
)
def test_a_large_decode_stays_within_what_it_reserves(tmp_path, repo_root, kind, mode, min_side):
    data, suffix = _large(kind)
    path = tmp_path / f"large{suffix}"
    path.write_bytes(data)
    printed = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path), mode, str(min_side)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    estimate, peak = map(int, printed.split())
    assert peak <= estimate, f"{kind} as {mode}: peak {peak >> 20} MB over {estimate >> 20} MB"
