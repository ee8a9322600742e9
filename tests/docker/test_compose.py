"""docker-compose.yml: accepted by compose, and its service really comes up healthy."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import yaml

from app.core.config import Settings
from tests.docker.conftest import ROOT, free_port, run, wait_until_healthy

pytestmark = pytest.mark.docker

APP_SERVICES = {"gradcheck", "gradcheck-2", "gradcheck-3"}


def compose_config(compose: list[str], *args: str, env: dict[str, str] | None = None) -> Any:
    result = run(
        [*compose, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
         *args, "config"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return yaml.safe_load(result.stdout)


def active(services: dict[str, Any], *profiles: str) -> set[str]:
    """Services that `up` starts with these profiles (compose v1's `config` lists them all)."""
    return {
        name
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def test_default_profile_is_one_service(compose: list[str]) -> None:
    config = compose_config(compose)
    assert active(config["services"]) == {"gradcheck"}
    service = config["services"]["gradcheck"]
    assert service["network_mode"] == "host"
    assert service["restart"] == "unless-stopped"
    assert "python3" in service["healthcheck"]["test"]
    assert service["environment"]["PORT"] == "8000"
    assert service["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"


def test_passed_through_settings_are_service_settings() -> None:
    fields = {f"GRADCHECK_{name.upper()}" for name in Settings.model_fields}
    # The file itself (PyYAML resolves its anchors and merge keys): compose may drop unset keys.
    config = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in APP_SERVICES:
        keys = {k for k in config["services"][name]["environment"] if k.startswith("GRADCHECK_")}
        assert keys, f"{name} passes no GRADCHECK_* setting through"
        assert keys <= fields, f"not settings of the service: {sorted(keys - fields)}"


def test_settings_come_from_the_environment(compose: list[str]) -> None:
    config = compose_config(
        compose,
        env={
            "PORT": "9123",
            "WEB_CONCURRENCY": "3",
            "GRADCHECK_MAX_CLASSES": "77",
            "PYTHON_IMAGE": "gradcheck-python-base:bookworm",
        },
    )
    service = config["services"]["gradcheck"]
    assert service["environment"]["PORT"] == "9123"
    assert service["environment"]["WEB_CONCURRENCY"] == "3"
    assert service["environment"]["GRADCHECK_MAX_CLASSES"] == "77"
    assert service["build"]["args"]["PYTHON_IMAGE"] == "gradcheck-python-base:bookworm"


def test_scale_profile_puts_nginx_in_front_of_three_replicas(compose: list[str]) -> None:
    config = compose_config(compose, "--profile", "scale")
    services = config["services"]
    assert active(services, "scale") == {*APP_SERVICES, "nginx"}
    ports = {services[name]["environment"]["PORT"] for name in APP_SERVICES}
    assert len(ports) == 3, "replicas share the host network, so each needs its own port"
    nginx = services["nginx"]
    assert nginx["network_mode"] == "host"
    upstreams = {v for k, v in nginx["environment"].items() if k.startswith("UPSTREAM_")}
    assert upstreams == {f"127.0.0.1:{port}" for port in ports}
    depends = nginx["depends_on"]
    assert all(depends[name]["condition"] == "service_healthy" for name in APP_SERVICES)
    mounts = " ".join(str(volume) for volume in nginx["volumes"])
    assert "gradcheck.conf.template" in mounts


def test_compose_up_serves_with_settings_from_the_environment(
    compose: list[str], app_image: str
) -> None:
    """`compose up` of the default service from the built image, on a free loopback port."""
    project = f"gradcheck-test-{os.getpid()}"
    port = free_port()
    env = {
        **os.environ,
        "GRADCHECK_IMAGE": app_image,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "GRADCHECK_MAX_CLASSES": "4",
    }
    base = [*compose, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    base += ["-p", project]
    try:
        run([*base, "up", "-d", "--no-build", "gradcheck"], cwd=ROOT, env=env, timeout=180)
        container_id = run([*base, "ps", "-q", "gradcheck"], cwd=ROOT, env=env).stdout.strip()
        assert container_id
        # The compose healthcheck probes every 10 s: the first one comes after 10 s.
        wait_until_healthy(container_id, timeout=90)
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        ok = httpx.post(f"{url}/v1/softmax", json={"logits": [[0.0, 1.0, 2.0, 3.0]]}, timeout=30)
        assert ok.status_code == 200, ok.text
        # GRADCHECK_MAX_CLASSES=4 from the environment reached the service.
        too_wide = httpx.post(f"{url}/v1/softmax", json={"logits": [[0.0] * 5]}, timeout=30)
        assert too_wide.status_code == 413, too_wide.text
        restart = run(["docker", "inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}",
                       container_id]).stdout.strip()  # fmt: skip
        assert restart == "unless-stopped"
    finally:
        run([*base, "down", "--remove-orphans", "-t", "20"], cwd=ROOT, env=env, check=False)
