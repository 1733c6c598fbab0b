# What a bridged guest may reach on the gateway, and the resolver and time
# source it is given (issue 15, parts 2 and 3):
#   network.allowedGatewayTCPPorts / allowedGatewayUDPPorts  per-VM egress,
#     added to services.mcp.firewall.allowed*Ports, compiled into that VM's
#     own chain of the isolation tables (nixos/lib/nftables.nix, `gw-<name>`);
#   network.nameservers  defaults to the gateway when UDP 53 to it is allowed
#     for that VM, else none (never ops's default 8.8.8.8);
#   network.ntpServers   the same for UDP 123 (the `ntp` klib's servers;
#     never its default pool.ntp.org).
# A guest on the isolated bridge can reach nothing but the gateway's allowed
# ports, so any other resolver or time source is refused by an assertion.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib) mkOption types;
  c = import ./common.nix {
    inherit
      config
      lib
      pkgs
      utils
      ;
  };
  inherit (c) cfg gateway enabledAll;
  opt = name: "services.mcp.unikernels.${name}";

  gatewayOptions =
    { config, ... }:
    let
      u = config;
      udp = c.gatewayUDPPorts u;
      isBridge = u.network.mode == "bridge";
    in
    {
      options.network = {
        allowedGatewayTCPPorts = mkOption {
          type = types.listOf types.port;
          default = [ ];
          example = [ 3128 ];
          description = ''
            TCP ports on the gateway (the host's bridge address) only this
            unikernel may reach, in addition to
            {option}`services.mcp.firewall.allowedTCPPorts`. Compiled into this
            VM's own chain of the isolation tables; other VMs stay blocked.
          '';
        };
        allowedGatewayUDPPorts = mkOption {
          type = types.listOf types.port;
          default = [ ];
          example = [ 53 ];
          description = ''
            UDP ports on the gateway only this unikernel may reach, in addition
            to {option}`services.mcp.firewall.allowedUDPPorts`.
          '';
        };
        ntpServers = mkOption {
          type = types.listOf types.str;
          default = lib.optional (isBridge && builtins.elem 123 udp) gateway;
          defaultText = lib.literalMD "`[ <gateway> ]` when UDP 123 to the gateway is allowed for this unikernel, else `[ ]`";
          example = [ "10.99.0.1" ];
          description = ''
            NTP servers of the Nanos `ntp` klib (its manifest `ntp_servers`).
            The klib falls back to pool.ntp.org, which a guest on the isolated
            bridge cannot reach, so with `klibs` containing `"ntp"` this must
            not be empty: run an NTP server on the host's bridge address and
            allow UDP 123 to it. Only the gateway can be reached.
          '';
        };
      };
      # The resolver follows the allowed ports (options.nix declares the option).
      config.network.nameservers = lib.mkDefault (lib.optional (isBridge && builtins.elem 53 udp) gateway);
    };

  perUnikernel =
    name: u:
    let
      isBridge = u.network.mode == "bridge";
      udp = c.gatewayUDPPorts u;
      tcp = c.gatewayTCPPorts u;
      show = l: "[ ${lib.concatMapStringsSep " " (s: "\"${s}\"") l} ]";
      unreachable = l: lib.filter (s: !isBridge || s != gateway) l;
    in
    [
      {
        assertion = unreachable u.network.nameservers == [ ];
        message =
          if isBridge then
            "${opt name}.network.nameservers = ${show u.network.nameservers}: the guest can reach only the gateway ${gateway}; name it (with UDP 53 allowed: network.allowedGatewayUDPPorts) or leave the default."
          else
            "${opt name}.network.nameservers = ${show u.network.nameservers}: a network.mode = \"user\" guest (restrict=on) reaches no resolver; leave it empty.";
      }
      {
        assertion = !isBridge || u.network.nameservers == [ ] || builtins.elem 53 udp || builtins.elem 53 tcp;
        message = "${opt name}.network.nameservers = ${show u.network.nameservers}, but port 53 on the gateway is not allowed for it (services.mcp.firewall.allowedUDPPorts or ${opt name}.network.allowedGatewayUDPPorts).";
      }
      {
        assertion = unreachable u.network.ntpServers == [ ];
        message =
          if isBridge then
            "${opt name}.network.ntpServers = ${show u.network.ntpServers}: the guest can reach only the gateway ${gateway}; name it (with UDP 123 allowed) or leave the default."
          else
            "${opt name}.network.ntpServers = ${show u.network.ntpServers}: a network.mode = \"user\" guest (restrict=on) reaches no NTP server; leave it empty.";
      }
      {
        assertion = !isBridge || u.network.ntpServers == [ ] || builtins.elem 123 udp;
        message = "${opt name}.network.ntpServers = ${show u.network.ntpServers}, but UDP 123 on the gateway is not allowed for it (services.mcp.firewall.allowedUDPPorts or ${opt name}.network.allowedGatewayUDPPorts).";
      }
      {
        assertion = !(builtins.elem "ntp" u.klibs) || u.network.ntpServers != [ ];
        message = "${opt name}.klibs contains \"ntp\" but network.ntpServers is empty: the ntp klib would fall back to pool.ntp.org, which the guest cannot reach. Allow UDP 123 on the gateway for it (network.allowedGatewayUDPPorts = [ 123 ], ntpServers then defaults to the gateway) and run an NTP server there.";
      }
      {
        assertion = isBridge || (u.network.allowedGatewayTCPPorts == [ ] && u.network.allowedGatewayUDPPorts == [ ]);
        message = "${opt name}.network.allowedGateway*Ports only apply to network.mode = \"bridge\".";
      }
    ];
in
{
  options.services.mcp.unikernels = mkOption {
    type = types.attrsOf (types.submodule gatewayOptions);
  };

  config = lib.mkIf (cfg.unikernels != { }) {
    assertions = lib.concatLists (lib.mapAttrsToList perUnikernel enabledAll);
  };
}
