"""deploy/kubernetes.yaml: valid against the Kubernetes API schema, and saying what the service
needs (probes, resources, an unprivileged read-only container, time to shut down gracefully).

The schemas are the ones `kubernetes-validate` ships in its wheel (strict: unknown fields are
errors), so the check runs offline.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.packaging.test_serve_env import dockerfile_instructions

KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
"""The oldest Kubernetes still commonly run, and the newest schema the pinned validator ships."""


@pytest.fixture(scope="module")
def documents(repo_root) -> dict[str, dict[str, Any]]:
    loaded = list(yaml.safe_load_all((repo_root / "deploy" / "kubernetes.yaml").read_text()))
    by_kind = {document["kind"]: document for document in loaded}
    assert len(by_kind) == len(loaded)
    return by_kind


@pytest.fixture(scope="module")
def container(documents) -> dict[str, Any]:
    (api,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    return api


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_is_valid_for_kubernetes(documents, version):
    for document in documents.values():
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validation_would_catch_a_mistake(documents):
    broken = copy.deepcopy(documents["Deployment"])
    (api,) = broken["spec"]["template"]["spec"]["containers"]
    api["readinesProbe"] = api.pop("readinessProbe")  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_probes_use_health_for_liveness_and_ready_for_readiness(container):
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert ports["http"] == Settings.model_fields["port"].default


def test_resources_are_requested_and_limited_one_worker_per_cpu(container):
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind] and resources["limits"][kind]
    env = {variable["name"]: variable for variable in container["env"]}
    assert int(env["WORKERS"]["value"]) == int(resources["limits"]["cpu"])


def test_the_container_is_unprivileged_on_a_read_only_root(documents, container, repo_root):
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True
    (user,) = dockerfile_instructions(repo_root / "Dockerfile.serve", "USER")
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert pod["automountServiceAccountToken"] is False
    # the one writable path is /tmp, a scratch volume
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and "emptyDir" in volume


def test_the_grace_period_covers_the_shutdown(documents, container):
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    env = {variable["name"]: variable for variable in container["env"]}
    shutdown = float(env["SHUTDOWN_TIMEOUT_SECONDS"]["value"])
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + shutdown


def test_the_service_and_the_disruption_budget_select_the_pods(documents, container):
    labels = documents["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert documents["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert documents["Service"]["spec"]["selector"].items() <= labels.items()
    budget = documents["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["minAvailable"] < documents["Deployment"]["spec"]["replicas"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in documents["Service"]["spec"]["ports"]} <= port_names
