"""The container memory limits (docker-compose.yml, deploy/kubernetes.yaml) hold what the
service may take under its own bounds, so a burst of large images meets a 503, not the kernel's
OOM killer: the supervisor and resource tracker (WORKERS > 1), each worker at rest after its
warm-up, each worker's MAX_DECODING_BYTES, and in compose the tmpfs /tmp, which the kernel
charges to the container's memory."""

from __future__ import annotations

import re

import yaml

from service.settings import Settings

MB = 1_000_000
WORKER_AT_REST = 260 * MB
"""One process after its warm-up, ready (shipped ensemble and YuNet): 202 MB a worker with
WORKERS=2, 226-256 MB alone (bench/results/serve_bench.md) on the development machine."""
SUPERVISOR = 70 * MB
"""uvicorn's supervisor, which checks the model in a child process before starting workers
(44 MB), and multiprocessing's resource tracker (13 MB), measured with WORKERS=2."""
UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def in_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmgKMG]i?)?", quantity.strip()).groups()
    return int(number) * UNITS.get(unit or "", 1)


def needed(workers: int, settings: dict[str, str], scratch_in_memory: int = 0) -> int:
    decoding = int(
        settings.get("MAX_DECODING_BYTES", Settings.model_fields["max_decoding_bytes"].default)
    )
    return (
        (SUPERVISOR if workers > 1 else 0)
        + workers * (WORKER_AT_REST + decoding)
        + (scratch_in_memory)
    )


def test_compose_limits_the_api_to_what_it_may_take(repo_root):
    api = yaml.safe_load((repo_root / "docker-compose.yml").read_text())["services"]["api"]
    settings = {name: str(value) for name, value in api["environment"].items()}
    (tmpfs,) = [mount for mount in api["tmpfs"] if mount.startswith("/tmp:")]
    scratch = in_bytes(re.search(r"size=(\w+)", tmpfs).group(1))
    limit = in_bytes(str(api["mem_limit"]))
    wanted = needed(int(settings["WORKERS"]), settings, scratch)
    assert limit >= wanted, f"mem_limit {api['mem_limit']} is under {wanted / MB:.0f} MB"


def test_kubernetes_limits_the_pod_to_what_it_may_take(repo_root):
    documents = yaml.safe_load_all((repo_root / "deploy" / "kubernetes.yaml").read_text())
    deployment = next(document for document in documents if document["kind"] == "Deployment")
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    settings = {variable["name"]: variable.get("value", "") for variable in api["env"]}
    limit = in_bytes(api["resources"]["limits"]["memory"])
    assert limit >= needed(int(settings["WORKERS"]), settings)  # /tmp is an emptyDir on disk


def test_the_arithmetic_catches_a_limit_too_small():
    assert in_bytes("1g") < needed(2, {}, in_bytes("512m"))
