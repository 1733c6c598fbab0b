# Options of services.mcp (docs/nixos.md lists each with its default).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.mcp;
  derive = import ../lib/derive.nix;
  inherit (lib) mkOption types;

  volumeType = types.submodule {
    options = {
      source = mkOption {
        type = types.path;
        example = "/srv/mcat";
        description = ''
          Host directory copied (staged) into the image at every start whose
          inputs changed. Must exist when the unit starts. A path literal
          (`./data`) is copied into the Nix store at evaluation time and that
          store copy is staged; a string (`"/srv/mcat"`) names a directory on
          the host that runs the VM.
        '';
      };
      target = mkOption {
        type = types.str;
        example = "/srv/mcat";
        description = "Absolute path inside the guest.";
      };
    };
  };

  portType = types.submodule {
    options = {
      host = mkOption {
        type = types.port;
        example = 8080;
        description = "Host port (user-mode networking only).";
      };
      guest = mkOption {
        type = types.port;
        example = 8080;
        description = "Guest port.";
      };
      protocol = mkOption {
        type = types.enum [
          "tcp"
          "udp"
        ];
        default = "tcp";
        description = "Transport protocol of the forward.";
      };
      hostAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "Host address the forward listens on.";
      };
    };
  };

  unikernelType = types.submodule (
    { name, config, ... }:
    {
      options = {
        enable = lib.mkEnableOption "the unikernel ${name}" // {
          default = true;
          example = false;
        };

        autoStart = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether `mcp-unikernels.target` (hence boot and `nixos-rebuild switch`)
            starts this unikernel. When false the instance unit exists and is
            started by hand: `systemctl start mcp-unikernel@${name}`.
          '';
        };

        program = mkOption {
          type = types.path;
          example = lib.literalExpression ''"''${pkgs.mcat}/bin/mcat"'';
          description = ''
            The program to run: an ELF file; `ops` bakes it into the image with
            the libraries it needs. Store paths it names (and a path literal,
            which is copied into the store) are part of the system closure.
          '';
        };

        args = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "-config"
            "/srv/mcat/mcat.toml"
          ];
          description = "Arguments passed to the program.";
        };

        env = mkOption {
          type = types.attrsOf types.str;
          default = { };
          example = {
            RUST_LOG = "info";
          };
          description = "Environment of the program inside the guest.";
        };

        memory = mkOption {
          type = types.ints.between 16 1048576;
          default = 256;
          example = 512;
          description = "Guest memory in MiB.";
        };

        vcpus = mkOption {
          type = types.ints.between 1 64;
          default = 1;
          description = "Number of virtual CPUs.";
        };

        accel = mkOption {
          type = types.enum [
            "kvm"
            "tcg"
          ];
          default = "kvm";
          description = "QEMU accelerator: `kvm` (needs /dev/kvm) or `tcg` (software emulation, slow, for hosts without usable KVM).";
        };

        user = mkOption {
          type = types.str;
          default = derive.userName name;
          defaultText = lib.literalMD ''`mcp-vm-<name>`, or `mcp-vm-<first 15 characters of name>-<first 8 hex digits of sha256(name)>` when that would be longer than 31 characters'';
          example = "mcp-vm-mcat";
          description = ''
            System user QEMU (and `ops build`) runs as for this unikernel. The
            module declares it (a system user in group {option}`group` and in
            `kvm`); each unikernel must have its own, so that one VM's QEMU
            cannot reach another VM's disk, QMP socket or TAP.
          '';
        };

        group = mkOption {
          type = types.str;
          default = config.user;
          defaultText = lib.literalExpression "config.services.mcp.unikernels.<name>.user";
          description = ''
            Primary group of {option}`user`, declared by the module. The VM's
            image is readable by this group only; it must not be shared with
            another unikernel.
          '';
        };

        network = {
          mode = mkOption {
            type = types.enum [
              "bridge"
              "user"
            ];
            default = "bridge";
            description = ''
              `bridge`: a TAP on {option}`services.mcp.bridge.name` with the static
              {option}`network.ip`; the host reaches the VM at that IP, the VM reaches
              only the gateway ports. `user`: QEMU user-mode networking with
              `restrict=on` (the guest reaches nothing); only {option}`ports` reach it.
            '';
          };
          ip = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "10.99.0.2";
            description = "Static IPv4 address on the bridge subnet (bridge mode only, required there).";
          };
          nameservers = mkOption {
            type = types.listOf types.str;
            default = [ ];
            defaultText = lib.literalMD "`[ <gateway> ]` when UDP 53 to the gateway is allowed for this unikernel (global or {option}`network.allowedGatewayUDPPorts`), else `[ ]` (host/guest-network.nix)";
            example = [ "10.99.0.1" ];
            description = ''
              DNS servers for the guest (its /etc/resolv.conf). Only the gateway
              can be reached from the bridge; empty means no resolver at all
              (not ops's default 8.8.8.8).
            '';
          };
          ports = mkOption {
            type = types.listOf portType;
            default = [ ];
            example = [
              {
                host = 8080;
                guest = 8080;
              }
            ];
            description = "Port forwards from the host into the guest (user mode only).";
          };
        };

        volumes = mkOption {
          type = types.listOf volumeType;
          default = [ ];
          example = [
            {
              source = "/srv/mcat";
              target = "/srv/mcat";
            }
          ];
          description = ''
            Host directories baked into the image (copied at a start whose
            inputs changed). The guest sees a snapshot: its writes go to a
            throwaway overlay and are gone at the next start; nothing it writes
            reaches the host directory.
          '';
        };

        volumeLimit = mkOption {
          type = types.ints.positive;
          default = 4096;
          example = 16384;
          description = ''
            Most volume data, in MiB (the sum of the apparent sizes of all
            files of all volumes), this unikernel may stage. Over it the build
            fails with a line naming the volume and its size.
          '';
        };

        klibs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [
            "tls"
            "ntp"
          ];
          description = "Nanos kernel libraries (klibs) to include.";
        };

        extraOpsConfig = mkOption {
          type = types.attrsOf types.anything;
          default = { };
          example = {
            ManifestPassthrough = {
              futex_trace = "t";
            };
          };
          description = ''
            Extra ops configuration merged into the generated one
            (`ops_extra` in docs/config-schema.md: only the keys listed there
            are accepted; the helper refuses the others).
          '';
        };

        stopTimeout = mkOption {
          type = types.ints.between 1 3600;
          default = 30;
          description = ''
            Seconds to wait for the guest to power off after the ACPI power
            button before QEMU is told to quit. The unit's `TimeoutStopSec` is
            this plus 45 s (Nanos itself waits up to 30 s for the program).
          '';
        };

        buildTimeout = mkOption {
          type = types.ints.between 1 86400;
          default = 900;
          description = ''
            `TimeoutStartSec` of `mcp-unikernel-build@<name>.service`, which
            stages the volumes and builds the image before the VM starts: a cold
            build of large volumes takes a while.
          '';
        };

        restart = mkOption {
          # Exactly the values NixOS's check of `Restart=` accepts
          # (nixos/lib/systemd-unit-options.nix); systemd's on-watchdog is not
          # among them.
          type = types.enum [
            "no"
            "on-success"
            "on-failure"
            "on-abnormal"
            "on-abort"
            "always"
          ];
          default = "on-failure";
          description = ''
            systemd `Restart=` policy of the instance. The program's exit code
            reaches systemd (QEMU exits with `(code << 1) | 1`; 1 and 31 — exit
            0 and ended by SIGTERM — are success): with the default
            `on-failure` a program that exited 0 stays stopped, while one that
            exited non-zero, crashed, or a killed QEMU is restarted.
          '';
        };

        directBoot = mkOption {
          type = types.nullOr (
            types.submodule {
              options = {
                kernel = mkOption {
                  type = types.path;
                  description = "Linux kernel image.";
                };
                initrd = mkOption {
                  type = types.path;
                  description = "Base initramfs (tests/guest).";
                };
                append = mkOption {
                  type = types.str;
                  default = "";
                  description = "Extra kernel command line.";
                };
              };
            }
          );
          default = null;
          internal = true;
          description = "Test stand-in for Nanos: boot a Linux kernel directly instead of an ops-built image (docs/config-schema.md, `direct_boot`).";
        };
      };
    }
  );
in
{
  imports = [
    (lib.mkRemovedOptionModule [
      "services"
      "mcp"
      "qemuUser"
    ] "Each unikernel has its own user now: services.mcp.unikernels.<name>.user (default mcp-vm-<name>).")
    (lib.mkRemovedOptionModule [
      "services"
      "mcp"
      "qemuGroup"
    ] "Each unikernel has its own group now: services.mcp.unikernels.<name>.group (default: its user's name).")
  ];

  options.services.mcp = {
    package = lib.mkPackageOption pkgs "mcp-unikernel" {
      extraDescription = ''
        The flake's `overlays.default` provides it; `nixosModules.default` sets
        it from the flake's `packages.default`. Its `lib/systemd/system/` holds
        the units (`mcp-unikernel@.service`, `mcp-unikernel-build@.service`,
        `mcp-unikernel-firewall.service`, `mcp-unikernels.target`), installed
        with `systemd.packages`.
      '';
    };

    opsPackage = lib.mkPackageOption pkgs "ops" {
      extraDescription = ''
        ops builds the images. The helper drives ops 0.1.43 and newer (below
        0.2) and refuses any other before building; `ops version` must report a
        version (ops linked with `-X github.com/nanovms/ops/lepton.Version=`).
        It is tested with ops at commit cd2208de79dc (`ops version`
        0.1.43-24-gcd2208d), which the flake's `packages.ops` builds and
        `nixosModules.default` sets here. nixpkgs's `ops` (0.1.32 at the time
        of writing) does not work: it puts the image elsewhere and reads klibs
        from another key.
      '';
    };

    qemuPackage = lib.mkPackageOption pkgs "qemu_kvm" {
      extraDescription = "Its `bin/qemu-system-<host arch>` runs the guests.";
    };

    nanosDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression ''
        pkgs.fetchzip {
          url = "https://storage.googleapis.com/nanos/release/0.1.55/nanos-release-linux-0.1.55.tar.gz";
          stripRoot = false;
          hash = lib.fakeHash;
        }
      '';
      description = ''
        Directory holding the Nanos `kernel.img`, `boot.img` and optionally
        `klibs/` (a store path, e.g. a fixed-output derivation as in
        docs/nixos.md). Its files' digests are part of every image's input
        hash. When null, ops downloads an unpinned Nanos kernel from the
        network at each unikernel's first build (the build unit then gets
        network access), and evaluation prints a warning.
      '';
    };

    bridge = {
      name = mkOption {
        type = types.str;
        default = "mcp-br0";
        description = ''
          Host bridge the TAPs are attached to (no uplink, no NAT). 1 to 15
          characters of `A-Z a-z 0-9 _ -`, starting with a letter or digit.
        '';
      };
      address = mkOption {
        type = types.str;
        default = "10.99.0.1/24";
        example = "192.168.77.1/24";
        description = "The host's address on the bridge (the VMs' gateway) with the subnet's prefix length.";
      };
      macAddress = mkOption {
        type = types.nullOr types.str;
        default = derive.bridgeMac cfg.bridge.name;
        defaultText = lib.literalMD ''a locally administered MAC derived from {option}`services.mcp.bridge.name`'';
        example = "02:6d:63:70:00:01";
        description = ''
          MAC address of the bridge. A bridge without one takes the lowest MAC
          of its ports, so it changes whenever a VM's TAP joins or leaves, and
          the VMs' neighbour entries for the gateway go stale. `null` leaves
          that kernel behaviour in place.
        '';
      };
    };

    firewall = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether to load the nftables isolation tables (docs/firewall.md):
          nothing forwarded to or from the bridge, VMs reach the gateway only
          on the allowed ports, each TAP may only send from its own IP and MAC.
          This does not switch the host firewall to nftables: with
          `networking.nftables.enable = false` (iptables hosts, Docker,
          libvirt) the package's `mcp-unikernel-firewall.service` loads the two
          tables, which coexist with iptables-nft; with
          `networking.nftables.enable = true` they become part of NixOS's
          ruleset (`networking.nftables.tables`). Either way every bridged VM
          requires the unit that loads them. Bridge ports are always isolated
          (VMs cannot reach each other).
        '';
      };
      tapIngressHooks = mkOption {
        type = types.bool;
        default = lib.versionAtLeast (config.boot.kernelPackages.kernel.version or "0") "6.16";
        defaultText = lib.literalExpression ''lib.versionAtLeast config.boot.kernelPackages.kernel.version "6.16"'';
        description = ''
          Drop link-local multicast frames (STP, LLDP, 802.1X, pause) from the
          VMs' TAPs at the TAP's own ingress hook (a netdev table bound to the
          TAP names, docs/firewall.md), before the bridge or any L2 protocol
          handler sees them. Linux >= 6.16 accepts such a table before the
          TAPs exist; older kernels refuse to load it, so the default follows
          the configured kernel. In a container (`boot.isContainer`) the
          host's kernel decides: set it explicitly there.
        '';
      };
      allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
        example = [
          53
          3128
        ];
        description = "TCP ports on the gateway address the VMs may reach (also opened in `networking.firewall.interfaces.<bridge>`).";
      };
      allowedUDPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
        example = [ 53 ];
        description = "UDP ports on the gateway address the VMs may reach (also opened in `networking.firewall.interfaces.<bridge>`).";
      };
    };

    unikernels = mkOption {
      type = types.attrsOf unikernelType;
      default = { };
      example = lib.literalExpression ''
        {
          mcat = {
            program = "''${pkgs.mcat}/bin/mcat";
            args = [ "-config" "/srv/mcat/mcat.toml" ];
            volumes = [ { source = "/srv/mcat"; target = "/srv/mcat"; } ];
            network.ip = "10.99.0.2";
            memory = 256;
          };
        }
      '';
      description = ''
        Nanos unikernels, each run by the instance `mcp-unikernel@<name>.service`
        (after its image build, `mcp-unikernel-build@<name>.service`). `<name>`
        matches `^[a-z0-9][a-z0-9-]*$` and has at most 64 characters.
      '';
    };
  };
}
