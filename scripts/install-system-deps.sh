#!/usr/bin/env bash
# Install the Debian packages the tlsweep tests need:
#   slurmctld slurmd slurm-client munge  - a real single-node SLURM cluster
#                                          (tests/slurm_cluster.py)
#   hdf5-tools                           - h5ls/h5dump for inspecting outputs
#
# Idempotent and fast when everything is present: it checks with
# `command -v` and `dpkg -s` first and only then runs apt-get update/install.
# Without root (or without apt-get) it prints why it skips and exits 0, so CI
# on other machines goes on; the SLURM tests then skip with their own reason.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge hdf5-tools)
# One program per package, to check cheaply before asking dpkg.
declare -A PROGRAM=(
  [slurmctld]=slurmctld
  [slurmd]=slurmd
  [slurm-client]=sinfo
  [munge]=munged
  [hdf5-tools]=h5ls
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  prog=${PROGRAM[$pkg]}
  # munged/slurmctld/slurmd live in /usr/sbin, which a non-root PATH may lack.
  if command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ]; then
    continue
  fi
  if dpkg -s "$pkg" >/dev/null 2>&1; then
    continue
  fi
  missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all present (${PACKAGES[*]})"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: not root, skipping install of: ${missing[*]}" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: no apt-get, skipping install of: ${missing[*]}" >&2
  exit 0
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' postinst scripts try to start services; in containers without
# systemd that fails harmlessly. policy-rc.d 101 tells them not to try.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-system-deps: done"
