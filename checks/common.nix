# Shared pieces of the nixosTests in this directory, for one guest flavour:
#   "standin"  the Linux stand-in guest built from nixpkgs (./guest.nix),
#              booted directly by the helper: runs wherever the test VM can
#              run QEMU (TCG inside it by default), no Nanos needed;
#   "nanos"    real Nanos images built by ops from `nanosDir`;
#   "stub"     no guest at all: ./qemu-stub.py in place of QEMU (wiring only).
{
  pkgs,
  module,
  flavour,
  helper,
  fileServer,
  fileServerStatic,
  opsPackage,
  nanosDir,
  accel,
}:
let
  guest = import ./guest.nix { inherit pkgs; };

  qemuStub = pkgs.writeTextFile {
    name = "qemu-stub";
    destination = "/bin/qemu-system-${pkgs.stdenv.hostPlatform.qemuArch or "x86_64"}";
    executable = true;
    text = "#!${pkgs.python3}/bin/python3\n" + builtins.readFile ./qemu-stub.py;
  };

  # Fake kernel/initrd for the stub flavour: the helper only copies them.
  stubBoot = {
    kernel = pkgs.writeText "stub-kernel" "not a kernel: checks/qemu-stub.py boots nothing\n";
    initrd = pkgs.writeText "stub-initrd" "not an initrd\n";
  };

  # How each flavour runs a program.
  boot =
    {
      standin = program: {
        inherit program;
        directBoot = { inherit (guest) kernel initrd; };
      };
      stub = program: {
        inherit program;
        directBoot = stubBoot;
      };
      nanos = program: { inherit program; };
    }
    .${flavour};
in
rec {
  inherit flavour guest qemuStub;

  # The host: the module, files to serve, curl.
  host =
    { pkgs, ... }:
    {
      imports = [ module ];
      virtualisation.memorySize = 2048;
      virtualisation.cores = 2;
      environment.systemPackages = [ pkgs.curl ];
      services.mcp = {
        package = helper;
        inherit opsPackage;
      }
      // (if flavour == "nanos" then { inherit nanosDir; } else { })
      // (if flavour == "stub" then { qemuPackage = qemuStub; } else { });
      systemd.tmpfiles.rules = [
        "d /srv/www 0755 root root -"
        "f+ /srv/www/v1.txt 0644 root root - served-v1"
        "f+ /srv/www/v2.txt 0644 root root - served-v2"
      ];
    };

  # A unikernel running the example file server on port 8080, serving
  # /srv/www/<file> from a volume. The stand-in guest has no libc: its
  # program is the static build.
  fileServerVM =
    ip: file:
    boot (if flavour == "nanos" then "${fileServer}/bin/file-server" else "${fileServerStatic}/bin/file-server")
    // {
      args = [
        "--file"
        "/srv/www/${file}"
        "--listen"
        "0.0.0.0:8080"
      ];
      volumes = [
        {
          source = "/srv/www";
          target = "/srv/www";
        }
      ];
      network.ip = ip;
      inherit accel;
      memory = 128;
    };

  # A one-shot unikernel that fetches `url` with busybox wget (static) and
  # prints the body to the serial console (the unit's journal), then powers off.
  probeVM =
    ip: url:
    boot "${pkgs.pkgsStatic.busybox}/bin/busybox"
    // {
      args = [
        "wget"
        "-T"
        "5"
        "-q"
        "-O"
        "-"
        url
      ];
      network.ip = ip;
      inherit accel;
      memory = 64;
      restart = "no";
    };

  # The same helper under another store path (binary and units copied, the
  # units' paths rewritten): what `nixos-rebuild switch` sees when the helper
  # is upgraded.
  upgradedHelper = pkgs.runCommand "mcp-unikernel-upgraded" { } ''
    mkdir -p $out/bin $out/lib/systemd/system
    cp ${helper}/bin/mcp-unikernel $out/bin/mcp-unikernel
    for f in ${helper}/lib/systemd/system/*; do
      sed "s|${helper}/bin/mcp-unikernel|$out/bin/mcp-unikernel|g" "$f" > "$out/lib/systemd/system/$(basename "$f")"
    done
  '';

  # Python helpers for the test scripts.
  pyHelpers = ''
    def main_pid(machine, unit):
        return int(machine.succeed(f"systemctl show -p MainPID --value {unit}").strip())

    def prop(machine, unit, p):
        return machine.succeed(f"systemctl show -p {p} --value {unit}").strip()

    def wait_http(machine, url, needle, timeout=180):
        machine.wait_until_succeeds(f"curl -sf --max-time 5 {url} | grep -q {needle}", timeout=timeout)
  '';
}
