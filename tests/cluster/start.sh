#!/usr/bin/env bash
# Starts a private single-node SLURM cluster on localhost: munged, slurmctld and slurmd, as root, with
# no systemd and no accounting daemon. Configuration, key, sockets, spool, logs and pid files all live
# in one state directory and nothing outside it is written, so a machine's own munge or SLURM is left
# alone; clients reach this cluster through SLURM_CONF=<state dir>/slurm.conf or <state dir>/bin.
#
# Idempotent: daemons already running from this state directory are kept and missing ones started; a
# changed configuration (another machine size, port, ...) restarts the daemons started here.
# tests/cluster/stop.sh stops exactly those daemons, by the pids in the state directory.
#
# Usage: tests/cluster/start.sh [STATE_DIR]
#   STATE_DIR                 default $MASSEDIT_TEST_SLURM_DIR, else /tmp/massedit-slurm; every directory on
#                             its path must be searchable by all (munged checks), so not under a 0700 one
#   MASSEDIT_TEST_SLURM_PORT       slurmctld port (slurmd uses the next one); default 6917, away from
#                             SLURM's own 6817 so an existing cluster on the machine is not disturbed
#   MASSEDIT_TEST_SLURM_CPUS       CPUs the node declares; default: the machine's, at least 4
#   MASSEDIT_TEST_SLURM_MEM_MB     memory the node declares; default: 90 % of the machine's, at least 32000
#   MASSEDIT_TEST_SLURM_GPUS       fake GPUs (gres "gpu") the node declares; default 4
# The node may declare more CPUs and memory than the machine has, so that the workflow's real requests
# can be scheduled unchanged on a small machine: nothing here enforces them (no cgroups).
# Prints `export SLURM_CONF=... PATH=<state dir>/bin:$PATH` on stdout when the node takes jobs; exits
# non-zero with the reason and the daemon logs' tails on stderr otherwise.
set -euo pipefail

DIR="${1:-${MASSEDIT_TEST_SLURM_DIR:-/tmp/massedit-slurm}}"
PORT="${MASSEDIT_TEST_SLURM_PORT:-6917}"
GPUS="${MASSEDIT_TEST_SLURM_GPUS:-4}"
READY_TIMEOUT=60
HERE="$(cd "$(dirname "$0")" && pwd)"

fail() {
    echo "start.sh: $*" >&2
    local log
    for log in "$DIR"/log/*.log "$DIR"/munge/key/munged.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (the daemons switch users and own the spool)"
for bin in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
    [ -x "$bin" ] || fail "$bin is not installed (run tests/cluster/install.sh)"
done
for cmd in srun sbatch squeue scontrol sinfo; do
    command -v "$cmd" >/dev/null || fail "$cmd is not installed (run tests/cluster/install.sh)"
done
id munge >/dev/null 2>&1 || fail "user munge does not exist (the munge package creates it)"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/run/munge.socket"
export SLURM_CONF="$CONF"

# Running means: the pid file names a live (not zombie) process whose command line mentions this
# state directory, so a recycled pid or someone else's daemon is never taken for ours.
running() {
    local pidfile="$1" pid state
    [ -s "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)"
    [ "$state" != Z ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/"
}

# --- configuration --------------------------------------------------------------------------------
NODE="$(hostname -s)"
PHYS_CPUS="$(nproc)"
CPUS="${MASSEDIT_TEST_SLURM_CPUS:-$(( PHYS_CPUS > 4 ? PHYS_CPUS : 4 ))}"
PHYS_MEM_MB="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
MEM_MB="${MASSEDIT_TEST_SLURM_MEM_MB:-$(( PHYS_MEM_MB > 32000 ? PHYS_MEM_MB : 32000 ))}"

NODE_GRES=""
[ "$GPUS" -gt 0 ] && NODE_GRES="Gres=gpu:$GPUS"

mkdir -p "$DIR/log" "$DIR/run" "$DIR/spool/ctld" "$DIR/spool/d" "$DIR/dev" "$DIR/bin"
cat > "$CONF.new" <<EOF
# Written by tests/cluster/start.sh: a private single-node cluster for the workflow's cluster test.
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
# Take the node as declared below even where the machine has fewer CPUs or less memory.
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
# squeue, the workflow's status command here, sees a finished job for MinJobAge seconds; the executor
# plugin falls back to sacct (which needs an accounting daemon) when this is short.
MinJobAge=300
AccountingStorageType=accounting_storage/none
# A line per finished job (state, exit code, resources) that outlives MinJobAge.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB $NODE_GRES NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
# slurmd drops GPUs without device files, so each fake GPU is a link to /dev/null (a character device;
# links need no mknod privilege). no_gpu_env keeps CUDA_VISIBLE_DEVICES from pointing jobs at them.
: > "$DIR/gres.conf.new"
for (( i = 0; i < GPUS; i++ )); do
    ln -sfn /dev/null "$DIR/dev/gpu$i"
    printf 'NodeName=%s Name=gpu File=%s/dev/gpu%d Flags=no_gpu_env\n' "$NODE" "$DIR" "$i" \
        >> "$DIR/gres.conf.new"
done

changed=0
for file in "$CONF" "$DIR/gres.conf"; do
    if cmp -s "$file.new" "$file"; then
        rm -f "$file.new"
    else
        mv "$file.new" "$file"
        changed=1
    fi
done
if [ "$changed" -eq 1 ] && { running "$DIR/run/slurmctld.pid" || running "$DIR/run/slurmd.pid"; }; then
    # Some settings (ports, plugins) are only read at start, so restart rather than reconfigure.
    "$HERE/stop.sh" "$DIR" >&2 || fail "could not stop the daemons to apply a changed configuration"
fi

# Client commands that know this cluster without SLURM_CONF: the slurm-jobstep executor removes every
# SLURM_* variable, SLURM_CONF included, before it runs `srun` inside a job, and srun then finds no
# configuration. Jobs inherit PATH, so putting $DIR/bin first reaches this cluster at every level.
for cmd in srun sbatch squeue scontrol scancel sinfo sacct sacctmgr sshare; do
    real="$(PATH="${PATH//"$DIR/bin:"/}" command -v "$cmd" || true)"
    [ -n "$real" ] || continue
    printf '#!/bin/sh\nSLURM_CONF='"'%s'"' exec '"'%s'"' "$@"\n' "$CONF" "$real" > "$DIR/bin/$cmd"
    chmod 755 "$DIR/bin/$cmd"
done

# --- munged ---------------------------------------------------------------------------------------
# munged insists that every directory on its socket's path is searchable by all and that its key's
# directory is private to it.
chmod 755 "$DIR"
mkdir -p "$DIR/munge/run" "$DIR/munge/key"
chown -R munge:munge "$DIR/munge"
chmod 755 "$DIR/munge" "$DIR/munge/run"
chmod 700 "$DIR/munge/key"
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
        || fail "munged did not start"
fi

# --- slurmctld and slurmd -------------------------------------------------------------------------
if ! running "$DIR/run/slurmctld.pid"; then
    /usr/sbin/slurmctld -f "$CONF" || fail "slurmctld did not start"
fi
if ! running "$DIR/run/slurmd.pid"; then
    /usr/sbin/slurmd -f "$CONF" || fail "slurmd did not start"
fi

# --- wait until the node takes jobs ---------------------------------------------------------------
started=$SECONDS
deadline=$(( SECONDS + READY_TIMEOUT ))
state=""
while [ "$SECONDS" -lt "$deadline" ]; do
    # The daemons fork before reading everything; one that dies on a fatal error shows up here.
    if [ $(( SECONDS - started )) -ge 2 ]; then
        running "$DIR/run/slurmctld.pid" || fail "slurmctld exited"
        running "$DIR/run/slurmd.pid" || fail "slurmd exited"
    fi
    state="$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)"
    # A trailing "*" (idle*) means the controller cannot reach slurmd yet.
    case "$state" in
        idle | mixed | allocated | completing) break ;;
        inval* | drain* | down | fail*)
            fail "node $NODE is $state: $(scontrol show node "$NODE" | grep -o 'Reason=.*')" ;;
    esac
    sleep 0.5
done
case "$state" in
    idle | mixed | allocated | completing) ;;
    *) fail "node $NODE did not take jobs within ${READY_TIMEOUT}s (state: ${state:-no answer})" ;;
esac

echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH"
