"""docs/architecture.md is the newcomer's map of the code: every module of the service and of
training, and every package of the contract, is on it, so a new file cannot go unmapped."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("package", ["contract", "service", "training"])
def test_every_module_is_on_the_map(repo_root, package):
    doc = (repo_root / "docs" / "architecture.md").read_text()
    section = doc.split(f"\n{package}/", 1)[1]
    section = re.split(r"\n[a-z]+/ ", section, maxsplit=1)[0]  # up to the next top-level folder
    modules = {
        path.relative_to(repo_root / package).as_posix()
        for path in (repo_root / package).rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }
    unmapped = {
        module
        for module in modules
        if re.search(rf"(?<![\w/]){re.escape(module.rsplit('/', 1)[-1])}\b", section) is None
    }
    assert not unmapped, f"docs/architecture.md does not say what {sorted(unmapped)} do"
