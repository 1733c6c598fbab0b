#!/usr/bin/env bash
# build-initramfs.sh OUT.cpio.gz [KERNEL_VERSION]
#
# Assembles the BASE initramfs of the Linux test guest. This guest is a
# STAND-IN FOR A NANOS KERNEL, used only where no Nanos kernel exists (CI, and
# these machines): the helper boots the Debian cloud kernel directly
# (`direct_boot` in docs/config-schema.md) with this initramfs followed by a
# second, uncompressed newc cpio that the helper writes and that holds
#   /mcp/program   the unikernel's program (a static ELF)
#   /mcp/args      its arguments, one per line
#   /mcp/env       its environment, KEY=VALUE per line
#   /mcp/net       `ip=10.99.0.2 prefix=24 gateway=10.99.0.1 mac=02:..` (or `dhcp`)
#   <volumes>      the staged volume tree at its guest paths
# The guest then behaves, as far as the helper can tell, like the Nanos image
# would: static IP on its virtio-net NIC, runs the program, powers off on the
# ACPI power button (QMP system_powerdown) and when the program exits.
#
# Contents: busybox-static with applet symlinks, /bin/mcp-debug-exit
# (debug-exit.s: the program's exit code to QEMU's isa-debug-exit device, see
# init), the kernel modules for
# virtio-net over PCI and for the ACPI power button (with their dependencies,
# resolved with kmod's `modprobe --show-depends`; built-in ones are skipped),
# the busybox acpid action that powers off, and /init (tests/guest/init).
#
# KERNEL_VERSION defaults to the newest /boot/vmlinuz-*-cloud-amd64. Needs no
# network and no root (binutils' as and ld assemble debug-exit.s); about a second. The output depends only on the
# inputs (sorted entries, owner 0:0, mtimes = SOURCE_DATE_EPOCH or 0,
# `cpio --reproducible`, `gzip -n`).
# Environment: BUSYBOX (default: busybox-static's /bin/busybox).
set -euo pipefail

die() { echo "build-initramfs.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: build-initramfs.sh OUT.cpio.gz [KERNEL_VERSION]"
out=$1
here=$(cd "$(dirname "$0")" && pwd)

if [ $# -ge 2 ]; then
  kver=$2
else
  kver=$(ls /boot 2>/dev/null | sed -n 's/^vmlinuz-\(.*-cloud-amd64\)$/\1/p' | sort -V | tail -1)
  [ -n "$kver" ] || die "no /boot/vmlinuz-*-cloud-amd64 and no KERNEL_VERSION given (apt-get install linux-image-cloud-amd64)"
fi
moddir=/lib/modules/$kver
[ -f "$moddir/modules.dep" ] ||
  die "kernel modules for $kver missing ($moddir/modules.dep); apt-get install linux-image-$kver (or linux-image-cloud-amd64)"

for tool in cpio gzip modprobe; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install cpio gzip kmod)"
done
for tool in as ld; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install binutils): it assembles debug-exit.s"
done

busybox=${BUSYBOX:-}
if [ -z "$busybox" ]; then
  for c in /bin/busybox /usr/bin/busybox; do
    [ -x "$c" ] && { busybox=$c; break; }
  done
fi
[ -n "$busybox" ] && [ -x "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
# The initramfs has no libc: busybox must be static (busybox-static, not busybox).
case "$(LC_ALL=C ldd "$busybox" 2>&1 || true)" in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) die "$busybox is dynamically linked; apt-get install busybox-static (it replaces the dynamic busybox)" ;;
esac
"$busybox" acpid --help >/dev/null 2>&1 || die "$busybox has no acpid applet"

# Modules the guest loads, in order. Wanted: virtio_pci (the PCI transport),
# virtio_net (the NIC; pulls failover and net_failover), button (ACPI power
# button as an input device) and evdev (its /dev/input/event* for acpid).
wanted="virtio_pci virtio_net button evdev"

stage=$(mktemp -d "${TMPDIR:-/tmp}/mcp-initramfs.XXXXXX")
trap 'rm -rf "$stage" "${tmp_out:-}"' EXIT
root=$stage/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,var/log,mcp,etc/mcp,etc/acpi/PWRF,lib/modules/"$kver"}
chmod 1777 "$root/tmp"

# busybox and its applets (symlinks; real directories so that a volume under
# /usr never meets a symlinked directory when the second cpio is unpacked).
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
"$busybox" --list | while read -r applet; do
  [ "$applet" = busybox ] || ln -s /bin/busybox "$root/bin/$applet"
done
ln -s /bin/busybox "$root/sbin/init"

: > "$root/etc/mcp/modules"
seen=" "
for m in $wanted; do
  deps=$(modprobe -C /dev/null -S "$kver" --show-depends "$m" 2>&1) ||
    die "module $m not found for kernel $kver: $deps"
  while read -r kind path _; do
    case "$kind" in
      builtin) continue ;;              # compiled into the kernel
      insmod) ;;
      *) die "unexpected modprobe output for $m: $kind $path" ;;
    esac
    name=$(basename "$path"); name=${name%%.ko*}
    case "$seen" in *" $name "*) continue ;; esac
    seen="$seen$name "
    dest=$root/lib/modules/$kver/$name.ko
    case "$path" in
      *.ko) cp "$path" "$dest" ;;
      *.ko.xz) xz -dc "$path" > "$dest" ;;
      *.ko.zst) zstd -qdc "$path" > "$dest" ;;
      *.ko.gz) gzip -dc "$path" > "$dest" ;;
      *) die "unknown module file type: $path" ;;
    esac
    [ -s "$dest" ] || die "could not copy $path"
    echo "/lib/modules/$kver/$name.ko" >> "$root/etc/mcp/modules"
  done <<< "$deps"
done
echo "$kver" > "$root/etc/mcp/kernel-version"

# /bin/mcp-debug-exit CODE: the exit code to QEMU's isa-debug-exit device
# (the cloud kernel has no /dev/port). No libc; reproducible (no build id).
as --64 -o "$stage/debug-exit.o" "$here/debug-exit.s"
ld -static -nostdlib -s --build-id=none -o "$root/bin/mcp-debug-exit" "$stage/debug-exit.o"
chmod 755 "$root/bin/mcp-debug-exit"

install -m 755 "$here/init" "$root/init"
install -m 755 "$here/power-button" "$root/etc/acpi/PWRF/00000080"
install -m 755 "$here/udhcpc.script" "$root/etc/mcp/udhcpc.script"
# busybox acpid maps the power button (EV_KEY KEY_POWER) to the action
# PWRF/00000080 and runs /etc/acpi/PWRF/00000080; spell the map out anyway.
printf 'PWRF PWRF/00000080\n' > "$root/etc/acpid.conf"
printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"

epoch=${SOURCE_DATE_EPOCH:-0}
find "$root" -exec touch -h -d "@$epoch" {} +
mkdir -p "$(dirname "$out")"
tmp_out=$out.tmp.$$
( cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible ) | gzip -n -6 > "$tmp_out"
mv -f "$tmp_out" "$out"
echo "build-initramfs.sh: $out (kernel $kver; modules: $(tr '\n' ' ' < "$root/etc/mcp/modules" | sed "s|/lib/modules/$kver/||g; s|\.ko||g"); $(stat -c %s "$out") bytes)" >&2
