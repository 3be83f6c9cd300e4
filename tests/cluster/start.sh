#!/usr/bin/env bash
# Starts a private single-node SLURM cluster on localhost: munged, slurmctld and slurmd, as root, with
# no systemd and no accounting daemon. Configuration, key, sockets, spool, logs and pid files all live
# in one state directory and nothing under /etc is written, so a machine's own munge or SLURM is left
# alone; clients reach this cluster through SLURM_CONF=<state dir>/slurm.conf or <state dir>/bin.
#
# Idempotent: daemons already running from this state directory are kept, missing ones are started.
# tests/cluster/stop.sh stops exactly the daemons started here, by the pids in the state directory.
#
# Usage: tests/cluster/start.sh [STATE_DIR]
#   STATE_DIR                 default $MASSEDIT_SLURM_DIR, else /tmp/massedit-slurm
#   MASSEDIT_SLURM_PORT       slurmctld port (slurmd uses the next one); default 6917, away from
#                             SLURM's own 6817 so an existing cluster on the machine is not disturbed
#   MASSEDIT_SLURM_CPUS       CPUs the node declares; default: those of the machine, at least 4, so
#                             a handful of one-thread jobs can run side by side
#   MASSEDIT_SLURM_GPUS       fake "gpu" GRES the node declares (no devices behind them), so jobs
#                             asking for --gres=gpu:1 are scheduled as on a GPU cluster; default 4
# Prints `export SLURM_CONF=... PATH=<state dir>/bin:$PATH` on stdout when the cluster answers (the
# bin directory holds client commands bound to this cluster); exits non-zero with the reason and the
# daemon logs' tails on stderr otherwise.
set -euo pipefail

DIR="${1:-${MASSEDIT_SLURM_DIR:-/tmp/massedit-slurm}}"
PORT="${MASSEDIT_SLURM_PORT:-6917}"
GPUS="${MASSEDIT_SLURM_GPUS:-4}"
READY_TIMEOUT=60

fail() {
    echo "start.sh: $*" >&2
    local log
    for log in "$DIR"/log/*.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (the daemons switch users and own the spool)"
for bin in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
    [ -x "$bin" ] || fail "$bin is not installed (run tests/cluster/install.sh)"
done
for cmd in sinfo scontrol; do
    command -v "$cmd" >/dev/null || fail "$cmd is not installed (run tests/cluster/install.sh)"
done
id munge >/dev/null 2>&1 || fail "user munge does not exist (the munge package creates it)"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
# munged insists that every directory on its socket's path is searchable by all, and that its key's
# directory is private to it.
chmod 755 "$DIR"
mkdir -p "$DIR/munge/run" "$DIR/munge/key" "$DIR/log" "$DIR/run" "$DIR/spool/ctld" "$DIR/spool/d"
chown -R munge:munge "$DIR/munge"
chmod 755 "$DIR/munge" "$DIR/munge/run"
chmod 700 "$DIR/munge/key"

SOCKET="$DIR/munge/run/munge.socket"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

# Running means: the pid file names a live (not zombie) process whose command line mentions this
# state directory, so a recycled pid or someone else's daemon is never taken for ours.
running() {
    local pidfile="$1" pid state
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -r "/proc/$pid/cmdline" ] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)"
    [ "$state" != Z ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/"
}

# --- munged ---------------------------------------------------------------------------------------
if [ ! -s "$DIR/munge/key/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/key/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$DIR/munge/key/munge.key"
    chmod 600 "$DIR/munge/key/munge.key"
fi
if ! running "$DIR/munge/run/munged.pid"; then
    rm -f "$SOCKET" "$SOCKET.lock"
    runuser -u munge -- /usr/sbin/munged \
        --key-file="$DIR/munge/key/munge.key" --socket="$SOCKET" \
        --pid-file="$DIR/munge/run/munged.pid" --log-file="$DIR/munge/key/munged.log" \
        --seed-file="$DIR/munge/key/munged.seed" \
        || { cat "$DIR/munge/key/munged.log" >&2 2>/dev/null || true; fail "munged did not start"; }
fi

# --- configuration --------------------------------------------------------------------------------
NODE="$(hostname -s)"
PHYS_CPUS="$(nproc)"
CPUS="${MASSEDIT_SLURM_CPUS:-$(( PHYS_CPUS > 4 ? PHYS_CPUS : 4 ))}"
# 90 % of the machine's memory, as slurmd would report it; config_overrides below keeps a node that
# declares more CPUs than it has from being drained.
MEM_MB="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"

cat > "$CONF.new" <<EOF
# Written by tests/cluster/start.sh; private single-node cluster for the workflow's cluster test.
ClusterName=massedit-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# The workflow's status queries use squeue, which sees finished jobs only for MinJobAge seconds; the
# executor plugin falls back to sacct when this is short, and sacct needs an accounting daemon.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPUS NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
# slurmd drops GPUs without device files, so each fake GPU is a link to /dev/null (a character device;
# links need no mknod privilege). no_gpu_env keeps CUDA_VISIBLE_DEVICES from pointing jobs at them.
mkdir -p "$DIR/dev"
for (( i = 0; i < GPUS; i++ )); do
    ln -sfn /dev/null "$DIR/dev/gpu$i"
done
printf 'NodeName=%s Name=gpu File=%s/dev/gpu[0-%d] Flags=no_gpu_env\n' "$NODE" "$DIR" "$(( GPUS - 1 ))" \
    > "$DIR/gres.conf.new"

# Client commands that know this cluster without SLURM_CONF: the slurm-jobstep executor removes every
# SLURM_* variable, SLURM_CONF included, before it runs `srun` inside a job, and srun then finds no
# configuration. Jobs inherit PATH, so putting $DIR/bin first reaches this cluster at every level.
mkdir -p "$DIR/bin"
for cmd in srun sbatch squeue scontrol scancel sinfo sacct sacctmgr sshare; do
    real="$(PATH="${PATH//"$DIR/bin:"/}" command -v "$cmd" || true)"
    [ -n "$real" ] || continue
    printf '#!/bin/sh\nSLURM_CONF='"'%s'"' exec '"'%s'"' "$@"\n' "$CONF" "$real" > "$DIR/bin/$cmd"
    chmod 755 "$DIR/bin/$cmd"
done

changed=0
for file in "$CONF" "$DIR/gres.conf"; do
    if ! cmp -s "$file.new" "$file"; then
        mv "$file.new" "$file"
        changed=1
    else
        rm -f "$file.new"
    fi
done

# --- slurmctld and slurmd -------------------------------------------------------------------------
if [ "$changed" -eq 1 ] && running "$DIR/run/slurmctld.pid"; then
    # A changed machine or setting under a running cluster: let the daemons reread their files.
    scontrol reconfigure || fail "scontrol reconfigure failed after a configuration change"
fi
if ! running "$DIR/run/slurmctld.pid"; then
    /usr/sbin/slurmctld -f "$CONF" || fail "slurmctld did not start"
fi
if ! running "$DIR/run/slurmd.pid"; then
    /usr/sbin/slurmd -f "$CONF" || fail "slurmd did not start"
fi

# --- wait until the node takes jobs ---------------------------------------------------------------
deadline=$(( SECONDS + READY_TIMEOUT ))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    state="$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)"
    # A trailing "*" (idle*) means the controller cannot reach slurmd yet.
    case "$state" in
        idle | mixed | allocated | completing) break ;;
        inval* | drain* | down | fail*) fail "node $NODE is $state: $(scontrol show node "$NODE" | grep -o 'Reason=.*')" ;;
    esac
    sleep 0.5
done
case "$state" in
    idle | mixed | allocated | completing) ;;
    *) fail "node $NODE did not become ready within ${READY_TIMEOUT}s (state: ${state:-no answer})" ;;
esac

echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH"
