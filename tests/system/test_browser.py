"""The pages in a real browser: headless Chromium (the system's) against `python -m service`.

The service is reached by a name that is not localhost (`emotion.test`, mapped to 127.0.0.1
inside the browser): browsers and Swagger UI treat localhost specially, and a person opens the
service by its name. Every request to another host is recorded and aborted before it leaves.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, expect
from playwright.sync_api import Error as PlaywrightError

from contract.emotion import LABELS
from harness.browser import launched_chromium
from harness.server import running_service
from scripts.screenshots import API_DOCS, DEMO_PAGE, take_screenshots
from tests.fixtures.service import PORTRAIT, encode

SERVICE_NAME = "emotion.test"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    extra = (
        f"--host-resolver-rules=MAP {SERVICE_NAME} 127.0.0.1",
        "--use-fake-device-for-media-stream",  # a synthetic webcam, where a page may use one
    )
    with launched_chromium(chromium, extra) as launched:
        yield launched


@pytest.fixture(scope="module")
def service(model_path: Path) -> Iterator[str]:
    with running_service(model_path) as url:
        yield url


@pytest.fixture(scope="module")
def named(service: str) -> str:
    """The service's URL by its name."""
    return service.replace("127.0.0.1", SERVICE_NAME)


@dataclass
class PageLog:
    """What a page did: its console errors and uncaught exceptions, the requests it sent to the
    service, the requests to other hosts it attempted and those that reached the network."""

    host: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    off_host: list[str] = field(default_factory=list)
    off_host_sent: list[str] = field(default_factory=list)
    refused_by_policy: list[str] = field(default_factory=list)

    def is_off_host(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme not in ("blob", "data") and parts.netloc != self.host

    def route(self, route: Route) -> None:
        url = route.request.url
        if self.is_off_host(url):
            self.off_host_sent.append(url)
            route.abort("blockedbyclient")
        else:
            self.requests.append(url)
            route.continue_()

    def request(self, request: Request) -> None:
        if self.is_off_host(request.url):
            self.off_host.append(request.url)

    def request_failed(self, request: Request) -> None:
        if request.failure == "csp":
            self.refused_by_policy.append(request.url)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)


OpenPage = Callable[..., tuple[Page, PageLog]]


@pytest.fixture
def open_page(browser: Browser, named: str) -> Iterator[OpenPage]:
    """Open a path of the service in a fresh browser context, logging what the page does."""
    contexts = []

    def open_path(path: str, *, base: str = named, permissions: tuple[str, ...] = ()):
        context = browser.new_context(
            viewport={"width": 1200, "height": 860}, permissions=list(permissions)
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        log = PageLog(host=urlsplit(base).netloc)
        page.route("**/*", log.route)
        page.on("request", log.request)
        page.on("requestfailed", log.request_failed)
        page.on("console", log.console)
        page.on("pageerror", lambda error: log.page_errors.append(str(error)))
        page.goto(f"{base}{path}")
        return page, log

    yield open_path
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def operations(service: str) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the service documents."""
    schema = httpx.get(f"{service}/openapi.json", timeout=30).json()
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in item}


def test_docs_list_every_operation_with_nothing_fetched_from_another_host(open_page, operations):
    page, log = open_page("/docs")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations))
    shown = blocks.evaluate_all(
        """blocks => blocks.map(block => [
            block.querySelector('.opblock-summary-method').textContent,
            block.querySelector('.opblock-summary-path').dataset.path,
        ])"""
    )
    assert {tuple(operation) for operation in shown} == operations
    assert any(url.endswith("/swagger-ui-bundle.js") for url in log.requests)
    assert log.off_host == [] and log.off_host_sent == []
    assert log.page_errors == [] and log.console_errors == []


def test_the_recorder_sees_and_stops_off_host_requests(open_page):
    """The control for the empty lists above: an off-host image on a served page is recorded
    and refused by the page's policy; an off-host navigation is recorded and aborted."""
    page, log = open_page("/")
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    with page.expect_event("requestfailed"):
        page.evaluate("url => document.body.append(Object.assign(new Image(), {src: url}))", logo)
    assert log.off_host == [logo] and log.refused_by_policy == [logo]
    assert log.off_host_sent == []
    elsewhere = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
    with pytest.raises(PlaywrightError):
        page.goto(elsewhere)
    assert log.off_host_sent == [elsewhere]


def test_redoc_lists_every_operation_and_its_cdn_logo_never_leaves_the_browser(
    open_page, operations
):
    page, log = open_page("/redoc")
    expect(page.locator("[id^='operation/']")).to_have_count(len(operations))
    expect(page.get_by_role("heading", name="Emotions of the faces in one image")).to_be_visible()
    assert any(url.endswith("/redoc.standalone.js") for url in log.requests)
    assert log.off_host_sent == []
    # ReDoc's bundle asks for the Redocly logo from its CDN; the page's policy refuses it.
    assert log.off_host == log.refused_by_policy
    assert log.page_errors == []


def bar_values(card) -> list[tuple[str, str, bool]]:
    return card.locator(".bar").evaluate_all(
        """bars => bars.map(bar => [
            bar.dataset.emotion,
            bar.querySelector('.bar-value').textContent,
            bar.classList.contains('top'),
        ])"""
    )


def test_a_photo_gets_a_box_a_label_and_seven_bars_for_its_face(open_page):
    page, log = open_page("/")
    with page.expect_response(lambda response: urlsplit(response.url).path == "/predict") as sent:
        page.set_input_files("#file-input", PORTRAIT)
    answer = sent.value.json()
    (face,) = answer["faces"]
    assert face["detected"] is True

    box = page.locator(".face-box")
    expect(box).to_have_count(1)
    expect(page.locator(".face-tag")).to_have_text(
        f"1 · {face['emotion']} {round(face['confidence'] * 100)}%"
    )
    expect(page.locator("#status")).to_have_text("1 face found.")

    # The box lies where the service says, on the photo as displayed.
    photo = page.locator("#photo").bounding_box()
    drawn = box.bounding_box()
    scale = photo["width"] / answer["width"]
    assert drawn["x"] - photo["x"] == pytest.approx(face["box"]["x"] * scale, abs=1.5)
    assert drawn["y"] - photo["y"] == pytest.approx(face["box"]["y"] * scale, abs=1.5)
    assert drawn["width"] == pytest.approx(face["box"]["width"] * scale, abs=1.5)

    card = page.locator(".face-card")
    expect(card).to_have_count(1)
    expect(card.locator(".face-emotion")).to_have_text(face["emotion"])
    probabilities = face["probabilities"]
    bars = bar_values(card)
    assert [(label, top) for label, _, top in bars] == [
        (label, label == face["emotion"]) for label in LABELS
    ]
    shown = [float(value.removesuffix("%")) for _, value, _ in bars]
    assert shown == pytest.approx([probabilities[label] * 100 for label in LABELS], abs=0.051)
    widths = card.locator(".bar-fill").evaluate_all(
        "fills => fills.map(fill => fill.getBoundingClientRect().width"
        " / fill.parentElement.getBoundingClientRect().width)"
    )
    expected = [probabilities[label] for label in LABELS]
    assert widths == pytest.approx(expected, abs=0.02)

    expect(page.locator("#photo")).to_have_attribute(
        "alt", "The photo sent, 512\N{MULTIPLICATION SIGN}512 pixels: 1 face found"
    )
    assert page.locator("#error").is_hidden()
    assert log.console_errors == [] and log.page_errors == []
    assert log.off_host == []


@pytest.mark.parametrize(
    "event",
    [
        "new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true})",
        "new ClipboardEvent('paste', {clipboardData: files, bubbles: true, cancelable: true})",
    ],
    ids=["dropped", "pasted"],
)
def test_a_dropped_or_pasted_photo_is_analysed(open_page, portrait_bytes, event):
    page, log = open_page("/")
    with page.expect_response(lambda response: urlsplit(response.url).path == "/predict"):
        page.evaluate(
            f"""data => {{
                const photo = Uint8Array.from(atob(data), char => char.charCodeAt(0));
                const files = new DataTransfer();
                files.items.add(new File([photo], 'portrait.jpg', {{type: 'image/jpeg'}}));
                document.getElementById('drop-zone').dispatchEvent({event});
            }}""",
            base64.b64encode(portrait_bytes).decode(),
        )
    expect(page.locator(".face-box")).to_have_count(1)
    assert log.page_errors == [] and log.console_errors == []


def test_a_bad_file_shows_the_services_message(open_page, service):
    page, log = open_page("/")
    not_an_image = b"these are notes, not a photo"
    with page.expect_response(lambda response: urlsplit(response.url).path == "/predict") as sent:
        page.set_input_files(
            "#file-input",
            files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": not_an_image}],
        )
    assert sent.value.status == 415
    direct = httpx.post(f"{service}/predict", files={"file": not_an_image}, timeout=30)
    assert direct.status_code == 415
    expect(page.locator("#error")).to_have_text(direct.json()["detail"])
    expect(page.locator("#error")).to_have_attribute("role", "alert")
    assert page.locator("#result").is_hidden()
    assert page.locator(".face-box").count() == 0
    # The one console error is the browser's own note of the 415.
    assert [error for error in log.console_errors if "415" not in error] == []
    assert log.page_errors == []


def test_a_service_with_an_api_key_asks_for_it_and_then_answers(
    open_page, model_path, portrait_bytes
):
    """With API_KEY set the page is open but /predict is not: the page shows the 401, asks for
    the key, and sends the photo again with it."""
    key = "page-test-key"
    with running_service(model_path, settings={"API_KEY": key}) as url:
        page, log = open_page("/", base=url.replace("127.0.0.1", SERVICE_NAME))
        with page.expect_response(lambda r: urlsplit(r.url).path == "/predict") as refused:
            page.set_input_files(
                "#file-input",
                files=[{"name": "p.jpg", "mimeType": "image/jpeg", "buffer": portrait_bytes}],
            )
        assert refused.value.status == 401
        expect(page.locator("#error")).to_contain_text("X-API-Key")
        expect(page.locator("#api-key")).to_be_focused()

        with page.expect_response(lambda r: urlsplit(r.url).path == "/predict") as answered:
            page.fill("#api-key", key)
            page.press("#api-key", "Enter")
        assert answered.value.status == 200
        assert answered.value.request.headers["x-api-key"] == key
        expect(page.locator(".face-card")).to_have_count(1)
        assert page.locator("#key-form").is_hidden()
        assert page.locator("#error").is_hidden()
        assert log.page_errors == []


def test_a_tiff_the_browser_cannot_show_is_shown_as_the_services_drawing(open_page, portrait):
    page, log = open_page("/")
    tiff = encode(portrait, "TIFF")
    with page.expect_response(
        lambda response: urlsplit(response.url).path == "/predict/annotated"
    ) as drawn:
        page.set_input_files(
            "#file-input", files=[{"name": "a.tif", "mimeType": "image/tiff", "buffer": tiff}]
        )
    assert drawn.value.headers["content-type"] == "image/png"
    expect(page.locator(".face-card")).to_have_count(1)
    page.wait_for_function("() => document.getElementById('photo').naturalWidth === 512")
    assert page.locator("#boxes").is_hidden()  # the drawing has its boxes already
    assert log.page_errors == [] and log.console_errors == []


def test_the_annotated_download_is_the_services_png(open_page):
    page, _ = open_page("/")
    page.set_input_files("#file-input", PORTRAIT)
    expect(page.locator(".face-card")).to_have_count(1)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download annotated image").click()
    assert download.value.suggested_filename == "annotated.png"
    with Image.open(io.BytesIO(Path(download.value.path()).read_bytes())) as image:
        assert image.format == "PNG" and image.size == (512, 512)


def test_the_page_works_from_the_keyboard(open_page):
    page, log = open_page("/")
    # Playwright asks Chromium to intercept file choosers without waiting for the answer, so a
    # listener added by expect_file_chooser just before the key press can lose the race (about 1
    # run in 8 here: the chooser opened unseen). Listening from the start closes the race.
    page.on("filechooser", lambda _: None)
    focused = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("() => document.activeElement.id"))
        if focused[-1] == "file-input":
            break
    assert focused[-1] == "file-input"
    outline = page.locator("label[for=file-input]").evaluate(
        "e => getComputedStyle(e).outlineStyle"
    )
    assert outline == "solid"  # the hidden input's focus shows on its label
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(PORTRAIT)
    expect(page.locator(".face-card")).to_have_count(1)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "camera-start"
    assert log.page_errors == [] and log.console_errors == []


def test_a_webcam_frame_is_analysed(open_page, service):
    """Chromium's synthetic camera (a moving pattern, no face): the frame is sent and the whole
    image read as one face."""
    page, log = open_page("/", base=service, permissions=("camera",))
    page.get_by_role("button", name="Use webcam").click()
    expect(page.locator("#camera-video")).to_be_visible()
    expect(page.locator("#drop-zone")).to_be_hidden()
    page.wait_for_function("() => document.getElementById('camera-video').videoWidth > 0")
    with page.expect_response(lambda response: urlsplit(response.url).path == "/predict") as sent:
        page.get_by_role("button", name="Take photo").click()
    assert sent.value.request.post_data_buffer.count(b"image/jpeg") == 1
    answer = sent.value.json()
    expect(page.locator(".face-card")).to_have_count(len(answer["faces"]))
    expect(page.locator("#camera")).to_be_hidden()
    assert log.page_errors == [] and log.console_errors == []


@pytest.mark.parametrize(
    ("on_name", "permissions", "message"),
    [
        (False, (), "Camera access was refused"),
        (True, ("camera",), "only on secure pages"),
    ],
    ids=["permission-refused", "not-a-secure-page"],
)
def test_without_a_usable_webcam_the_page_says_why(
    open_page, service, named, on_name, permissions, message
):
    page, log = open_page("/", base=named if on_name else service, permissions=permissions)
    page.get_by_role("button", name="Use webcam").click()
    expect(page.locator("#error")).to_contain_text(message)
    expect(page.locator("#camera")).to_be_hidden()
    assert log.page_errors == [] and log.console_errors == []


def test_the_readme_screenshots_can_be_taken(browser, named, tmp_path):
    paths = take_screenshots(browser, named, tmp_path)
    assert [path.name for path in paths] == [DEMO_PAGE, API_DOCS]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width == 1200 and image.height >= 800
