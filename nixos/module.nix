# NixOS module: services.mcp.unikernels.<name> -> Nanos unikernels under QEMU,
# one instance of the template unit mcp-unikernel@.service per unikernel, each
# on its own TAP on an isolated host bridge. The JSON written for each instance
# follows docs/config-schema.md (schema_version 1). Docs: docs/nixos.md.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.mcp;
  derive = import ./lib/derive.nix;
  nftables = import ./lib/nftables.nix;

  bridgeCIDR = derive.parseCIDR cfg.bridge.address;
  gateway = if bridgeCIDR == null then "10.99.0.1" else bridgeCIDR.address;
  prefixLength = if bridgeCIDR == null then 24 else bridgeCIDR.prefixLength;

  enabled = lib.filterAttrs (_: u: u.enable) cfg.unikernels;
  bridged = lib.filterAttrs (_: u: u.network.mode == "bridge") enabled;

  helper = lib.getExe' cfg.package "mcp-unikernel";
  qemuArch = pkgs.stdenv.hostPlatform.qemuArch or "x86_64";
  qemuBinary = "${cfg.qemuPackage}/bin/qemu-system-${qemuArch}";

  # systemd escapes "-" in device unit names.
  escapeDevice = s: builtins.replaceStrings [ "-" ] [ "\\x2d" ] s;
  bridgeDevice = "sys-subsystem-net-devices-${escapeDevice cfg.bridge.name}.device";

  instanceConfig =
    name: u:
    {
      schema_version = 1;
      inherit name;
      program = toString u.program;
      inherit (u) args env vcpus accel klibs;
      memory_mib = u.memory;
      network = {
        inherit (u.network) mode nameservers;
        bridge = cfg.bridge.name;
        ip = if u.network.mode == "bridge" then u.network.ip else null;
        prefix_length = prefixLength;
        inherit gateway;
        tap = if u.network.mode == "bridge" then derive.tapName name else null;
        mac = if u.network.mode == "bridge" then derive.mac name else null;
        ports = map (p: {
          inherit (p) host guest protocol;
          host_address = p.hostAddress;
        }) u.network.ports;
      };
      volumes = map (v: {
        source = toString v.source;
        inherit (v) target;
      }) u.volumes;
      ops_extra = u.extraOpsConfig;
      nanos_dir = if cfg.nanosDir == null then null else toString cfg.nanosDir;
      ops = lib.getExe' cfg.opsPackage "ops";
      qemu = qemuBinary;
      qemu_user = cfg.qemuUser;
      qemu_group = cfg.qemuGroup;
      stop_timeout_secs = u.stopTimeout;
      direct_boot =
        if u.directBoot == null then
          null
        else
          {
            kernel = toString u.directBoot.kernel;
            initrd = toString u.directBoot.initrd;
            inherit (u.directBoot) append;
          };
    };

  instanceJSON = name: u: builtins.toJSON (instanceConfig name u);
  # A store file per instance: its path changes exactly when the config does.
  instanceFile = name: u: pkgs.writeText "mcp-unikernel-${name}.json" (instanceJSON name u);

  nft = nftables {
    bridge = cfg.bridge.name;
    inherit gateway prefixLength;
    inherit (cfg.firewall) allowedTCPPorts allowedUDPPorts;
    vms = lib.mapAttrsToList (name: u: {
      inherit name;
      inherit (u.network) ip;
      tap = derive.tapName name;
      mac = derive.mac name;
    }) (lib.filterAttrs (_: u: u.network.ip != null && derive.isIPv4 u.network.ip) bridged);
  };

  # ---- assertions -------------------------------------------------------
  opt = name: "services.mcp.unikernels.${name}";

  perUnikernel =
    name: u:
    let
      ip = u.network.ip;
      validIP = ip != null && derive.isIPv4 ip;
      c = derive.classify { inherit gateway prefixLength ip; };
      checkable = validIP && bridgeCIDR != null;
      isBridge = u.network.mode == "bridge";
    in
    [
      {
        assertion = builtins.match "[a-z0-9][a-z0-9-]*" name != null && builtins.stringLength name <= 64;
        message = "${opt name}: the name \"${name}\" must match ^[a-z0-9][a-z0-9-]*$ and have at most 64 characters.";
      }
      {
        assertion = !isBridge || ip != null;
        message = "${opt name}.network.ip must be set when network.mode = \"bridge\".";
      }
      {
        assertion = ip == null || validIP;
        message = "${opt name}.network.ip = \"${toString ip}\" is not a dotted IPv4 address.";
      }
      {
        assertion = !checkable || c.inSubnet;
        message = "${opt name}.network.ip = \"${toString ip}\" is outside the bridge subnet ${c.network}/${toString prefixLength} (services.mcp.bridge.address = \"${cfg.bridge.address}\").";
      }
      {
        assertion = !checkable || !c.isGateway;
        message = "${opt name}.network.ip = \"${toString ip}\" is the gateway (the host's bridge address, services.mcp.bridge.address).";
      }
      {
        assertion = !checkable || !c.isNetwork;
        message = "${opt name}.network.ip = \"${toString ip}\" is the network address of ${c.network}/${toString prefixLength}.";
      }
      {
        assertion = !checkable || !c.isBroadcast;
        message = "${opt name}.network.ip = \"${toString ip}\" is the broadcast address of ${c.network}/${toString prefixLength}.";
      }
      {
        assertion = isBridge || ip == null;
        message = "${opt name}.network.ip = \"${toString ip}\" is a bridge-only setting, but network.mode = \"user\".";
      }
      {
        assertion = !isBridge || u.network.ports == [ ];
        message = "${opt name}.network.ports = [ ${
          lib.concatMapStringsSep " " (p: "${toString p.host}:${toString p.guest}/${p.protocol}") u.network.ports
        } ] only applies to network.mode = \"user\" (in bridge mode the host reaches the VM at its IP).";
      }
      {
        assertion = !isBridge || u.network.nameservers == [ ] || builtins.all derive.isIPv4 u.network.nameservers;
        message = "${opt name}.network.nameservers = [ ${toString u.network.nameservers} ] must all be IPv4 addresses.";
      }
    ]
    ++ map (v: {
      assertion = lib.hasPrefix "/" v.target;
      message = "${opt name}.volumes: target \"${v.target}\" (source ${toString v.source}) is not an absolute path.";
    }) u.volumes
    ++ map (v: {
      assertion = lib.hasPrefix "/" (toString v.source);
      message = "${opt name}.volumes: source \"${toString v.source}\" is not an absolute path.";
    }) u.volumes
    ++ (
      let
        keys = map (p: "${p.protocol}/${toString p.host}") u.network.ports;
        dups = lib.unique (lib.filter (k: lib.count (x: x == k) keys > 1) keys);
      in
      map (k: {
        assertion = false;
        message = "${opt name}.network.ports: host port ${k} is forwarded more than once.";
      }) dups
    );

  # Values claimed by more than one unikernel: { value = [ names ]; }.
  collisions =
    f: attrs:
    lib.filterAttrs (_: names: builtins.length names > 1) (
      lib.foldlAttrs (
        acc: name: u:
        let
          v = f name u;
        in
        if v == null then acc else acc // { ${v} = (acc.${v} or [ ]) ++ [ name ]; }
      ) { } attrs
    );

  ipCollisions = collisions (_: u: u.network.ip) bridged;
  tapCollisions = collisions (name: _: derive.tapName name) bridged;

  assertions =
    lib.concatLists (lib.mapAttrsToList perUnikernel enabled)
    ++ lib.mapAttrsToList (ip: names: {
      assertion = false;
      message = "services.mcp.unikernels: ${lib.concatStringsSep " and " names} all use network.ip = \"${ip}\"; IPs must be unique.";
    }) ipCollisions
    ++ lib.mapAttrsToList (tap: names: {
      assertion = false;
      message = "services.mcp.unikernels: ${lib.concatStringsSep " and " names} collide after shortening to the TAP name \"${tap}\" (interface names have at most 15 characters); rename one of them.";
    }) tapCollisions
    ++ [
      {
        assertion = bridgeCIDR != null;
        message = "services.mcp.bridge.address = \"${cfg.bridge.address}\" must be an IPv4 address with a prefix length of 1..30, like \"10.99.0.1/24\".";
      }
      {
        assertion =
          builtins.stringLength cfg.bridge.name <= 15
          && builtins.match "[^/:[:space:]]+" cfg.bridge.name != null;
        message = "services.mcp.bridge.name = \"${cfg.bridge.name}\" is not a valid interface name (1 to 15 characters, no '/', ':' or whitespace).";
      }
      {
        assertion = cfg.bridge.macAddress == null || derive.isUnicastMac cfg.bridge.macAddress;
        message = "services.mcp.bridge.macAddress = \"${toString cfg.bridge.macAddress}\" is not a unicast MAC address like \"02:6d:63:70:00:01\".";
      }
      {
        assertion = !(cfg.firewall.enable && bridged != { }) || config.networking.nftables.enable;
        message = "services.mcp.firewall.enable needs networking.nftables.enable = true (the isolation rules are nftables tables).";
      }
    ];

  # ---- option types -----------------------------------------------------
  volumeType = lib.types.submodule {
    options = {
      source = lib.mkOption {
        type = lib.types.path;
        example = "/srv/mcat";
        description = "Host directory copied (staged) into the image at every start whose inputs changed. Must exist when the unit starts.";
      };
      target = lib.mkOption {
        type = lib.types.str;
        example = "/srv/mcat";
        description = "Absolute path inside the guest.";
      };
    };
  };

  portType = lib.types.submodule {
    options = {
      host = lib.mkOption {
        type = lib.types.port;
        example = 8080;
        description = "Host port (user-mode networking only).";
      };
      guest = lib.mkOption {
        type = lib.types.port;
        example = 8080;
        description = "Guest port.";
      };
      protocol = lib.mkOption {
        type = lib.types.enum [ "tcp" "udp" ];
        default = "tcp";
        description = "Transport protocol of the forward.";
      };
      hostAddress = lib.mkOption {
        type = lib.types.str;
        default = "127.0.0.1";
        description = "Host address the forward listens on.";
      };
    };
  };

  unikernelType = lib.types.submodule (
    { name, ... }:
    {
      options = {
        enable = lib.mkEnableOption "the unikernel ${name}" // {
          default = true;
          example = false;
        };

        autoStart = lib.mkOption {
          type = lib.types.bool;
          default = true;
          description = ''
            Whether `mcp-unikernels.target` (hence boot and `nixos-rebuild switch`)
            starts this unikernel. When false the instance unit exists and is
            started by hand: `systemctl start mcp-unikernel@${name}`.
          '';
        };

        program = lib.mkOption {
          type = lib.types.path;
          example = lib.literalExpression ''"''${pkgs.mcat}/bin/mcat"'';
          description = "The program to run: an ELF file; `ops` bakes it into the image with the libraries it needs.";
        };

        args = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
          example = [ "-config" "/srv/mcat/mcat.toml" ];
          description = "Arguments passed to the program.";
        };

        env = lib.mkOption {
          type = lib.types.attrsOf lib.types.str;
          default = { };
          example = {
            RUST_LOG = "info";
          };
          description = "Environment of the program inside the guest.";
        };

        memory = lib.mkOption {
          type = lib.types.ints.between 16 1048576;
          default = 256;
          example = 512;
          description = "Guest memory in MiB.";
        };

        vcpus = lib.mkOption {
          type = lib.types.ints.between 1 64;
          default = 1;
          description = "Number of virtual CPUs.";
        };

        accel = lib.mkOption {
          type = lib.types.enum [ "kvm" "tcg" ];
          default = "kvm";
          description = "QEMU accelerator: `kvm` (needs /dev/kvm) or `tcg` (software emulation, slow, for hosts without usable KVM).";
        };

        network = {
          mode = lib.mkOption {
            type = lib.types.enum [ "bridge" "user" ];
            default = "bridge";
            description = ''
              `bridge`: a TAP on {option}`services.mcp.bridge.name` with the static
              {option}`network.ip`; the host reaches the VM at that IP, the VM reaches
              only the gateway ports. `user`: QEMU user-mode networking with
              `restrict=on` (the guest reaches nothing); only {option}`ports` reach it.
            '';
          };
          ip = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "10.99.0.2";
            description = "Static IPv4 address on the bridge subnet (bridge mode only, required there).";
          };
          nameservers = lib.mkOption {
            type = lib.types.listOf lib.types.str;
            default = [ ];
            example = [ "10.99.0.1" ];
            description = "DNS servers for the guest (IPv4).";
          };
          ports = lib.mkOption {
            type = lib.types.listOf portType;
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

        volumes = lib.mkOption {
          type = lib.types.listOf volumeType;
          default = [ ];
          example = [
            {
              source = "/srv/mcat";
              target = "/srv/mcat";
            }
          ];
          description = "Host directories baked into the image (copied at start; the guest sees a snapshot, writes are not persisted).";
        };

        klibs = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
          example = [ "tls" "ntp" ];
          description = "Nanos kernel libraries (klibs) to include.";
        };

        extraOpsConfig = lib.mkOption {
          type = lib.types.attrsOf lib.types.anything;
          default = { };
          example = {
            ManifestPassthrough = {
              futex_trace = "t";
            };
          };
          description = ''
            Extra ops configuration merged into the generated one (top-level keys;
            `RunConfig` and `ManifestPassthrough` merged one level deep). It may not
            set `Dirs`, `Program`, `Kernel` or `Boot`.
          '';
        };

        stopTimeout = lib.mkOption {
          type = lib.types.ints.between 1 3600;
          default = 30;
          description = "Seconds to wait for the guest to power off after the ACPI power button before QEMU is told to quit.";
        };

        restart = lib.mkOption {
          type = lib.types.enum [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "on-watchdog" "always" ];
          default = "on-failure";
          description = ''
            systemd `Restart=` policy of the instance. A guest that powers off
            (the program exited) makes QEMU exit 0, which is a clean exit; with the
            default `on-failure` it then stays stopped, while a crash or a killed
            QEMU is restarted.
          '';
        };

        directBoot = lib.mkOption {
          type = lib.types.nullOr (
            lib.types.submodule {
              options = {
                kernel = lib.mkOption {
                  type = lib.types.path;
                  description = "Linux kernel image.";
                };
                initrd = lib.mkOption {
                  type = lib.types.path;
                  description = "Base initramfs (tests/guest).";
                };
                append = lib.mkOption {
                  type = lib.types.str;
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
  options.services.mcp = {
    package = lib.mkPackageOption pkgs "mcp-unikernel" {
      extraDescription = "The flake's `overlays.default` provides it; `nixosModules.default` sets it from `packages.default`.";
    };

    opsPackage = lib.mkPackageOption pkgs "ops" {
      extraDescription = ''
        Note: nixpkgs's `ops` is old (0.1.32); the helper is tested with current
        ops releases (e.g. `go install github.com/nanovms/ops@latest`), so
        consider packaging a newer one.
      '';
    };

    qemuPackage = lib.mkPackageOption pkgs "qemu_kvm" {
      extraDescription = "Its `bin/qemu-system-<host arch>` runs the guests.";
    };

    nanosDir = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/var/lib/nanos/0.1.54";
      description = ''
        Directory holding the Nanos `kernel.img`, `boot.img` and optionally
        `klibs/`. When null, ops downloads the Nanos kernel from the network into
        each unikernel's ops home at its first build (so the first start needs
        Internet access).
      '';
    };

    bridge = {
      name = lib.mkOption {
        type = lib.types.str;
        default = "mcp-br0";
        description = "Host bridge the TAPs are attached to. It has no uplink and no NAT.";
      };
      address = lib.mkOption {
        type = lib.types.str;
        default = "10.99.0.1/24";
        example = "192.168.77.1/24";
        description = "The host's address on the bridge (the VMs' gateway) with the subnet's prefix length.";
      };
      macAddress = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
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
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Whether to install the nftables isolation rules: nothing forwarded to or
          from the bridge, VMs reach the gateway only on the allowed ports (plus
          ARP and ICMP), each TAP may only send from its own IP and MAC. Bridge
          ports are always isolated (VMs cannot reach each other).
        '';
      };
      allowedTCPPorts = lib.mkOption {
        type = lib.types.listOf lib.types.port;
        default = [ ];
        example = [ 53 3128 ];
        description = "TCP ports on the gateway address the VMs may reach.";
      };
      allowedUDPPorts = lib.mkOption {
        type = lib.types.listOf lib.types.port;
        default = [ ];
        example = [ 53 ];
        description = "UDP ports on the gateway address the VMs may reach.";
      };
    };

    qemuUser = lib.mkOption {
      type = lib.types.str;
      default = "mcp-qemu";
      description = "User QEMU runs as (the helper drops to it before exec). The default user is created by this module.";
    };

    qemuGroup = lib.mkOption {
      type = lib.types.str;
      default = "mcp-qemu";
      description = "Group QEMU runs as. The default group is created by this module.";
    };

    unikernels = lib.mkOption {
      type = lib.types.attrsOf unikernelType;
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
      description = "Nanos unikernels, each run by the instance `mcp-unikernel@<name>.service`.";
    };
  };

  config = lib.mkIf (cfg.unikernels != { }) (
    lib.mkMerge [
      {
        inherit assertions;

        environment.etc = lib.mapAttrs' (
          name: u: lib.nameValuePair "mcp-unikernel/${name}.json" { source = instanceFile name u; }
        ) enabled;

        environment.systemPackages = [ cfg.package ];

        users.users = lib.mkIf (cfg.qemuUser == "mcp-qemu") {
          mcp-qemu = {
            isSystemUser = true;
            group = cfg.qemuGroup;
            extraGroups = [ "kvm" ];
            description = "QEMU for mcp unikernels";
          };
        };
        users.groups = lib.mkIf (cfg.qemuGroup == "mcp-qemu") { mcp-qemu = { }; };

        # The target pulls in the instances with Wants= (rather than wantedBy
        # symlinks to instance names that have no unit file of their own).
        systemd.targets.mcp-unikernels = {
          description = "mcp unikernels";
          wantedBy = [ "multi-user.target" ];
          wants = map (n: "mcp-unikernel@${n}.service") (
            builtins.attrNames (lib.filterAttrs (_: u: u.autoStart) enabled)
          );
        };

        # The template: everything common to all instances.
        systemd.services."mcp-unikernel@" = {
          description = "mcp unikernel %i";
          documentation = [ "https://github.com/nanovms/nanos" ];
          after = [ "network.target" "nftables.service" ];
          partOf = [ "mcp-unikernels.target" ];
          serviceConfig = {
            # The helper execs QEMU, so the main PID is QEMU.
            Type = "exec";
            ExecStart = "${helper} start %i";
            ExecStop = "${helper} stop %i";
            ExecStopPost = "${helper} cleanup %i";
            # QEMU exits 0 when the guest powers off (program exited) and on SIGTERM.
            SuccessExitStatus = [ "0" "SIGTERM" ];
            RestartSec = "2s";
            StateDirectory = "mcp-unikernel/%i";
            StateDirectoryMode = "0711";
            RuntimeDirectory = "mcp-unikernel/%i";
            RuntimeDirectoryMode = "0700";
            UMask = "0077";

            # Hardening. The helper starts as root (stages root-owned volumes,
            # creates the TAP) and setuid()s to the QEMU user before exec, which
            # empties its capability sets; these are the bounding set it needs.
            CapabilityBoundingSet = [
              "CAP_NET_ADMIN"
              "CAP_SETUID"
              "CAP_SETGID"
              "CAP_CHOWN"
              "CAP_DAC_OVERRIDE"
              "CAP_FOWNER"
              "CAP_DAC_READ_SEARCH"
            ];
            AmbientCapabilities = "";
            NoNewPrivileges = true;
            ProtectSystem = "strict";
            ProtectHome = true;
            PrivateTmp = true;
            DevicePolicy = "closed";
            DeviceAllow = [
              "/dev/kvm rw"
              "/dev/net/tun rw"
            ];
            ProtectKernelTunables = true;
            ProtectKernelModules = true;
            ProtectKernelLogs = true;
            ProtectControlGroups = true;
            ProtectClock = true;
            ProtectHostname = true;
            RestrictNamespaces = true;
            RestrictRealtime = true;
            RestrictSUIDSGID = true;
            LockPersonality = true;
            # Not MemoryDenyWriteExecute: QEMU's TCG needs W+X memory.
            RestrictAddressFamilies = [
              "AF_UNIX"
              "AF_NETLINK"
              "AF_INET"
              "AF_INET6"
            ];
            SystemCallArchitectures = "native";
            SystemCallFilter = [
              "@system-service"
              "seccomp" # QEMU -sandbox installs its own filter
              "~@clock @cpu-emulation @debug @module @mount @obsolete @raw-io @reboot @swap"
            ];
            SystemCallErrorNumber = "EPERM";
          };
        };

        # Stop instances that are no longer configured (removed or disabled):
        # switch-to-configuration would keep a template instance whose drop-in
        # disappeared running. Restarted whenever the set of names changes.
        systemd.services.mcp-unikernels-prune = {
          description = "Stop mcp unikernels removed from the configuration";
          wantedBy = [ "mcp-unikernels.target" ];
          before = [ "mcp-unikernels.target" ];
          restartTriggers = [ (builtins.toJSON (builtins.attrNames enabled)) ];
          script = ''
            keep=" ${lib.concatMapStringsSep " " (n: "mcp-unikernel@${n}.service") (builtins.attrNames enabled)} "
            for unit in $(${config.systemd.package}/bin/systemctl list-units --all --plain --no-legend \
                            --type=service 'mcp-unikernel@*' | cut -d' ' -f1); do
              case "$keep" in
                *" $unit "*) ;;
                *) echo "stopping $unit (no longer configured)"
                   ${config.systemd.package}/bin/systemctl stop "$unit" || true ;;
              esac
            done
          '';
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
          };
        };

      }

      {
        # One drop-in per enabled unikernel.
        systemd.services = lib.mapAttrs' (
          name: u:
          lib.nameValuePair "mcp-unikernel@${name}" (
            {
              overrideStrategy = "asDropin";
              restartTriggers = [ (instanceFile name u) ];
              serviceConfig = {
                Restart = u.restart;
                TimeoutStopSec = u.stopTimeout + 15;
              };
            }
            // lib.optionalAttrs (u.network.mode == "bridge") {
              bindsTo = [ bridgeDevice ];
              after = [ bridgeDevice "network-addresses-${cfg.bridge.name}.service" ];
            }
          )
        ) enabled;
      }

      (lib.mkIf (bridged != { }) {
        # The bridge: no ports of its own (no uplink), the gateway address, no NAT.
        # Works with scripted networking and with systemd-networkd
        # (networking.useNetworkd translates these options into .netdev/.network).
        networking.bridges.${cfg.bridge.name}.interfaces = [ ];
        networking.interfaces.${cfg.bridge.name} = {
          ipv4.addresses = lib.optional (bridgeCIDR != null) {
            address = gateway;
            inherit prefixLength;
          };
        }
        // lib.optionalAttrs (cfg.bridge.macAddress != null) { inherit (cfg.bridge) macAddress; };
        # A bridge without ports has no carrier: let networkd configure it anyway.
        systemd.network.networks."40-${cfg.bridge.name}" = lib.mkIf config.networking.useNetworkd {
          networkConfig.ConfigureWithoutCarrier = true;
          linkConfig.RequiredForOnline = "no";
        };
        # The host firewall must also let the VMs reach the allowed gateway ports.
        networking.firewall.interfaces.${cfg.bridge.name} = {
          inherit (cfg.firewall) allowedTCPPorts allowedUDPPorts;
        };
      })

      (lib.mkIf (cfg.firewall.enable && bridged != { }) {
        networking.nftables.enable = lib.mkDefault true;
        networking.nftables.tables = nft.tables;
      })
    ]
  );
}
