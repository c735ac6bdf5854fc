"""GET /metrics, the request id and the log lines: what an operator sees of the service."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.server import service_process
from service.metrics import REJECTION_REASONS, STAGES
from tests.fixtures.service import encode
from tests.unit.service.test_images import png_claiming


def samples(client) -> dict[tuple[str, frozenset], float]:
    """Every sample /metrics shows, keyed by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after[key] - before.get(key, 0.0)


def test_a_prediction_counts_its_request_stages_and_faces(client, portrait_bytes):
    before = samples(client)
    assert client.post("/predict", files={"file": portrait_bytes}).status_code == 200
    after = samples(client)
    requests = "emotion_http_requests_total"
    assert delta(before, after, requests, route="/predict", method="POST", status="200") == 1
    latency = "emotion_http_request_duration_seconds_count"
    assert delta(before, after, latency, route="/predict") == 1
    for stage in STAGES:
        assert delta(before, after, "emotion_stage_duration_seconds_count", stage=stage) == 1
    assert delta(before, after, "emotion_faces_per_image_count") == 1
    assert delta(before, after, "emotion_faces_per_image_sum") == 1
    assert delta(before, after, "emotion_faces_per_image_bucket", le="0.0") == 0
    assert delta(before, after, "emotion_faces_per_image_bucket", le="1.0") == 1


def test_the_model_id_is_a_labelled_gauge(client):
    model_id = client.get("/model").json()["id"]
    assert samples(client)[("emotion_model_info", frozenset({("model_id", model_id)}))] == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"just some text, not an image", "not_an_image"),
        (png_claiming(100_000, 100_000), "too_many_pixels"),
        (encode(np.zeros((10, 300), np.uint8)), "aspect_ratio"),
        (encode(np.zeros((64, 64), np.uint8), "JPEG")[:200], "corrupt"),
        (encode(np.zeros((64, 64), np.float32), "TIFF"), "unsupported_depth"),
        (encode(np.full((64, 64), 128, np.uint8)), None),
    ],
    ids=["empty", "text", "huge-header", "30-to-1", "truncated", "float-tiff", "fine"],
)
def test_refused_images_are_counted_by_reason(client, data, reason):
    before = samples(client)
    response = client.post("/predict/batch", files={"files": data})
    after = samples(client)
    assert response.status_code == 200
    counted = {
        r: delta(before, after, "emotion_images_rejected_total", reason=r)
        for r in REJECTION_REASONS
    }
    expected = {r: float(r == reason) for r in REJECTION_REASONS}
    assert counted == expected, response.json()


def test_a_file_over_the_byte_limit_is_counted_too_large(make_client, portrait_bytes):
    with make_client(max_upload_bytes=1000) as limited:
        before = samples(limited)
        assert limited.post("/predict", files={"file": portrait_bytes}).status_code == 413
        after = samples(limited)
    assert delta(before, after, "emotion_images_rejected_total", reason="too_large") == 1


def test_unknown_paths_share_one_route_label(client):
    before = samples(client)
    for path in ("/wp-admin", "/.env", "/etc/passwd"):
        assert client.get(path).status_code == 404
    after = samples(client)
    requests = "emotion_http_requests_total"
    assert delta(before, after, requests, route="other", method="GET", status="404") == 3
    assert not any("wp-admin" in str(labels) for _, labels in after)


def test_every_answer_carries_a_request_id(client):
    generated = client.get("/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/health").headers["x-request-id"] != generated
    kept = client.get("/health", headers={"X-Request-ID": "trace-7f3a:span.1"})
    assert kept.headers["x-request-id"] == "trace-7f3a:span.1"
    for insane in ("two words", "x" * 200, "line\tbreak"):
        replaced = client.get("/health", headers={"X-Request-ID": insane})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), insane
    refused = client.post("/predict", files={"file": b""})
    assert refused.status_code == 400 and refused.headers["x-request-id"]


def test_json_logs_one_line_per_request_with_its_id(model_path, portrait_bytes):
    settings = {"LOG_FORMAT": "json"}
    with service_process(model_path, settings=settings) as service:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            ok = http.post(
                "/predict", files={"file": portrait_bytes}, headers={"X-Request-ID": "abc-1"}
            )
            bad = http.post("/predict", files={"file": b"not an image"})
        output = service.wait_for_output(bad.headers["x-request-id"])
    assert ok.status_code == 200 and bad.status_code == 415
    entries = [json.loads(line) for line in output.splitlines() if line.strip()]
    requests = [entry for entry in entries if entry["logger"] == "service.access"]
    by_id = {entry["request_id"]: entry for entry in requests}
    assert by_id["abc-1"]["status"] == 200 and by_id["abc-1"]["path"] == "/predict"
    assert by_id[bad.headers["x-request-id"]]["status"] == 415
    for entry in (by_id["abc-1"], by_id[bad.headers["x-request-id"]]):
        assert entry["method"] == "POST" and entry["duration_ms"] > 0 and entry["level"] == "INFO"
    # uvicorn's own lines come out as JSON too, and no access line is logged twice
    assert any(entry["logger"].startswith("uvicorn") for entry in entries)
    assert len([e for e in requests if e["path"] == "/predict"]) == 2


def test_text_logs_carry_the_request_id(model_path):
    with service_process(model_path) as service:
        httpx.get(f"{service.url}/health", headers={"X-Request-ID": "find-me-42"})
        output = service.wait_for_output("find-me-42")
    (line,) = [line for line in output.splitlines() if "find-me-42" in line]
    assert re.search(r"INFO service\.access \[find-me-42\] GET /health 200 [\d.]+ ms$", line)
