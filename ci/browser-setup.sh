#!/usr/bin/env bash
# Install what tests/browser needs on a fresh Debian (bookworm) machine, as root:
#   chromium   Debian's browser, driven headless by Playwright through executable_path
#              (Playwright's own browser download is not used: it is blocked here)
# Idempotent and quiet: installs only what is missing, and says how long it took.
set -euo pipefail

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

if command -v chromium >/dev/null 2>&1; then
    echo "browser-setup: chromium already installed"
else
    if [[ "$(id -u)" != 0 ]]; then
        echo "browser-setup: need root to install chromium" >&2
        exit 1
    fi
    echo "browser-setup: installing chromium"
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
fi

# The launcher script prints a harmless shell warning on some machines; keep only the version.
echo "browser-setup: $(chromium --version 2>/dev/null | tail -n1) ($(( $(date +%s) - start )) s)"
