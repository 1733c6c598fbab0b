# Assertions (each names the option and the value) and warnings.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  c = import ./common.nix {
    inherit
      config
      lib
      pkgs
      utils
      ;
  };
  inherit (c)
    cfg
    derive
    gateway
    prefixLength
    bridgeCIDR
    enabledAll
    bridgedAll
    ;

  opt = name: "services.mcp.unikernels.${name}";

  perUnikernel =
    name: u:
    let
      ip = u.network.ip;
      validIP = ip != null && derive.isIPv4 ip;
      cl = derive.classify { inherit gateway prefixLength ip; };
      checkable = validIP && bridgeCIDR != null;
      isBridge = u.network.mode == "bridge";
    in
    [
      {
        assertion = c.validName name;
        message = "${opt name}: the name \"${name}\" must match ^${c.namePattern}$ and have at most 64 characters.";
      }
      {
        assertion = c.validUserName u.user;
        message = "${opt name}.user = \"${u.user}\" is not a valid user name for NixOS (^${c.userNamePattern}$, at most 31 characters).";
      }
      {
        assertion = c.validUserName u.group;
        message = "${opt name}.group = \"${u.group}\" is not a valid group name for NixOS (^${c.userNamePattern}$, at most 31 characters).";
      }
      {
        assertion = u.user != "root" && u.group != "root";
        message = "${opt name}: QEMU must not run as root (user = \"${u.user}\", group = \"${u.group}\").";
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
        assertion = !checkable || cl.inSubnet;
        message = "${opt name}.network.ip = \"${toString ip}\" is outside the bridge subnet ${cl.network}/${toString prefixLength} (services.mcp.bridge.address = \"${cfg.bridge.address}\").";
      }
      {
        assertion = !checkable || !cl.isGateway;
        message = "${opt name}.network.ip = \"${toString ip}\" is the gateway (the host's bridge address, services.mcp.bridge.address).";
      }
      {
        assertion = !checkable || !cl.isNetwork;
        message = "${opt name}.network.ip = \"${toString ip}\" is the network address of ${cl.network}/${toString prefixLength}.";
      }
      {
        assertion = !checkable || !cl.isBroadcast;
        message = "${opt name}.network.ip = \"${toString ip}\" is the broadcast address of ${cl.network}/${toString prefixLength}.";
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

  collide =
    what: f: attrs: explain:
    lib.mapAttrsToList (v: names: {
      assertion = false;
      message = "services.mcp.unikernels: ${lib.concatStringsSep " and " names} all use ${what} = \"${v}\"; ${explain}";
    }) (collisions f attrs);
in
{
  config = lib.mkIf (cfg.unikernels != { }) {
    assertions =
      lib.concatLists (lib.mapAttrsToList perUnikernel enabledAll)
      ++ collide "network.ip" (_: u: u.network.ip) bridgedAll "IPs must be unique."
      ++ lib.mapAttrsToList (tap: names: {
        assertion = false;
        message = "services.mcp.unikernels: ${lib.concatStringsSep " and " names} collide after shortening to the TAP name \"${tap}\" (interface names have at most 15 characters); rename one of them.";
      }) (collisions (name: _: derive.tapName name) bridgedAll)
      ++ collide "user" (_: u: u.user) enabledAll "each unikernel needs its own user (one uid per VM)."
      ++ collide "group" (_: u: u.group) enabledAll "each unikernel needs its own group (its image is readable by that group)."
      ++ [
        {
          assertion = bridgeCIDR != null;
          message = "services.mcp.bridge.address = \"${cfg.bridge.address}\" must be an IPv4 address with a prefix length of 1..30, like \"10.99.0.1/24\".";
        }
        {
          assertion = c.validBridgeName;
          message = "services.mcp.bridge.name = \"${cfg.bridge.name}\" is not a valid bridge name: 1 to 15 characters of A-Z a-z 0-9 _ -, starting with a letter or digit (^${c.bridgeNamePattern}$).";
        }
        {
          assertion = cfg.bridge.macAddress == null || derive.isUnicastMac cfg.bridge.macAddress;
          message = "services.mcp.bridge.macAddress = \"${toString cfg.bridge.macAddress}\" is not a unicast MAC address like \"02:6d:63:70:00:01\".";
        }
      ];

    warnings = lib.optional (cfg.nanosDir == null && lib.any (u: u.directBoot == null) (lib.attrValues enabledAll)) (
      "services.mcp.nanosDir is null: ops downloads an unpinned Nanos kernel from the network at each "
      + "unikernel's first build (the build unit gets network access for it). Set services.mcp.nanosDir "
      + "to a Nanos release, e.g. a fixed-output derivation (docs/nixos.md)."
    );
  };
}
