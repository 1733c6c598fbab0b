# The Linux stand-in for a Nanos kernel, built from nixpkgs: the same guest
# tests/guest/build-initramfs.sh assembles on Debian (see tests/guest/README.md),
# from the same files (tests/guest/init, power-button, udhcpc.script,
# debug-exit.s):
# nixpkgs's kernel, booted directly (`direct_boot`), and a base initramfs with
# static busybox, the kernel modules for virtio-net over PCI and the ACPI
# power button (with their dependencies; built-in ones are skipped), and /init.
# The helper appends the unikernel's program, args, env, network and volumes.
#   import ./guest.nix { inherit pkgs; } => { kernel = <path>; initrd = <drv>; }
{ pkgs }:
let
  kernel = pkgs.linuxPackages.kernel;
  kver = kernel.modDirVersion;
  busybox = pkgs.pkgsStatic.busybox;
  guestDir = ../tests/guest;
in
{
  kernel = "${kernel}/${pkgs.stdenv.hostPlatform.linux-kernel.target or "bzImage"}";

  initrd =
    pkgs.runCommand "mcp-standin-initramfs.cpio.gz"
      {
        nativeBuildInputs = [
          pkgs.kmod
          pkgs.cpio
          pkgs.gzip
          pkgs.xz
          pkgs.zstd
          pkgs.findutils
          pkgs.binutils-unwrapped
        ];
      }
      ''
        root=$PWD/root
        mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,var/log,mcp,etc/mcp,etc/acpi/PWRF,lib/modules/${kver}}
        chmod 1777 "$root/tmp"

        cp ${busybox}/bin/busybox "$root/bin/busybox"
        chmod 755 "$root/bin/busybox"
        "$root/bin/busybox" --list | while read -r applet; do
          [ "$applet" = busybox ] || ln -s /bin/busybox "$root/bin/$applet"
        done
        ln -s /bin/busybox "$root/sbin/init"

        : > "$root/etc/mcp/modules"
        seen=" "
        for m in virtio_pci virtio_net button evdev; do
          modprobe -C /dev/null -d ${kernel} -S ${kver} --show-depends "$m" > deps
          while read -r kind path _; do
            case "$kind" in
              builtin) continue ;;
              insmod) ;;
              *) echo "unexpected modprobe output for $m: $kind $path" >&2; exit 1 ;;
            esac
            name=$(basename "$path"); name=''${name%%.ko*}
            case "$seen" in *" $name "*) continue ;; esac
            seen="$seen$name "
            dest=$root/lib/modules/${kver}/$name.ko
            case "$path" in
              *.ko) cp "$path" "$dest" ;;
              *.ko.xz) xz -dc "$path" > "$dest" ;;
              *.ko.zst) zstd -qdc "$path" > "$dest" ;;
              *.ko.gz) gzip -dc "$path" > "$dest" ;;
              *) echo "unknown module file type: $path" >&2; exit 1 ;;
            esac
            echo "/lib/modules/${kver}/$name.ko" >> "$root/etc/mcp/modules"
          done < deps
        done
        echo ${kver} > "$root/etc/mcp/kernel-version"

        # /bin/mcp-debug-exit CODE: the program's exit code to QEMU's
        # isa-debug-exit device (init calls it), as build-initramfs.sh builds it.
        ${
          if builtins.pathExists (guestDir + "/debug-exit.s") then
            ''
              as --64 -o debug-exit.o ${guestDir + "/debug-exit.s"}
              ld -static -nostdlib -s --build-id=none -o "$root/bin/mcp-debug-exit" debug-exit.o
              chmod 755 "$root/bin/mcp-debug-exit"
            ''
          else
            ''
              echo "tests/guest/debug-exit.s is missing: the stand-in guest cannot report exit codes" >&2
              exit 1
            ''
        }

        install -m 755 ${guestDir + "/init"} "$root/init"
        install -m 755 ${guestDir + "/power-button"} "$root/etc/acpi/PWRF/00000080"
        install -m 755 ${guestDir + "/udhcpc.script"} "$root/etc/mcp/udhcpc.script"
        printf 'PWRF PWRF/00000080\n' > "$root/etc/acpid.conf"
        printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
        printf 'root:x:0:\n' > "$root/etc/group"

        find "$root" -exec touch -h -d @0 {} +
        (cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
          cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -6 > $out
      '';
}
