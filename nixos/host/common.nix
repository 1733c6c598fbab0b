# Values every part of the module derives from the configuration (not a
# module: imported by the files in this directory with their module args).
#   import ./common.nix { inherit config lib pkgs utils; }
{
  config,
  lib,
  pkgs,
  utils,
}:
let
  cfg = config.services.mcp;
  derive = import ../lib/derive.nix;
in
rec {
  inherit cfg derive;

  bridgeCIDR = derive.parseCIDR cfg.bridge.address;
  gateway = if bridgeCIDR == null then "10.99.0.1" else bridgeCIDR.address;
  prefixLength = if bridgeCIDR == null then 24 else bridgeCIDR.prefixLength;

  # What the kernel, systemd's unit names and the helper all accept (the
  # helper uses the same pattern): an interface name of 1..15 characters.
  bridgeNamePattern = "[A-Za-z0-9][A-Za-z0-9_-]{0,14}";
  validBridgeName = builtins.match bridgeNamePattern cfg.bridge.name != null;

  namePattern = "[a-z0-9][a-z0-9-]*";
  validName = name: builtins.match namePattern name != null && builtins.stringLength name <= 64;

  # NixOS's own user name check (users-groups.nix: nameRegex, and it aborts
  # on 32 characters or more).
  userNamePattern = "[a-zA-Z0-9_.][a-zA-Z0-9_.-]*";
  validUserName = n: builtins.match userNamePattern n != null && builtins.stringLength n <= 31;

  enabledAll = lib.filterAttrs (_: u: u.enable) cfg.unikernels;
  # Only unikernels whose name can appear in a unit name, a file name and a
  # TAP name get units, files and users; the others only get assertions
  # (so evaluation reaches the module's message instead of a type error in
  # some other module).
  enabled = lib.filterAttrs (
    name: u: validName name && validUserName u.user && validUserName u.group
  ) enabledAll;
  bridgedAll = lib.filterAttrs (_: u: u.network.mode == "bridge") enabledAll;
  bridged = lib.filterAttrs (_: u: u.network.mode == "bridge") enabled;

  # Gateway ports a unikernel may reach: the global lists plus its own.
  gatewayTCPPorts = u: lib.unique (cfg.firewall.allowedTCPPorts ++ u.network.allowedGatewayTCPPorts);
  gatewayUDPPorts = u: lib.unique (cfg.firewall.allowedUDPPorts ++ u.network.allowedGatewayUDPPorts);

  helper = lib.getExe' cfg.package "mcp-unikernel";
  # readiness, health, dependsOn, credentials (host/ready.nix)
  readyArgs = import ./ready-args.nix {
    inherit
      lib
      derive
      enabled
      helper
      ;
  };
  qemuArch = pkgs.stdenv.hostPlatform.qemuArch or "x86_64";
  qemuBinary = "${cfg.qemuPackage}/bin/qemu-system-${qemuArch}";

  # ---- the instance JSON (docs/config-schema.md, schema_version 1) ----------
  # Paths are kept as they are (no toString): builtins.toJSON copies a path
  # literal into the store and keeps the string context of "${pkg}/bin/x", so
  # every store path the JSON names is in the system closure (remote deploys
  # with `nixos-rebuild --target-host` copy it).
  instanceConfig =
    name: u:
    let
      isBridge = u.network.mode == "bridge";
    in
    {
      schema_version = 1;
      inherit name;
      inherit (u) program;
      inherit (u)
        args
        env
        vcpus
        accel
        klibs
        ;
      memory_mib = u.memory;
      network = {
        inherit (u.network) mode nameservers;
        ntp_servers = u.network.ntpServers;
        bridge = cfg.bridge.name;
        ip = if isBridge then u.network.ip else null;
        prefix_length = prefixLength;
        inherit gateway;
        tap = if isBridge then derive.tapName name else null;
        mac = if isBridge then derive.mac name else null;
        ports = map (p: {
          inherit (p) host guest protocol;
          host_address = p.hostAddress;
        }) u.network.ports;
      };
      volumes = map (v: { inherit (v) source target; }) u.volumes;
      volume_limit_mib = u.volumeLimit;
      ops_extra = u.extraOpsConfig;
      nanos_dir = cfg.nanosDir;
      ops = lib.getExe' cfg.opsPackage "ops";
      qemu = qemuBinary;
      qemu_user = u.user;
      qemu_group = u.group;
      stop_timeout_secs = u.stopTimeout;
      on_remove = u.onRemove;
      direct_boot =
        if u.directBoot == null then
          null
        else
          {
            inherit (u.directBoot) kernel initrd append;
          };
    }
    // readyArgs.json u;

  instanceJSON = name: u: builtins.toJSON (instanceConfig name u);
  # A store file per instance: its path changes exactly when the config does.
  instanceFile = name: u: pkgs.writeText "mcp-unikernel-${name}.json" (instanceJSON name u);

  # ---- firewall ---------------------------------------------------------------
  # Which unit loads the isolation tables:
  #   "nftables"  networking.nftables.enable = true: the tables are part of
  #               NixOS's ruleset (networking.nftables.tables), loaded in the
  #               same `nft -f` transaction as the rest of it on every start
  #               and reload of nftables.service;
  #   "unit"      otherwise: the package's mcp-unikernel-firewall.service loads
  #               /etc/mcp-unikernel/firewall.nft (and firewall-remove.nft on
  #               stop), and the host firewall stays whatever it is (iptables).
  #   null        no rules (firewall.enable = false, or no bridged unikernel).
  firewallMode =
    if !(cfg.firewall.enable && bridged != { } && validBridgeName) then
      null
    else if config.networking.nftables.enable then
      "nftables"
    else
      "unit";
  rulesUnit =
    if firewallMode == "nftables" then
      "nftables.service"
    else if firewallMode == "unit" then
      "mcp-unikernel-firewall.service"
    else
      null;

  # nftables.nix takes tapIngressHooks only in its newer form: passed when
  # the function accepts it.
  nftLib = import ../lib/nftables.nix;
  nft = nftLib (
    {
      bridge = cfg.bridge.name;
      inherit gateway prefixLength;
      inherit (cfg.firewall) allowedTCPPorts allowedUDPPorts;
      vms = lib.mapAttrsToList (name: u: {
        inherit name;
        inherit (u.network) ip;
        tap = derive.tapName name;
        mac = derive.mac name;
        allowedTCPPorts = u.network.allowedGatewayTCPPorts;
        allowedUDPPorts = u.network.allowedGatewayUDPPorts;
      }) (lib.filterAttrs (_: u: u.network.ip != null && derive.isIPv4 u.network.ip) bridged);
    }
    // lib.optionalAttrs (builtins.functionArgs nftLib ? tapIngressHooks) {
      inherit (cfg.firewall) tapIngressHooks;
    }
  );

  # ---- units a bridged VM depends on ------------------------------------------
  # Scripted networking creates the bridge in `<br>-netdev.service` (which
  # deletes and re-creates it on restart, dropping every TAP: Requires= then
  # restarts the VMs too) and its address in `network-addresses-<br>.service`.
  # systemd-networkd creates both itself. Outside containers the VM is also
  # bound to the bridge's device unit; in containers (boot.isContainer) device
  # units do not exist, so it is only ordered after the units above.
  bridgeDevice = "sys-subsystem-net-devices-${utils.escapeSystemdPath cfg.bridge.name}.device";
  bridgeServices =
    if config.networking.useNetworkd then
      [ ]
    else
      [
        "${cfg.bridge.name}-netdev.service"
        "network-addresses-${cfg.bridge.name}.service"
      ];
  bridgeBindsTo = lib.optional (!config.boot.isContainer) bridgeDevice;
  bridgeAfter =
    bridgeServices
    ++ lib.optional config.networking.useNetworkd "systemd-networkd.service"
    ++ bridgeBindsTo;

  # Everything mcp-unikernel@<name>.service requires / is ordered after.
  vmDeps =
    name: u:
    let
      isBridge = u.network.mode == "bridge" && validBridgeName;
      rules = lib.optional (isBridge && rulesUnit != null) rulesUnit;
    in
    {
      requires = rules ++ lib.optionals isBridge bridgeServices;
      after = rules ++ lib.optionals isBridge bridgeAfter;
      bindsTo = lib.optionals isBridge bridgeBindsTo;
    };
}
