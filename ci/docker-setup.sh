#!/usr/bin/env bash
# Install what tests/docker needs on a fresh Debian (bookworm) machine, as root:
#   docker.io    a Docker engine (dockerd) and client; tests start the engine themselves
#                with scripts/start-dockerd.sh (no systemd needed)
#   debootstrap  builds the stand-in Python base image (scripts/local-base-image.sh)
#                where no image registry can be reached
#   nginx        the load-balancer test runs it as a plain process on loopback
#   docker-compose  Debian's Compose v1, only if no `docker compose` plugin works
# Idempotent and quiet: installs only what is missing, and says how long it took.
set -euo pipefail

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

packages=()
have dockerd || packages+=(docker.io)
have debootstrap || packages+=(debootstrap)
have nginx || packages+=(nginx)
if ! { have docker && docker compose version >/dev/null 2>&1; } && ! have docker-compose; then
    packages+=(docker-compose)
fi

if ((${#packages[@]})); then
    if [[ "$(id -u)" != 0 ]]; then
        echo "docker-setup: need root to install ${packages[*]}" >&2
        exit 1
    fi
    echo "docker-setup: installing ${packages[*]}"
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${packages[@]}" >/dev/null
else
    echo "docker-setup: docker, debootstrap, nginx and compose already installed"
fi

# On a machine with systemd, the package may have started an engine already; elsewhere
# the tests start one. Either way, say what is there.
echo "docker-setup: $(dockerd --version 2>/dev/null || echo 'no dockerd')"
echo "docker-setup: $( (docker compose version 2>/dev/null || docker-compose version --short 2>/dev/null) | head -n1)"
echo "docker-setup: $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
echo "docker-setup: took $(( $(date +%s) - start )) s"
