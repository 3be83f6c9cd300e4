#!/usr/bin/env bash
# Installs what tests/cluster/start.sh needs (munge, slurmctld, slurmd and the SLURM client commands)
# from the distribution's packages. Does nothing when they are already there; exits 2 when they are
# missing and cannot be installed here (not root, or no apt-get), 1 when the installation failed.
# Usage: tests/cluster/install.sh            (bounded by `timeout`; see .ci/run)
set -euo pipefail

NEEDED=(munged slurmctld slurmd sbatch squeue scontrol sinfo)
PACKAGES=(munge slurmctld slurmd slurm-client)

missing() {
    local name
    for name in "${NEEDED[@]}"; do
        command -v "$name" >/dev/null 2>&1 || [ -x "/usr/sbin/$name" ] || echo "$name"
    done
}

if [ -z "$(missing)" ]; then
    echo "SLURM and munge are already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install ${PACKAGES[*]}: needs root and apt-get (missing: $(missing | tr '\n' ' '))" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
# The package lists may be stale or absent on a fresh machine; a failed update still lets a cached
# list install.
apt-get update -qq || echo "apt-get update failed; trying the cached package lists" >&2
# The packages' maintainer scripts try to start the daemons through systemd or init scripts, which
# fail harmlessly where there is no init system; start.sh starts its own private ones.
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

if [ -n "$(missing)" ]; then
    echo "installed ${PACKAGES[*]} but still missing: $(missing | tr '\n' ' ')" >&2
    exit 1
fi
echo "installed ${PACKAGES[*]}"
