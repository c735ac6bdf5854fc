"""What every test shares, and where the suite's kinds live:

    unit/service, unit/training   fast, in-process: one module or the app through its ASGI client
    integration/                  whole tiny training runs (train, export, resume, ensemble) and
                                  the shipped model's own figures
    system/                       a real `python -m service` over HTTP, Chromium, load, fuzz, faults
    packaging/                    the Dockerfiles, compose, Kubernetes and the README's tables

Fixtures live in tests/fixtures/ (loaded for every folder below); nothing here imports
TensorFlow, so the service's tests never pay for it.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.service", "tests.fixtures.training"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


SLOW_CALLS = {
    "harness.server.service_process",  # a real `python -m service`
    "harness.server.running_service",
    "harness.browser.launched_chromium",  # Chromium
    "training.train.train",  # a network trained
    "tests.fixtures.training.run_killed_after",
    "subprocess",  # a fresh Python: TensorFlow or the service imported anew, seconds before work
}
"""A test that calls one of these, itself, through its fixtures or through a helper of its own
module, takes seconds to minutes: it is marked `slow`, and `make test-quick` leaves it out
(`make test` runs everything)."""
SLOW_FIXTURES = {"finished_run"}
"""Fixtures that train a network (with a local import, which the calls above do not show)."""


def _called(function: object, depth: int = 2) -> set[str]:
    """What `function` names globally (as module.qualname, or a module's name), and what the
    functions of its own module that it names do, `depth` levels down."""
    code, scope = getattr(function, "__code__", None), getattr(function, "__globals__", {})
    found: set[str] = set()
    for value in (scope.get(name) for name in (code.co_names if code else ())):
        if isinstance(value, types.ModuleType):
            found.add(value.__name__)
            continue
        found.add(f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}")
        if depth and isinstance(value, types.FunctionType) and value.__globals__ is scope:
            found |= _called(value, depth - 1)
    return found


def _calls_something_slow(item: pytest.Item) -> bool:
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    fixtures = getattr(item, "_fixtureinfo", None)
    functions = [getattr(item, "function", None)] + [
        definition.func
        for definitions in (fixtures.name2fixturedefs.values() if fixtures else ())
        for definition in definitions
    ]
    return any(SLOW_CALLS & _called(function) for function in functions)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _calls_something_slow(item):
            item.add_marker(pytest.mark.slow)
