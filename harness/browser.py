"""Headless Chromium for the browser tests and the README screenshots: the system's own browser
(Debian's `chromium` package), driven by Playwright, which downloads nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from playwright.sync_api import Browser, sync_playwright

from harness.videos import place, portrait_at

CHROMIUM_NAMES = ("chromium", "chromium-browser")
"""Where `apt-get install chromium` puts it (Debian), and the name some other systems use."""

CHROMIUM_ARGS = (
    "--no-sandbox",  # runs as root in containers, where the sandbox cannot start
    "--disable-gpu",
    # Without these the browser calls home (updates, sync, field trials) and, on a machine with
    # no network, fills its log with failures that have nothing to do with the page.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

NO_CHROMIUM = "no Chromium found"


def find_chromium() -> str | None:
    """The Chromium to drive: `$CHROMIUM` if set, else the first of `CHROMIUM_NAMES` on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def launched_chromium(executable: str, extra_args: Sequence[str] = ()) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
"""Chromium's synthetic camera, granted without a prompt: the Live mode's webcam in tests."""


def portrait_camera(path: Path, count: int = 30) -> Path:
    """A Y4M file (what Chromium's fake camera plays) of the portrait moving slowly in a
    640x480 frame: the webcam of a person in front of it."""
    with path.open("wb") as out:
        out.write(b"YUV4MPEG2 W640 H480 F15:1 Ip A1:1 C420jpeg\n")
        for index in range(count):
            frame = np.full((480, 640, 3), 170, np.uint8)
            place(frame, portrait_at(360), 120 + 2 * index, 60)
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path
