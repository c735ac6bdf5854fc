"""A property-based fuzz of the whole API, generated from the service's own OpenAPI schema.

Schemathesis reads the OpenAPI document the app publishes and, for every operation, sends
requests built from it to a real `python -m service` process (the test model, over loopback):
valid ones, and ones that break the schema on purpose (wrong types, missing fields, parameters
out of range, random bytes for the image). Every answer must be no 5xx, a status code the
operation documents, the documented content type, headers and body schema; a request the schema
forbids must be refused and one it allows must not be. Bounded: a fixed number of examples per
operation and phase, derandomised (the same cases every run, so a failure reproduces).

The schema is taken from the app object at import time (pytest collects one test per operation
from it) and checked against the one the running process serves, so what is fuzzed is what is
published.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import Case
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from harness.photos import face_crop_png, scene
from harness.server import running_service
from service.app import create_app
from service.settings import Settings
from tests.fixtures.service import PORTRAIT, encode
from tests.unit.service.test_images import png_claiming

EXAMPLES_PER_OPERATION = 40
"""Per phase: schemathesis also runs the schema's examples and its boundary-value cases."""

EXCLUDED_CHECKS = {
    # The schema can say "a file", not "a decodable image of sane size": schema-valid random
    # bytes are rightly refused (400, 413, 415, 422), so schema-valid uploads may be refused.
    "POST /predict": [positive_data_acceptance],
    "POST /predict/annotated": [positive_data_acceptance],
    # Likewise "a file" is not "a video in one of five containers": schema-valid bytes are
    # rightly refused (400, 413, 415).
    "POST /predict/video": [positive_data_acceptance],
    # And a batch answers 200 with each unusable file refused in its place, by design: a "file"
    # whose bytes are JSON (the fuzzer's schema-violating body) is such a file. Parameters out of
    # range are still 422 (tests/unit/service/test_bad_input.py).
    "POST /predict/batch": [positive_data_acceptance, negative_data_rejection],
}
"""Checks that cannot hold for an operation, with why; every other check applies to every answer."""

OPENAPI = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def server(model_path) -> Iterator[str]:
    # Small limits, so that fuzzed uploads reach every refusal (bytes, pixels, files) quickly.
    limits = {"MAX_UPLOAD_BYTES": str(256 * 1024), "MAX_BATCH_FILES": "4", "LOG_LEVEL": "warning"}
    with running_service(model_path, settings=limits) as url:
        yield url


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def test_the_fuzzed_schema_is_the_one_the_service_publishes(server):
    assert httpx.get(f"{server}/openapi.json", timeout=10).json() == OPENAPI


def _real_images() -> list[bytes]:
    """Uploads the schema cannot describe but users send: the portrait, a FER-style crop, 16-bit,
    transparent, EXIF-rotated, tiny, too wide, claiming 10^10 pixels, truncated."""
    portrait = scene(512, 512)
    exif = Image.Exif()
    exif[0x0112] = 6
    deep = (np.asarray(portrait.convert("L"), np.uint16) * 257)[::2, ::2]
    return [
        PORTRAIT.read_bytes(),
        face_crop_png(),
        encode(Image.fromarray(deep), "PNG"),
        encode(portrait.convert("RGBA").resize((200, 200)), "PNG"),
        encode(portrait, "JPEG", exif=exif.tobytes()),
        encode(Image.new("L", (1, 1), 99), "PNG"),
        encode(Image.new("L", (4000, 50), 99), "PNG"),
        png_claiming(100_000, 100_000),
        PORTRAIT.read_bytes()[:20_000],
    ]


REAL_IMAGES = _real_images()


def _with_a_real_image(case: Case, image: bytes) -> None:
    """Put `image` in place of every file of a schema-valid upload (the first file only, in a
    batch, so a batch mixes it with what the fuzzer drew)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if not isinstance(case.body, dict):
        return
    if isinstance(case.body.get("file"), (str, bytes)):
        case.body["file"] = image
    files = case.body.get("files")
    if isinstance(files, list) and files:
        files[0] = image


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_answer_matches_the_schema(case, server, session):
    """Schemathesis's own cases: the schema's examples, boundary values of every parameter
    (coverage), then random valid and invalid requests (fuzzing)."""
    _call_and_validate(case, server, session)


@schema.include(method="POST").parametrize()
@schema.given(image=st.sampled_from([*REAL_IMAGES, None]))
@FUZZ_SETTINGS
def test_answers_to_real_images_match_the_schema(case, image, server, session):
    """The same with real images in the uploads: random bytes are never an image, so without
    them no face would ever be found and the answers' full schema never checked."""
    if image is not None:
        _with_a_real_image(case, image)
    _call_and_validate(case, server, session)


def _call_and_validate(case: Case, server: str, session: requests.Session) -> None:
    excluded = EXCLUDED_CHECKS.get(case.operation.label, [])
    case.call_and_validate(base_url=server, session=session, timeout=30, excluded_checks=excluded)
