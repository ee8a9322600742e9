"""docker-compose.yml (bridge network, replicas behind nginx) as compose resolves it, and its
host-network override (docker-compose.host.yml) for real: its service comes up healthy."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import yaml

from app.core.config import Settings
from tests.docker.conftest import ROOT, run, wait_until_healthy
from tests.helpers import SERVER_ENV, free_port

pytestmark = pytest.mark.docker

DEFAULT = ROOT / "docker-compose.yml"
HOST_OVERRIDE = ROOT / "docker-compose.host.yml"
HOST_REPLICAS = {"gradcheck", "gradcheck-2", "gradcheck-3"}


def files(*, host: bool) -> list[str]:
    return ["-f", str(DEFAULT), *(["-f", str(HOST_OVERRIDE)] if host else [])]


def compose_config(
    compose: list[str], *args: str, host: bool = False, env: dict[str, str] | None = None
) -> Any:
    result = run(
        [*compose, "--project-directory", str(ROOT), *files(host=host), *args, "config"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return yaml.safe_load(result.stdout)


def active(services: dict[str, Any], *profiles: str) -> set[str]:
    """Services that `up` starts with these profiles (compose v1's `config` lists them all)."""
    return {
        name
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) of each `ports:` mapping, in either syntax compose prints."""
    found = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.add((int(port["published"]), int(port["target"])))
        else:
            published, target = str(port).rsplit(":", 1)
            found.add((int(published.rsplit(":", 1)[-1]), int(target)))
    return found


# ------------------------------------------------------- the default: a bridge network


def test_default_is_replicas_behind_nginx_on_a_bridge_network(compose: list[str]) -> None:
    config = compose_config(compose)
    services = config["services"]
    assert active(services) == {"gradcheck", "nginx"}
    assert config["networks"]["default"]["driver"] == "bridge"
    for service in services.values():
        assert "network_mode" not in service, "every service is on the project's bridge"
    api, nginx = services["gradcheck"], services["nginx"]
    assert int(api["deploy"]["replicas"]) >= 2
    assert not api.get("ports"), "the replicas publish no port (they would collide)"
    assert api["environment"]["PORT"] == "8000"
    assert api["restart"] == "unless-stopped"
    assert "python3" in api["healthcheck"]["test"]
    assert api["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    # nginx: the one published port, reaching the replicas by the service's name
    assert published_ports(nginx) == {(8080, int(nginx["environment"]["NGINX_PORT"]))}
    assert nginx["environment"]["UPSTREAM_1"] == "gradcheck:8000"
    for slot in ("UPSTREAM_2", "UPSTREAM_3"):  # unused slots of the template
        assert nginx["environment"][slot].endswith(" down")
    assert nginx["depends_on"]["gradcheck"]["condition"] == "service_healthy"
    mounts = " ".join(str(volume) for volume in nginx["volumes"])
    assert "gradcheck.conf.template" in mounts


def test_default_settings_come_from_the_environment(compose: list[str]) -> None:
    config = compose_config(
        compose,
        env={
            "GRADCHECK_REPLICAS": "4",
            "NGINX_PORT": "9180",
            "WEB_CONCURRENCY": "3",
            "UVICORN_LIMIT_CONCURRENCY": "50",
            "GRADCHECK_MAX_CLASSES": "77",
            "PYTHON_IMAGE": "gradcheck-python-base:bookworm",
        },
    )
    api = config["services"]["gradcheck"]
    assert int(api["deploy"]["replicas"]) == 4
    assert published_ports(config["services"]["nginx"]) == {(9180, 8080)}
    assert api["environment"]["WEB_CONCURRENCY"] == "3"
    assert api["environment"]["UVICORN_LIMIT_CONCURRENCY"] == "50"
    assert api["environment"]["GRADCHECK_MAX_CLASSES"] == "77"
    assert api["build"]["args"]["PYTHON_IMAGE"] == "gradcheck-python-base:bookworm"


def test_uvicorn_limits_are_set(compose: list[str]) -> None:
    environment = compose_config(compose)["services"]["gradcheck"]["environment"]
    assert int(environment["UVICORN_LIMIT_CONCURRENCY"]) == 200
    assert environment["UVICORN_TIMEOUT_KEEP_ALIVE"] == SERVER_ENV["UVICORN_TIMEOUT_KEEP_ALIVE"]


def test_passed_through_settings_are_service_settings() -> None:
    fields = {f"GRADCHECK_{name.upper()}" for name in Settings.model_fields}
    # The file itself (PyYAML resolves its anchors and merge keys): compose may drop unset keys.
    config = yaml.safe_load(DEFAULT.read_text())
    keys = {k for k in config["services"]["gradcheck"]["environment"] if k.startswith("GRADCHECK_")}
    assert keys, "the API passes no GRADCHECK_* setting through"
    assert keys <= fields, f"not settings of the service: {sorted(keys - fields)}"


# --------------------------------------------- the override: the host's network throughout


def test_host_override_is_one_service(compose: list[str]) -> None:
    config = compose_config(compose, host=True)
    assert active(config["services"]) == {"gradcheck"}
    service = config["services"]["gradcheck"]
    assert service["network_mode"] == "host"
    assert int(service["deploy"]["replicas"]) == 1, "replicas on one host network share a port"
    assert service["build"]["network"] == "host"
    assert service["restart"] == "unless-stopped"
    assert "python3" in service["healthcheck"]["test"]
    assert service["environment"]["PORT"] == "8000"


def test_host_override_scale_profile_puts_nginx_in_front_of_three_replicas(
    compose: list[str],
) -> None:
    config = compose_config(compose, "--profile", "scale", host=True)
    services = config["services"]
    assert active(services, "scale") == {*HOST_REPLICAS, "nginx"}
    assert all(services[name]["network_mode"] == "host" for name in services)
    ports = {services[name]["environment"]["PORT"] for name in HOST_REPLICAS}
    assert len(ports) == 3, "replicas share the host network, so each needs its own port"
    # The extra replicas are the API service of docker-compose.yml (extends), settings and all.
    base = services["gradcheck"]["environment"]
    for name in HOST_REPLICAS:
        environment = services[name]["environment"]
        assert {k: v for k, v in environment.items() if k not in {"HOST", "PORT"}} == {
            k: v for k, v in base.items() if k not in {"HOST", "PORT"}
        }
        assert services[name]["image"] == services["gradcheck"]["image"]
    nginx = services["nginx"]
    upstreams = {v for k, v in nginx["environment"].items() if k.startswith("UPSTREAM_")}
    assert upstreams == {f"127.0.0.1:{port}" for port in ports}
    depends = nginx["depends_on"]
    assert all(depends[name]["condition"] == "service_healthy" for name in HOST_REPLICAS)


def test_host_override_settings_come_from_the_environment(compose: list[str]) -> None:
    config = compose_config(
        compose,
        host=True,
        env={"PORT": "9123", "WEB_CONCURRENCY": "3", "GRADCHECK_MAX_CLASSES": "77"},
    )
    service = config["services"]["gradcheck"]
    assert service["environment"]["PORT"] == "9123"
    assert service["environment"]["WEB_CONCURRENCY"] == "3"
    assert service["environment"]["GRADCHECK_MAX_CLASSES"] == "77"


def test_host_override_up_serves_with_settings_from_the_environment(
    compose: list[str], app_image: str
) -> None:
    """`compose up` of the API from the built image, host network, on a free loopback port."""
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
    base = [*compose, "--project-directory", str(ROOT), *files(host=True), "-p", project]
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
        # The process-wide settings reached uvicorn (PID 1) from compose's environment.
        environ = run(["docker", "exec", container_id, "cat", "/proc/1/environ"]).stdout
        variables = dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)
        assert variables["MALLOC_ARENA_MAX"] == "2"
        assert variables["UVICORN_LIMIT_CONCURRENCY"] == "200"
    finally:
        run([*base, "down", "--remove-orphans", "-t", "20"], cwd=ROOT, env=env, check=False)
