"""The README's screenshots, taken from the running service by the system Chromium:

    .venv/bin/python -m scripts.screenshots [--out DIR] [--model MODEL]

Starts `python -m service` on the model (default: the shipped one), opens the demo page, sends
the portrait in tests/data through the page's file input, waits for the boxes, and saves
`demo-page.png`; then opens `/docs` and saves `api-docs.png` once Swagger UI lists the
operations; both into docs/screenshots/ unless --out says otherwise. Nothing is drawn by hand:
what the PNGs show is what a person sees (stored with a 256-colour palette, to keep the
repository small). The browser tests run `take_screenshots` too, so it keeps working.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser

from harness.browser import NO_CHROMIUM, find_chromium, launched_chromium
from harness.photos import PORTRAIT_FILE as PORTRAIT
from harness.server import running_service
from service.settings import DEFAULT_MODEL_PATH, PROJECT_ROOT

VIEWPORT = {"width": 1200, "height": 860}
DEMO_PAGE = "demo-page.png"
API_DOCS = "api-docs.png"


def take_screenshots(browser: Browser, base_url: str, out: Path) -> list[Path]:
    """The demo page after a prediction on the portrait, and /docs; returns the two paths."""
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    try:
        page = context.new_page()
        page.goto(f"{base_url}/")
        page.set_input_files("#file-input", PORTRAIT)
        page.locator(".face-box").first.wait_for()
        page.locator("#status").filter(has_text="found").wait_for()
        demo = out / DEMO_PAGE
        page.screenshot(path=demo, full_page=True, animations="disabled")
        _to_palette(demo)

        page.goto(f"{base_url}/docs")
        page.locator(".opblock").last.wait_for()
        docs = out / API_DOCS
        page.screenshot(path=docs, animations="disabled")
        _to_palette(docs)
    finally:
        context.close()
    return [demo, docs]


def _to_palette(path: Path) -> None:
    """A third of the bytes of a full-colour PNG; the photo on the page hardly shows it."""
    with Image.open(path) as shot:
        palette = shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    palette.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "screenshots")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print(f"error: {NO_CHROMIUM}: apt-get install chromium (or set CHROMIUM)", file=sys.stderr)
        return 1
    with (
        running_service(args.model.resolve(), cwd=PROJECT_ROOT) as url,
        launched_chromium(chromium) as browser,
    ):
        for path in take_screenshots(browser, url, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
