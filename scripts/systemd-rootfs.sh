#!/usr/bin/env bash
# systemd-rootfs.sh: print the path of a Debian bookworm root file system for
# the systemd test tier (tests/systemd_units.rs boots it with systemd-nspawn,
# one throwaway overlay per test). Built with debootstrap from Debian's archive
# the first time and cached under /var/cache/mcp-unikernel/, keyed by the
# suite, the mirror, the variant and the package list below, so a changed list
# builds a new one (and the old one is removed). As root.
#
# The rootfs holds what the shipped units run (systemd 252 as PID 1, QEMU,
# nft, ip) and what the tests use inside the container (curl, ps). The helper,
# the guest kernel/initramfs, the guest programs, ops and Nanos are bound in
# from the host by the tests, never installed here.
#
# Exit status: 0 (path on stdout), 2 when a prerequisite is missing (one line
# on stderr naming it: the tests then report themselves skipped with it),
# 1 on any other failure. Progress goes to stderr.
#
# Environment: MCP_SYSTEMD_ROOTFS_CACHE (default /var/cache/mcp-unikernel),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

suite=bookworm
variant=minbase
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump when the customisation below changes in a way the list does not show.
recipe=1
packages=(
  systemd        # PID 1 and systemctl/journalctl/systemd-analyze
  dbus           # systemd-analyze security and systemctl show talk D-Bus
  qemu-system-x86
  nftables       # the firewall unit's nft
  iproute2       # the stand-in bridge (networking.bridges on NixOS)
  procps         # ps for debugging a test
  curl           # HTTP from the container's network namespace
  passwd         # useradd for the per-VM users
)

cache=${MCP_SYSTEMD_ROOTFS_CACHE:-/var/cache/mcp-unikernel}
missing() { echo "systemd-rootfs.sh: missing: $*" >&2; exit 2; }
say() { echo "systemd-rootfs.sh: $*" >&2; }

[ "$(id -u)" -eq 0 ] || missing "root (debootstrap needs it)"

list=$(printf '%s\n' "${packages[@]}" | LC_ALL=C sort -u | paste -sd, -)
key=$(printf 'suite=%s\nvariant=%s\nmirror=%s\nrecipe=%s\npackages=%s\n' \
  "$suite" "$variant" "$mirror" "$recipe" "$list" | sha256sum | cut -c1-16)
base=$cache/systemd-rootfs
dir=$base/$suite-$key
rootfs=$dir/rootfs

if [ -f "$dir/complete" ]; then
  echo "$rootfs"
  exit 0
fi

command -v debootstrap >/dev/null || missing "debootstrap (apt-get install debootstrap)"
mkdir -p "$base"
exec 9>"$base/.lock"
# Parallel tests share one build: the first builds, the others wait for it.
flock 9
if [ -f "$dir/complete" ]; then
  echo "$rootfs"
  exit 0
fi

t0=$(date +%s)
tmp=$dir.tmp-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
say "debootstrap $suite ($variant) from $mirror with: $list"
keyring=()
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
  keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
if ! debootstrap --variant="$variant" --include="$list" "${keyring[@]}" \
    "$suite" "$tmp/rootfs" "$mirror" > "$tmp/debootstrap.log" 2>&1; then
  tail -30 "$tmp/debootstrap.log" >&2
  say "debootstrap failed (log above)"
  exit 1
fi

r=$tmp/rootfs
# A container boot needs no consoles, no timers doing background work and no
# udev (no devices to manage in a container): fewer units, faster boots.
for u in console-getty.service getty@.service systemd-timesyncd.service \
         apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
         e2scrub_all.timer fstrim.timer man-db.timer systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null "$r/etc/systemd/system/$u"
done
# Each container gets a machine id of its own at boot (an empty file, not a
# missing one, so systemd does not try to commit it on the read-only base).
: > "$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id"
# The journal: in memory, so nothing accumulates in the overlay.
mkdir -p "$r/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' > "$r/etc/systemd/journald.conf.d/mcp-test.conf"
rm -rf "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/*
chroot "$r" dpkg-query -W -f '${Package} ${Version}\n' > "$tmp/packages.txt"
printf '%s\n' "$list" > "$tmp/package-list"

: > "$tmp/complete"
rm -rf "$dir"
mv "$tmp" "$dir"
# Other keys are older recipes or lists: remove them (they are large).
for old in "$base"/*; do
  [ "$old" = "$dir" ] && continue
  case "$old" in "$base"/*.tmp-*) continue ;; esac
  [ -d "$old" ] && rm -rf "$old"
done
say "built $rootfs in $(( $(date +%s) - t0 )) s ($(du -sm "$rootfs" | cut -f1) MiB, $(wc -l < "$dir/packages.txt") packages)"
echo "$rootfs"
