"""deploy/kubernetes: valid against the Kubernetes schemas, and consistent with the image.

kubernetes-validate ships the schemas inside the package, so this runs offline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.core.config import Settings
from tests.docker.conftest import ROOT

pytestmark = pytest.mark.docker

MANIFESTS = ROOT / "deploy" / "kubernetes"
# The newest schemas the package ships, and an older release still in wide use.
VERSIONS = [kubernetes_validate.latest_version(), "1.29.0"]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> dict[str, dict[str, Any]]:
    """kind -> the one resource of that kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in resource_files():
        for doc in documents(path):
            assert doc["kind"] not in found, f"two {doc['kind']} resources"
            found[doc["kind"]] = doc
    return found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", resource_files(), ids=lambda p: p.name)
def test_manifest_is_valid_strictly(path: Path, version: str) -> None:
    for doc in documents(path):
        # strict: unknown fields (typos) are errors too
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_mistakes() -> None:
    deployment = resources()["Deployment"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = documents(MANIFESTS / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in resource_files())


def test_deployment_probes_limits_and_security() -> None:
    deployment = resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    limits = container["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item["value"] for item in container["env"]}
    (port,) = container["ports"]
    assert env["PORT"] == str(port["containerPort"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]


def test_deployment_user_is_the_image_user() -> None:
    """runAsUser must be the Dockerfile's numeric USER (APP_UID)."""
    match = re.search(r"^ARG APP_UID=(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "Dockerfile has no ARG APP_UID"
    pod = resources()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(match.group(1))
    assert int(match.group(1)) != 0


def test_service_and_hpa_point_at_the_deployment() -> None:
    found = resources()
    deployment, service, hpa = (
        found["Deployment"],
        found["Service"],
        found["HorizontalPodAutoscaler"],
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    budget = found["PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    config_map = found["ConfigMap"]
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    config_refs = [item["configMapRef"]["name"] for item in env_from if "configMapRef" in item]
    assert config_refs == [config_map["metadata"]["name"]]
    # Secrets come from a Secret made outside version control; pods start without it.
    (secret_ref,) = [item["secretRef"] for item in env_from if "secretRef" in item]
    assert secret_ref["optional"] is True
    assert "Secret" not in found, "no secret values in the repository"
    assert all(key.startswith("GRADCHECK_") for key in config_map["data"])


def test_config_map_keys_are_service_settings() -> None:
    fields = {f"GRADCHECK_{name.upper()}" for name in Settings.model_fields}
    keys = set(resources()["ConfigMap"]["data"])
    assert keys <= fields, f"not settings of the service: {sorted(keys - fields)}"
    Settings(**{key.removeprefix("GRADCHECK_").lower(): value for key, value in
                resources()["ConfigMap"]["data"].items()})  # fmt: skip
