"""The HTML the service serves (the demo page, Swagger UI, ReDoc): every asset is its own, served
from this host, and the browser is told to fetch from nowhere else."""

from __future__ import annotations

from html.parser import HTMLParser
from importlib.resources import files
from urllib.parse import urljoin, urlsplit

import pytest

from service.pages_policy import DOCS_POLICY, PAGE_POLICY

PAGES = ["/", "/docs", "/redoc"]


class _Links(HTMLParser):
    """Every URL an HTML document refers to (src, href), and its labelled form controls."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        for name in ("src", "href"):
            if attributes.get(name):
                self.urls.append(attributes[name])


def parsed(html: str) -> _Links:
    links = _Links()
    links.feed(html)
    return links


@pytest.mark.parametrize("path", PAGES)
def test_every_url_of_a_page_is_on_this_host_and_served(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = parsed(page.text).urls
    assert urls, "the page refers to no asset at all"
    base = f"http://testserver{path}"
    for url in urls:
        absolute = urljoin(base, url)
        assert urlsplit(absolute).netloc == "testserver", f"{path} refers off-host to {url}"
        assert client.get(absolute).status_code == 200, f"{path} refers to missing {url}"


@pytest.mark.parametrize(
    ("path", "asset"),
    [
        ("/docs", "swagger-ui-bundle.js"),
        ("/docs", "swagger-ui.css"),
        ("/redoc", "redoc.standalone.js"),
    ],
)
def test_swagger_ui_and_redoc_are_served_from_the_installed_package(client, path, asset):
    packaged = (files("fastapi_offline") / "static" / asset).read_bytes()
    assert len(packaged) > 100_000  # the real bundle, not a stub
    (url,) = [url for url in parsed(client.get(path).text).urls if url.endswith(asset)]
    assert client.get(url).content == packaged


@pytest.mark.parametrize(
    ("path", "policy"), [("/", PAGE_POLICY), ("/docs", DOCS_POLICY), ("/redoc", DOCS_POLICY)]
)
def test_pages_let_the_browser_fetch_from_this_host_only(client, path, policy):
    header = client.get(path).headers["content-security-policy"]
    assert header == policy
    assert "default-src 'self'" in header and "https:" not in header and "*" not in header


def test_the_demo_page_has_no_inline_script_or_style_and_json_needs_no_policy(client):
    assert "'unsafe-inline'" not in PAGE_POLICY
    tags = parsed(client.get("/").text).tags
    assert not [
        attributes for tag, attributes in tags if tag == "script" and "src" not in attributes
    ]
    assert not [tag for tag, attributes in tags if "style" in attributes or tag == "style"]
    assert "content-security-policy" not in client.get("/health").headers


def test_the_demo_page_labels_its_controls(client):
    tags = parsed(client.get("/").text).tags
    html_tag = next(attributes for tag, attributes in tags if tag == "html")
    assert html_tag.get("lang") == "en"
    labelled = {attributes.get("for") for tag, attributes in tags if tag == "label"}
    controls = [attributes for tag, attributes in tags if tag in ("input", "select")]
    assert controls and all(control["id"] in labelled for control in controls)
    assert all("alt" in attributes for tag, attributes in tags if tag == "img")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/%2e%2e/README.md",
        "/static//etc/passwd",
        "/static/missing.js",
        "/static-offline-docs/../core.py",
    ],
)
def test_static_files_never_reach_outside_their_folder(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
