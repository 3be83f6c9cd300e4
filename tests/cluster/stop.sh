#!/usr/bin/env bash
# Stops the daemons tests/cluster/start.sh started from a state directory, by the pids recorded there:
# slurmd, then slurmctld, then munged. A pid is only signalled when its command line names the state
# directory, so a recycled pid or a machine's own daemons are never touched. Idempotent.
# Usage: tests/cluster/stop.sh [STATE_DIR]   (default $MASSEDIT_TEST_SLURM_DIR, else /tmp/massedit-slurm)
set -uo pipefail

DIR="${1:-${MASSEDIT_TEST_SLURM_DIR:-/tmp/massedit-slurm}}"
[ -d "$DIR" ] || { echo "stop.sh: no state directory $DIR; nothing to stop"; exit 0; }
DIR="$(cd "$DIR" && pwd)"

# Prints the pid when the pid file names a live (not zombie) process started from this directory.
ours() {
    local pidfile="$1" pid state
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)"
    [ "$state" != Z ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/" || return 1
    echo "$pid"
}

status=0
for entry in slurmd:run/slurmd.pid slurmctld:run/slurmctld.pid munged:munge/run/munged.pid; do
    name="${entry%%:*}"
    pidfile="$DIR/${entry#*:}"
    pid="$(ours "$pidfile")" || { rm -f "$pidfile"; continue; }
    kill -TERM "$pid" 2>/dev/null
    # Daemons flush their state on TERM; give them 15 s before insisting.
    for _ in $(seq 150); do
        ours "$pidfile" >/dev/null || break
        sleep 0.1
    done
    if ours "$pidfile" >/dev/null; then
        echo "stop.sh: $name ($pid) ignored TERM; sending KILL" >&2
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    if ours "$pidfile" >/dev/null; then
        echo "stop.sh: could not stop $name ($pid)" >&2
        status=1
    else
        echo "stopped $name ($pid)"
        rm -f "$pidfile"
    fi
done
exit "$status"
