"""Dockerfile.train, checked as far as it can be without a Docker engine.

What would break the image is checked directly: a COPY of a path that does not exist or that the
ignore file leaves out of the context, a copied tree that is missing a module training imports,
a requirements file whose `-r` include was not copied, a third-party import that
requirements-train.txt does not install, and a default command the CLI does not accept.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT
from training.__main__ import parse_args

DOCKERFILE = REPO_ROOT / "Dockerfile.train"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) for each instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


def arguments(rest: str) -> list[str]:
    """An instruction's arguments, in exec (JSON) or shell form."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY, destinations made absolute against WORKDIR."""
    workdir, found = "/", []
    for keyword, rest in instructions(DOCKERFILE):
        if keyword == "WORKDIR":
            workdir = rest
        elif keyword == "COPY":
            *sources, destination = [a for a in arguments(rest) if not a.startswith("--")]
            if not destination.startswith("/"):
                trailing = "/" if destination.endswith("/") or destination == "." else ""
                destination = os.path.join(workdir, destination).rstrip("/.") + trailing
            found.append((sources, destination))
    return found


def build_image_tree(root: Path) -> Path:
    """Lay out the COPY instructions under `root` the way Docker would; return the WORKDIR."""
    for sources, destination in copies():
        target = root / destination.lstrip("/")
        for source in sources:
            path = REPO_ROOT / source
            if path.is_dir():  # Docker copies a directory's contents, not the directory
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
            else:
                into_dir = destination.endswith("/") or len(sources) > 1
                file_target = target / path.name if into_dir else target
                file_target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, file_target)
    workdir = next(
        rest for keyword, rest in reversed(instructions(DOCKERFILE)) if keyword == "WORKDIR"
    )
    return root / workdir.lstrip("/")


def copied_sources() -> list[str]:
    return [source for sources, _ in copies() for source in sources]


def requirement_files(path: Path) -> list[Path]:
    """`path` and every file it includes with `-r`, recursively."""
    found = [path]
    for line in path.read_text().splitlines():
        if line.strip().startswith(("-r ", "--requirement ")):
            found += requirement_files(path.parent / line.split(maxsplit=1)[1].strip())
    return found


# --- the instructions ---------------------------------------------------------------------------


def test_base_user_and_entrypoint():
    parsed = dict(instructions(DOCKERFILE))
    assert parsed["FROM"] == "python:3.11-slim"
    assert parsed["WORKDIR"] == "/app"
    assert parsed["USER"] not in ("root", "0")
    assert arguments(parsed["ENTRYPOINT"]) == ["python", "-m", "training"]


def test_default_command_is_one_the_cli_accepts():
    command = arguments(dict(instructions(DOCKERFILE))["CMD"])
    args = parse_args(command)  # argparse exits on anything it does not accept
    assert args.command == "train"
    # Mounted from ./runs, which .dockerignore keeps out of the serving image: a run written into
    # ./artifacts would be baked into the next `docker compose up --build`.
    assert args.out.is_relative_to("/app/runs")
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()]
    assert ignored("runs/default", patterns)


def compose_train_service() -> str:
    """The `train` service's block of docker-compose.yml, as text (no YAML parser is pinned)."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    match = re.search(r"^  train:\n(?:(?:    .*| *)\n?)*", text, flags=re.MULTILINE)
    assert match, "docker-compose.yml has no `train` service"
    return match.group(0)


def test_compose_train_service_mounts_what_the_default_command_reads_and_writes():
    service = compose_train_service()
    assert "dockerfile: Dockerfile.train" in service
    mounted = [Path(line.split(":")[1]) for line in re.findall(r"^ +- \./\S+", service, re.M)]
    args = parse_args(arguments(dict(instructions(DOCKERFILE))["CMD"]))
    for path in (args.data, args.out):
        assert any(path.is_relative_to(mount) for mount in mounted), f"{path} is not mounted"
    for variable in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        assert re.search(rf"^ +- {variable}$", service, re.M), f"{variable} is not passed through"


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore pattern drops `path` (or a folder above it) from the context."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_every_copied_path_exists_and_reaches_the_build_context():
    lines = DOCKERIGNORE.read_text().splitlines() if DOCKERIGNORE.exists() else []
    patterns = [line.strip() for line in lines if line.strip() and line[0] not in "#!"]
    for source in copied_sources():
        assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert not ignored(source.rstrip("/"), patterns), (
            f"COPY {source}: {DOCKERIGNORE.name} keeps it out of the build context"
        )


def test_requirement_includes_are_copied_too():
    copied = {(REPO_ROOT / source).resolve() for source in copied_sources()}
    for source in copied_sources():
        if source.startswith("requirements"):
            for needed in requirement_files(REPO_ROOT / source):
                assert needed.resolve() in copied, f"{source} includes {needed.name}: COPY it"


# --- the copied tree is enough ------------------------------------------------------------------


FIRST_PARTY = ("contract", "service", "training")


def python_files(app: Path) -> list[Path]:
    return [path for package in FIRST_PARTY for path in sorted(app.glob(f"{package}/**/*.py"))]


def test_every_first_party_import_resolves_inside_the_image(tmp_path: Path):
    """Static, so imports inside functions (the CLI imports its commands lazily) count too."""
    app = build_image_tree(tmp_path / "image")

    def exists(module: str) -> bool:
        path = app.joinpath(*module.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    missing = []
    for file in python_files(app):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from training import export`: a submodule in the repository must be copied
                modules = [node.module] + [
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if (REPO_ROOT.joinpath(*node.module.split("."), f"{alias.name}.py")).is_file()
                ]
            else:
                continue
            first_party = [m for m in modules if m.split(".")[0] in FIRST_PARTY]
            missing += [f"{file.relative_to(app)}: {m}" for m in first_party if not exists(m)]
    assert not missing, "imported but not copied into the image:\n" + "\n".join(missing)


def pinned_closure() -> set[str]:
    """The distributions installing requirements-train.txt brings, as this venv resolved them."""
    wanted: list[tuple[str, set[str]]] = []
    for path in requirement_files(REPO_ROOT / "requirements-train.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                requirement = Requirement(line)
                wanted.append((requirement.name, set(requirement.extras)))
    seen: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        if canonicalize_name(name) in seen:
            continue
        seen.add(canonicalize_name(name))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""}):
                wanted.append((requirement.name, set(requirement.extras)))
    return seen


# Imported only when KERAS_BACKEND selects that backend (the GPU machine brings its own); the
# dev requirements install jax for tests/integration/training/test_jax_backend.py, the image
# does not.
OTHER_KERAS_BACKENDS = {"jax"}


def test_third_party_imports_are_installed_by_requirements_train(tmp_path: Path):
    """What training imports and this venv has must come from requirements-train.txt, not from
    the dev extras; imports of packages this venv lacks are optional ones."""
    app = build_image_tree(tmp_path / "image")
    providers = importlib.metadata.packages_distributions()
    installed = pinned_closure()
    stray = set()
    for file in python_files(app):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            for top in (
                tops - set(sys.stdlib_module_names) - set(FIRST_PARTY) - OTHER_KERAS_BACKENDS
            ):
                dists = {canonicalize_name(d) for d in providers.get(top, [])}
                if dists and not dists & installed:
                    stray.add(f"{file.relative_to(app)}: {top} ({', '.join(sorted(dists))})")
    assert not stray, "imported but not installed by requirements-train.txt:\n" + "\n".join(
        sorted(stray)
    )


@pytest.fixture
def image_env(tmp_path: Path) -> dict[str, str]:
    """No PYTHONPATH and an empty HOME, as in the container: only the copied tree is importable."""
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}


def run_in(app: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=app, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cli_runs_from_the_copied_tree(tmp_path: Path, image_env: dict[str, str]):
    app = build_image_tree(tmp_path / "image")
    probe = run_in(
        app,
        image_env,
        "-c",
        "import training.__main__, training.errors, training.download, contract.emotion\n"
        "print(training.__main__.__file__, contract.emotion.__file__)",
    )
    assert probe.returncode == 0, probe.stderr
    assert all(Path(path).is_relative_to(app) for path in probe.stdout.split())

    help_ = run_in(app, image_env, "-m", "training", "--help")
    assert help_.returncode == 0, help_.stderr
    assert all(command in help_.stdout for command in ("download", "train", "evaluate", "export"))

    # `docker compose run train download` without credentials: our message, not a traceback.
    download = run_in(app, image_env, "-m", "training", "download", "--out", str(tmp_path / "d"))
    assert download.returncode == 2, download.stderr
    assert download.stderr.startswith("error: no Kaggle credentials found")
