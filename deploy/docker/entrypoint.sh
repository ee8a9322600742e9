#!/bin/sh
# Entrypoint of the gradcheck image: set up the environment, then exec the command
# (by default `uvicorn app.main:app ...`), so that uvicorn is PID 1 and gets SIGTERM.
#
# - HOST / PORT (the conventional names) become UVICORN_HOST / UVICORN_PORT, which
#   uvicorn reads itself; WEB_CONCURRENCY (worker count) uvicorn also reads itself, as it
#   reads every UVICORN_* variable: the image sets UVICORN_LIMIT_CONCURRENCY (503 beyond
#   that many connections or tasks per worker) and UVICORN_TIMEOUT_KEEP_ALIVE; defaults
#   here too, for a command that runs without the image's environment.
# - With more than one worker, Prometheus metrics are summed over the workers through
#   files: PROMETHEUS_MULTIPROC_DIR gets a new empty directory under /tmp at every
#   start (unless it is set already), as prometheus_client requires.
set -eu

export UVICORN_HOST="${UVICORN_HOST:-${HOST:-0.0.0.0}}"
export UVICORN_PORT="${UVICORN_PORT:-${PORT:-8000}}"
export UVICORN_LIMIT_CONCURRENCY="${UVICORN_LIMIT_CONCURRENCY:-200}"
export UVICORN_TIMEOUT_KEEP_ALIVE="${UVICORN_TIMEOUT_KEEP_ALIVE:-75}"

if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ] && [ "${WEB_CONCURRENCY:-1}" -gt 1 ] 2>/dev/null; then
    PROMETHEUS_MULTIPROC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/gradcheck-metrics.XXXXXX")"
    export PROMETHEUS_MULTIPROC_DIR
elif [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

exec "$@"
