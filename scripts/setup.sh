#!/usr/bin/env bash
# Install what the helper, the demo and the tests need on Debian 12 (as root):
# QEMU, nftables, iproute2, Nix (for the Nix tests), busybox-static and the
# Debian cloud kernel (the Linux stand-in guest), debootstrap and
# systemd-nspawn (the systemd tier), gcc and python3 (the attack tests build
# and drive hostile programs), the users QEMU runs as (one per VM: `mcp-qemu`
# for the demo, `mcpt-a`/`mcpt-b`/`mcpt-c` for tests with several VMs or an
# attacker uid), and the pinned `ops`. Prints nothing but progress on stderr;
# the ops path on stdout. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "setup.sh: run as root (apt-get, useradd)" >&2; exit 1; }
{
  echo "== apt packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 nftables iproute2 busybox-static linux-image-cloud-amd64 \
    nix-bin cpio kmod curl ca-certificates procps gcc libc6-dev python3 util-linux \
    binutils debootstrap systemd-container >/dev/null
  echo "== QEMU users mcp-qemu, mcpt-a, mcpt-b, mcpt-c"
  for u in mcp-qemu mcpt-a mcpt-b mcpt-c; do
    id -u "$u" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
  done
  echo "== ops (pinned, from the Go module proxy)"
} >&2
scripts/install-ops.sh
