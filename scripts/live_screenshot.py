"""The README's screenshot of the demo page's Live mode, taken by the system Chromium:

    .venv/bin/python -m scripts.live_screenshot [--out docs/screenshots/live-mode.png]

Starts `python -m service` on the shipped model and plays the portrait in tests/data, moving
slowly, as Chromium's fake camera (the Y4M harness/browser.py makes); once the page
has drawn a few seconds of answers, saves the Live panel.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import expect

from harness.browser import FAKE_CAMERA, find_chromium, launched_chromium, portrait_camera
from harness.server import running_service
from scripts.screenshots import _to_palette
from service.settings import DEFAULT_MODEL_PATH, PROJECT_ROOT

LIVE_MODE = "live-mode.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as folder, running_service(DEFAULT_MODEL_PATH) as url:
        camera = portrait_camera(Path(folder) / "camera.y4m", count=90)
        extra = (*FAKE_CAMERA, f"--use-file-for-fake-video-capture={camera}")
        with launched_chromium(chromium, extra) as browser:
            context = browser.new_context(
                viewport={"width": 1200, "height": 860}, permissions=["camera"]
            )
            page = context.new_page()
            page.goto(f"{url}/")
            page.click("#live-start")
            expect(page.locator("#live-charts canvas").first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(4000)  # a few seconds of history in the chart
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / LIVE_MODE
            page.locator("#live").screenshot(path=str(path), animations="disabled")
            _to_palette(path)
            print(path)


if __name__ == "__main__":
    main()
