"""The demo page's Live mode in headless Chromium, on its fake camera: the synthetic pattern it
makes by itself, and a video of the portrait made here and played as the camera."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from harness.browser import (
    FAKE_CAMERA,
    launched_chromium,
    portrait_camera,
)
from harness.server import running_service

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def service(model_path: Path) -> Iterator[str]:
    with running_service(model_path) as url:
        yield url


def run_live(browser: Browser, url: str, frames: int) -> tuple[object, list[str]]:
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/")
    page.click("#live-start")
    expect(page.locator("#live")).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function(
        f"() => Number(document.getElementById('live-stats').dataset.answered || 0) >= {frames}",
        timeout=TIMEOUT_MS,
    )
    return page, errors


def test_live_mode_on_the_synthetic_camera_streams_and_stops(chromium, service):
    with launched_chromium(chromium, FAKE_CAMERA) as browser:
        page, errors = run_live(browser, service, frames=5)
        stats = page.locator("#live-stats").text_content()
        assert re.match(r"\d+ frames answered · \d+ skipped · delay \d+ ms · \d+ faces?", stats)
        page.click("#live-stop")
        expect(page.locator("#live")).to_be_hidden()
        expect(page.locator("#live-start")).to_be_enabled()
        assert page.evaluate("() => document.getElementById('live-video').srcObject") is None
    assert errors == []


def test_live_mode_draws_a_box_a_label_and_a_chart_per_face(chromium, service, tmp_path):
    camera = portrait_camera(tmp_path / "portrait.y4m")
    with launched_chromium(
        chromium, (*FAKE_CAMERA, f"--use-file-for-fake-video-capture={camera}")
    ) as browser:
        page, errors = run_live(browser, service, frames=8)
        expect(page.locator("#live-boxes .face-box").first).to_be_visible()
        # Read at one instant: every answer replaces the boxes.
        seen = page.evaluate(
            """() => {
              const box = document.querySelector('#live-boxes .face-box');
              const stage = document.querySelector('.live-stage').getBoundingClientRect();
              const face = box.getBoundingClientRect();
              return {
                tag: box.querySelector('.face-tag').textContent,
                track: box.dataset.track,
                x: (face.left + face.width / 2 - stage.left) / stage.width,
                y: (face.top + face.height / 2 - stage.top) / stage.height,
              };
            }"""
        )
        assert re.fullmatch(r"1 · [a-z]+ \d+%", seen["tag"]) and seen["track"] == "1"
        # The box sits over the face: the portrait's face is in the frame's upper middle.
        assert 0.2 < seen["x"] < 0.8 and 0.1 < seen["y"] < 0.6, seen
        chart = page.locator('#live-charts [data-track="1"] canvas')
        expect(chart).to_be_visible()
        assert "mostly" in chart.get_attribute("aria-label")
        painted = page.evaluate(
            """() => {
              const canvas = document.querySelector('#live-charts canvas');
              const { width, height } = canvas;
              const pixels = canvas.getContext('2d').getImageData(0, 0, width, height);
              return pixels.data.filter((value, index) => index % 4 === 3 && value > 0).length;
            }"""
        )
        assert painted > 100  # the lines of the last seconds are drawn
        page.screenshot(path=str(tmp_path / "live.png"))
    assert errors == []
