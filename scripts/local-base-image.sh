#!/usr/bin/env bash
# Build a stand-in for the official python:3.11-slim-bookworm image from Debian
# packages, for machines that can reach a Debian mirror but no image registry.
#
#   scripts/local-base-image.sh [IMAGE]        (default gradcheck-python-base:bookworm)
#
# The packages come from the Debian mirror of this machine's apt configuration
# (none configured: the script says so and stops). The result has Debian
# bookworm's Python 3.11 at /usr/bin/python3 (with venv and pip) and the host's
# CA bundle, so `pip install` inside a build works
# where TLS is intercepted. Idempotent: does nothing if IMAGE already exists
# (set FORCE=1 to rebuild). Needs root, debootstrap and a running Docker engine.
#
# Then: docker build --network host \
#         --build-arg PYTHON_IMAGE=gradcheck-python-base:bookworm -t gradcheck .
set -euo pipefail
# dockerd and debootstrap live in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

IMAGE="${1:-${GRADCHECK_BASE_IMAGE:-gradcheck-python-base:bookworm}}"
SUITE="${SUITE:-bookworm}"
PACKAGES="python3,python3-venv,python3-pip,ca-certificates"

log() { echo "local-base-image: $*" >&2; }

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists (FORCE=1 to rebuild)"
    exit 0
fi

# The Debian mirror this machine's apt already uses (deb822 or one-line format), found where
# apt's own configuration says its sources are (APT_CONFIG is honoured), and nowhere else: a
# machine that reaches a mirror has apt configured for it. No built-in address.
command -v apt-config >/dev/null || { log "apt-config is not installed: this script reads the Debian mirror from apt's configuration"; exit 1; }
SOURCELIST=/etc/apt/sources.list SOURCEPARTS=/etc/apt/sources.list.d/
eval "$(apt-config shell SOURCELIST Dir::Etc::sourcelist/f SOURCEPARTS Dir::Etc::sourceparts/d 2>/dev/null)"
mirror="$(
    { grep -hE '^[[:space:]]*URIs:' "${SOURCEPARTS%/}"/*.sources 2>/dev/null \
          | awk '{print $2}'
      grep -hE '^[[:space:]]*deb[[:space:]]' "$SOURCELIST" "${SOURCEPARTS%/}"/*.list 2>/dev/null \
          | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '/debian/?$' | head -n1 || true
)"
if [[ -z "$mirror" ]]; then
    log "no Debian mirror in this machine's apt configuration ($SOURCELIST, ${SOURCEPARTS%/}/*.sources, *.list): add the mirror this machine can reach there, then run this again"
    exit 1
fi

command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }

rootfs="$(mktemp -d /tmp/gradcheck-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

log "debootstrap $SUITE from $mirror into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    exit 1
}
rm -f "$rootfs.log"

# Trust what the host trusts (pip in the build must pass TLS checks here).
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi

# Slim it: no apt lists, caches, docs or man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
       "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
# Let pip install into a venv without Debian's externally-managed guard
# getting in the way of anything run as root in the build.
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED

log "importing into docker as $IMAGE"
tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
log "done: $(docker run --rm --network host "$IMAGE" python3 --version 2>&1)"
