#!/usr/bin/env bash
# Start a Docker engine in the background if none answers, and wait for it.
#
#   scripts/start-dockerd.sh        exit 0 once `docker info` works
#
# For machines without systemd (CI containers, sandboxes): runs
# `dockerd --bridge=none --iptables=false`, so containers use --network host
# and the engine touches no firewall rules. Idempotent: if an engine already
# answers, does nothing. Writes the daemon's pid to $DOCKERD_PIDFILE
# (default /run/gradcheck-dockerd.pid) and its log to $DOCKERD_LOG
# (default /tmp/gradcheck-dockerd.log). Needs root.
set -euo pipefail
# dockerd and debootstrap live in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PIDFILE="${DOCKERD_PIDFILE:-/run/gradcheck-dockerd.pid}"
LOG="${DOCKERD_LOG:-/tmp/gradcheck-dockerd.log}"
WAIT="${DOCKERD_WAIT_SECONDS:-60}"

log() { echo "start-dockerd: $*" >&2; }

if docker info >/dev/null 2>&1; then
    log "engine already running"
    exit 0
fi
command -v dockerd >/dev/null || { log "dockerd not found (apt-get install docker.io)"; exit 1; }
[[ "$(id -u)" == 0 ]] || { log "must run as root to start dockerd"; exit 1; }

# A stale socket or pid file from a killed daemon makes dockerd refuse to start.
if [[ -f "$PIDFILE" ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    rm -f "$PIDFILE"
fi
if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi

log "starting dockerd (log: $LOG)"
# setsid: the daemon outlives this script and is not in the caller's job control.
setsid dockerd --bridge=none --iptables=false >"$LOG" 2>&1 </dev/null &
echo $! >"$PIDFILE"

for _ in $(seq "$WAIT"); do
    if docker info >/dev/null 2>&1; then
        log "engine up (pid $(cat "$PIDFILE"))"
        exit 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        log "dockerd exited; last log lines:"
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    sleep 1
done
log "dockerd did not answer within ${WAIT}s; last log lines:"
tail -n 20 "$LOG" >&2
exit 1
