"""One settings object, from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_defaults_serve_the_model_beside_the_package(clean_env, repo_root):
    settings = Settings()
    assert settings.model_path == repo_root / "artifacts" / "emotion.onnx"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_batch_files == 32
    assert settings.cors_origin_list == []


def test_environment_overrides(clean_env, tmp_path):
    clean_env.setenv("MODEL_PATH", str(tmp_path / "m.onnx"))
    clean_env.setenv("PORT", "9001")
    clean_env.setenv("max_upload_bytes", "1000")  # names are case-insensitive
    clean_env.setenv("CORS_ORIGINS", " https://a.example ,https://b.example,")
    settings = Settings()
    assert settings.model_path == tmp_path / "m.onnx"
    assert settings.port == 9001
    assert settings.max_upload_bytes == 1000
    assert settings.cors_origin_list == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "0"), ("PORT", "http"), ("MAX_BATCH_FILES", "0"), ("LOG_LEVEL", "loud")],
)
def test_bad_values_are_refused_by_name(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKERS", "0"),
        ("REQUEST_TIMEOUT_SECONDS", "0"),
        ("MAX_FACES_PER_IMAGE", "0"),
        ("MAX_QUEUED_REQUESTS", "-1"),
        ("SHUTDOWN_TIMEOUT_SECONDS", "-5"),
        ("LOG_FORMAT", "xml"),
        ("MIN_UPLOAD_BYTES_PER_SECOND", "-1"),
        ("MAX_ARRIVING_UPLOADS", "0"),
        ("HEADER_TIMEOUT_SECONDS", "0"),
        ("MAX_HEADER_BYTES", "100"),
        ("MAX_CONNECTIONS", "0"),
    ],
)
def test_bad_hardening_values_are_refused_by_name(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_the_api_key_is_never_shown_and_empty_means_none(clean_env):
    assert Settings().api_key_value is None
    clean_env.setenv("API_KEY", "")
    assert Settings().api_key_value is None
    clean_env.setenv("API_KEY", "s3cret")
    settings = Settings()
    assert settings.api_key_value == "s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
