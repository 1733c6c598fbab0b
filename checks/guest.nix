# The Linux stand-in for a Nanos kernel, built from nixpkgs: the same guest
# tests/guest/build-initramfs.sh assembles on Debian (see tests/guest/README.md),
# from the same files (tests/guest/init, power-button, udhcpc.script):
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
        ];
      }
      ''
        root=$PWD/root
        mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,var/log,mcp,etc/mcp,etc/acpi/PWRF,lib/modules/${kver}}
        chmod 1777 "$root/tmp"

        cp ${busybox}/bin/busybox "$root/bin/busybox"
        chmod 755 "$root/bin/busybox"
        for applet in $("$root/bin/busybox" --list); do
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
