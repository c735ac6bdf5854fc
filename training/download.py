"""FER2013 from Kaggle into a folder that `python -m training train --data` reads as it is.

Credentials are looked up here, the way kaggle 2.2.4 looks them up, before anything of `kaggle` is
imported. The package cannot be left to find out on its own: importing it runs
`KaggleApi().authenticate()`, which prints its own help and calls `exit(1)` when it finds nothing
(swallowed on import, a bare exit status later). Checking first turns that into one
`DownloadError` that says what to do. Credentials are only read: nothing here writes them, and
only where they came from is logged, never the key.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from training.errors import DownloadError

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

log = logging.getLogger(__name__)

DATASET = "msambare/fer2013"
DATASET_URL = f"https://www.kaggle.com/datasets/{DATASET}"
TOKEN_PAGE = "https://www.kaggle.com/settings/api"


def kaggle_json_path() -> Path:
    """The kaggle.json that kaggle 2.2.4 reads.

    `$KAGGLE_CONFIG_DIR`, else `~/.kaggle`; on Linux, when `~/.kaggle` does not exist, the package
    falls back to `$XDG_CONFIG_HOME/kaggle` (default `~/.config/kaggle`).
    """
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    if config_dir:
        return Path(config_dir) / "kaggle.json"
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(xdg) / "kaggle" / "kaggle.json"
    return legacy / "kaggle.json"


def credentials_help(config_file: Path) -> str:
    """How to give the client credentials: for when none are found, or none are accepted."""
    shown = config_file if os.environ.get("KAGGLE_CONFIG_DIR") else "~/.kaggle/kaggle.json"
    return (
        "create an API token on kaggle.com -> Settings -> API "
        f"({TOKEN_PAGE}), then either save the kaggle.json it gives you as {shown} and run "
        f"`chmod 600 {shown}`, or export KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key> "
        "(a new-style token also works as KAGGLE_API_TOKEN=<token>). "
        f"Or download {DATASET_URL} by hand and pass the zip to `python -m training train --data`."
    )


def _read_kaggle_json(path: Path) -> dict[str, str]:
    """kaggle.json's values, {} if there is none; a damaged one is an error, not 'no credentials'.

    kaggle 2.2.4 silently ignores a kaggle.json it cannot parse and then reports no credentials
    at all, which sends the user looking in the wrong place.
    """
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DownloadError(
            f"cannot read Kaggle credentials from {path}: {error}. Replace it with the kaggle.json "
            f"from {TOKEN_PAGE} (and `chmod 600 {path}`), or remove it and export "
            "KAGGLE_USERNAME/KAGGLE_KEY."
        ) from error
    if not isinstance(values, dict):
        raise DownloadError(f'{path} is not a Kaggle token: expected {{"username": …, "key": …}}')
    return {name: value for name, value in values.items() if isinstance(value, str)}


def _has_token_file(path: Path) -> bool:
    try:
        return path.is_file() and bool(path.read_text(errors="replace").strip())
    except OSError:  # unreadable: the client cannot use it either
        return False


def find_credentials() -> str:
    """Where the Kaggle client will find credentials, in words for the log; never the secret.

    Mirrors kaggle 2.2.4's order: an access token (`KAGGLE_API_TOKEN`, `~/.kaggle/access_token`),
    then username and key (kaggle.json, with any `KAGGLE_*` variable overriding its field), then
    a `kaggle auth login` session. Raises DownloadError when there are none.
    """
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    kaggle_dir = Path.home() / ".kaggle"
    for name in ("access_token", "access_token.txt"):
        if _has_token_file(kaggle_dir / name):
            return str(kaggle_dir / name)

    config_file = kaggle_json_path()
    stored = _read_kaggle_json(config_file)
    variables = {"username": "KAGGLE_USERNAME", "key": "KAGGLE_KEY"}
    # As in the package, a variable that is set overrides the file's field, even when empty.
    values = {field: os.environ.get(var, stored.get(field, "")) for field, var in variables.items()}
    if all(values.values()):
        origins = [var if var in os.environ else str(config_file) for var in variables.values()]
        return f"{' and '.join(dict.fromkeys(origins))} (user {values['username']})"

    if (kaggle_dir / "credentials.json").is_file():
        return f"{kaggle_dir / 'credentials.json'} (kaggle auth login)"

    empty = [var for var in variables.values() if os.environ.get(var) == ""]
    hint = f" ({' and '.join(empty)} set but empty)" if empty else ""
    raise DownloadError(f"no Kaggle credentials found{hint}: {credentials_help(config_file)}")


def _authenticated_client(source: str) -> KaggleApi:
    """The real Kaggle client, authenticated from the credentials `find_credentials` found."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    # The class reads KAGGLE_CONFIG_DIR and HOME once, at import: read the file checked above.
    config_file = kaggle_json_path()
    api.config_dir, api.config = str(config_file.parent), str(config_file)
    try:
        api.authenticate()
    except SystemExit as error:  # kaggle's `exit(1)` when it accepts none of the credentials
        raise DownloadError(
            f"Kaggle accepted none of the credentials (found: {source}): "
            + credentials_help(config_file)
        ) from error
    return api


def _refusal(error: requests.HTTPError, source: str) -> DownloadError:
    """Kaggle answered but said no: what each answer means for the user."""
    status = error.response.status_code if error.response is not None else None
    if status == 401:
        return DownloadError(
            f"Kaggle rejected the credentials from {source} (401 Unauthorized): the key is wrong, "
            f"expired or revoked. Create a new API token at {TOKEN_PAGE} and use it instead."
        )
    if status == 403:
        return DownloadError(
            f"Kaggle refused {DATASET} to the account of {source} (403 Forbidden): sign in to "
            f"kaggle.com as that account, open {DATASET_URL}, accept the dataset's terms if it "
            "asks, then run this again."
        )
    if status == 404:
        return DownloadError(
            f"Kaggle has no dataset {DATASET} (404 Not Found): it may have moved. Download "
            "FER2013 by hand and pass its zip or folder to `python -m training train --data`."
        )
    return DownloadError(f"Kaggle answered {status} for {DATASET}: {error}. Try again later.")


def download(out: Path) -> Path:
    """Fetch FER2013 into `out` (`out/train/<emotion>/*.jpg`, `out/test/...`) and return `out`."""
    source = find_credentials()
    log.info("Kaggle credentials from %s", source)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create {out}: {error}") from error

    try:
        api = _authenticated_client(source)
        api.dataset_download_files(DATASET, path=str(out), unzip=True, quiet=False)
    except requests.HTTPError as error:
        raise _refusal(error, source) from error
    except requests.RequestException as error:  # no network, DNS, proxy, TLS, a dropped download
        raise DownloadError(
            "could not reach Kaggle: check the network connection (and HTTPS_PROXY if you use "
            f"one), then run this again; or download {DATASET_URL} by hand and pass the zip to "
            f"`python -m training train --data`. ({error})"
        ) from error
    except (OSError, ValueError, RuntimeError) as error:  # disk full; kaggle wraps unzip failures
        raise DownloadError(
            f"the download into {out} did not complete: {error}. Check the free disk space "
            "and run this again."
        ) from error

    missing = [split for split in ("train", "test") if not (out / split).is_dir()]
    if missing:
        raise DownloadError(
            f"Kaggle's {DATASET} unpacked into {out} without {' and '.join(missing)}/: the "
            "dataset's layout has changed; expected train/<emotion>/*.jpg and test/<emotion>/*.jpg."
        )
    train = f"python -m training train --data {shlex.quote(str(out))} --out runs/fer2013"
    print(f"FER2013 is in {out}; train on it: {train}")
    return out
