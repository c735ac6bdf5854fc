"""`download` up to the network boundary: credentials found or a clear error, the real Kaggle
client asked for the right dataset, and every way the network fails turned into a DownloadError.

Nothing here reaches the network or a real token: each test runs with an empty HOME and no
KAGGLE_* variables, and only the client's network call (or the socket layer beneath it) is
replaced.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.training import write_zip
from training.data import read_splits
from training.download import DATASET, download, find_credentials
from training.errors import DownloadError

USER, KEY = "test-user", "0123456789abcdef-not-a-real-key"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and no KAGGLE_* variables, so no test can see or touch a real token."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for name in [name for name in os.environ if name.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    # kaggle fixes its config path when first imported; if an earlier test imported it, point
    # the class at this HOME too, so nothing can read the real ~/.kaggle.
    if "kaggle.api.kaggle_api_extended" in sys.modules:
        from kaggle.api.kaggle_api_extended import KaggleApi

        monkeypatch.setattr(KaggleApi, "config_dir", str(home / ".kaggle"))
        monkeypatch.setattr(KaggleApi, "config", str(home / ".kaggle" / "kaggle.json"))
    return home


def write_token(path: Path, username: str = USER, key: str = KEY) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(0o600)
    return path


@pytest.fixture
def env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)


# --- credentials --------------------------------------------------------------------------------


def test_missing_credentials_say_what_to_do_before_touching_anything(home: Path, tmp_path: Path):
    out = tmp_path / "fer2013"
    with pytest.raises(DownloadError) as raised:
        download(out)
    message = str(raised.value)
    assert message.startswith("no Kaggle credentials found")
    for step in ("kaggle.com -> Settings -> API", "~/.kaggle/kaggle.json", "chmod 600"):
        assert step in message
    assert "KAGGLE_USERNAME" in message and "KAGGLE_KEY" in message
    assert not out.exists()
    assert list(home.rglob("*")) == []  # the kaggle package was not imported (it makes dirs)


def test_missing_credentials_name_kaggle_config_dir(monkeypatch: pytest.MonkeyPatch, tmp_path):
    config_dir = tmp_path / "kaggle-config"
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    with pytest.raises(DownloadError, match=re.escape(str(config_dir / "kaggle.json"))):
        find_credentials()


def test_an_empty_variable_overrides_the_file_and_is_named(home: Path, monkeypatch):
    # As in the kaggle package, a set-but-empty KAGGLE_KEY (compose's `${KAGGLE_KEY:-}`) wins
    # over kaggle.json; it would be sent as an empty key, so it is reported instead.
    write_token(home / ".kaggle" / "kaggle.json")
    monkeypatch.setenv("KAGGLE_KEY", "")
    with pytest.raises(DownloadError, match="KAGGLE_KEY set but empty"):
        find_credentials()


def test_a_damaged_kaggle_json_is_named(home: Path):
    config = home / ".kaggle" / "kaggle.json"
    config.parent.mkdir()
    config.write_text("{not json")
    with pytest.raises(DownloadError, match=re.escape(str(config))):
        find_credentials()


def test_credentials_from_the_environment(env_credentials: None):
    source = find_credentials()
    assert source == f"KAGGLE_USERNAME and KAGGLE_KEY (user {USER})"
    assert KEY not in source


@pytest.mark.parametrize(
    "location", ["~/.kaggle", "$KAGGLE_CONFIG_DIR", "~/.config/kaggle (no ~/.kaggle)"]
)
def test_credentials_from_kaggle_json(home: Path, monkeypatch: pytest.MonkeyPatch, location):
    if location == "$KAGGLE_CONFIG_DIR":
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "elsewhere"))
        config = write_token(home / "elsewhere" / "kaggle.json")
    elif location == "~/.kaggle":
        config = write_token(home / ".kaggle" / "kaggle.json")
    else:
        config = write_token(home / ".config" / "kaggle" / "kaggle.json")
    assert find_credentials() == f"{config} (user {USER})"


def test_an_access_token_counts_as_credentials(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_not_a_real_token")
    assert find_credentials() == "KAGGLE_API_TOKEN"


# --- the client, up to the network --------------------------------------------------------------


def kaggle_layout_zip(path: Path) -> Path:
    """What Kaggle serves for msambare/fer2013: train/<emotion>/*.jpg and test/<emotion>/*.jpg."""
    return write_zip(path, per_class={"train": 2, "test": 1})


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace only `dataset_download_files`, the real client's network call, with one that
    records how it was asked and serves a real zip the way the client would unpack it."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    recorded: list[dict[str, Any]] = []

    def fake_download(self: KaggleApi, dataset: str, path: str | None = None, **options: Any):
        credentials = (self.config_values.get("username"), self.config_values.get("key"))
        recorded.append(
            {"dataset": dataset, "path": path, "authenticated": self._authenticated, **options}
            | {"credentials": credentials}
        )
        archive = kaggle_layout_zip(Path(path) / "fer2013.zip")
        if options.get("unzip"):
            with zipfile.ZipFile(archive) as opened:
                opened.extractall(path)
            archive.unlink()

    monkeypatch.setattr(KaggleApi, "dataset_download_files", fake_download)
    return recorded


def test_download_asks_for_fer2013_and_unpacks_a_training_folder(
    env_credentials: None, calls: list[dict[str, Any]], tmp_path: Path, capsys, caplog
):
    out = tmp_path / "data" / "fer2013"
    assert download(out) == out

    [call] = calls
    assert call["dataset"] == DATASET == "msambare/fer2013"
    assert Path(call["path"]) == out
    assert call["unzip"] is True
    assert call["authenticated"] is True
    assert call["credentials"] == (USER, KEY)

    splits, _sha = read_splits(out)  # exactly what `train --data out` reads
    assert len(splits["train"]) == 2 * 7 and len(splits["test"]) == 7
    printed = capsys.readouterr().out
    assert f"python -m training train --data {out}" in printed.splitlines()[-1]
    assert KEY not in printed + caplog.text


def test_download_reads_the_kaggle_json_it_checked(
    home: Path, calls: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "config"))
    write_token(home / "config" / "kaggle.json", username="from-file", key="file-key")
    download(tmp_path / "out")
    assert calls[0]["credentials"] == ("from-file", "file-key")


def failing(error: Exception):
    def fake_download(self: Any, *args: Any, **kwargs: Any) -> None:
        raise error

    return fake_download


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.url = "https://api.kaggle.com/v1/datasets.DatasetApiService/DownloadDataset"
    return requests.HTTPError(f"{status} Client Error", response=response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (requests.ConnectionError("Failed to resolve 'api.kaggle.com'"), "could not reach Kaggle"),
        (requests.Timeout("read timed out"), "could not reach Kaggle"),
        (http_error(401), "rejected the credentials from KAGGLE_USERNAME and KAGGLE_KEY"),
        (http_error(403), "accept the dataset's terms"),
        (http_error(404), "no dataset msambare/fer2013"),
        (ValueError("The file fer2013.zip is corrupted or not a valid zip file."), "not complete"),
    ],
)
def test_client_failures_become_download_errors(
    env_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error, expected
):
    from kaggle.api.kaggle_api_extended import KaggleApi

    monkeypatch.setattr(KaggleApi, "dataset_download_files", failing(error))
    with pytest.raises(DownloadError, match=expected) as raised:
        download(tmp_path / "out")
    assert KEY not in str(raised.value)


def test_offline_through_the_real_client(
    env_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """One layer lower: the real client builds and sends its request, and the socket layer
    fails the way it does offline; what was about to be sent shows the dataset and the
    credentials it carries."""
    sent: list[requests.PreparedRequest] = []

    def offline(adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> None:
        sent.append(request)
        raise requests.ConnectionError("Failed to resolve 'api.kaggle.com' (offline in tests)")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", offline)
    with pytest.raises(DownloadError, match="could not reach Kaggle"):
        download(tmp_path / "out")

    [request] = sent
    assert request.url.endswith("/datasets.DatasetApiService/DownloadDataset")
    body = json.loads(request.body)
    assert (body["ownerSlug"], body["datasetSlug"]) == tuple(DATASET.split("/"))
    basic = base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {basic}"


# --- the command line ---------------------------------------------------------------------------


def test_cli_without_credentials_exits_2_with_the_message(repo_root: Path, tmp_path: Path):
    home = tmp_path / "empty-home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(repo_root)}
    result = subprocess.run(
        [sys.executable, "-m", "training", "download", "--out", str(tmp_path / "out")],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: no Kaggle credentials found")
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""  # not the kaggle package's own help
    assert list(home.rglob("*")) == []
