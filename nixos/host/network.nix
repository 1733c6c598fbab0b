# The bridge (no uplink, no NAT) and the isolation tables. The host's own
# firewall stays what it is: this module never sets networking.nftables.enable.
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
  inherit (c) cfg bridged;
  br = cfg.bridge.name;
  rulesFile = pkgs.writeText "mcp-unikernel-firewall.nft" c.nft.ruleset;
  removalFile = pkgs.writeText "mcp-unikernel-firewall-remove.nft" c.nft.removal;
in
{
  config = lib.mkIf (cfg.unikernels != { }) (
    lib.mkMerge [
      (lib.mkIf (bridged != { } && c.validBridgeName) {
        # Works with scripted networking and with systemd-networkd
        # (networking.useNetworkd translates these options into .netdev/.network).
        networking.bridges.${br}.interfaces = [ ];
        networking.interfaces.${br} = {
          ipv4.addresses = lib.optional (c.bridgeCIDR != null) {
            address = c.gateway;
            inherit (c) prefixLength;
          };
        }
        // lib.optionalAttrs (cfg.bridge.macAddress != null) { inherit (cfg.bridge) macAddress; };
        # A bridge without ports has no carrier: let networkd configure it anyway.
        systemd.network.networks."40-${br}" = lib.mkIf config.networking.useNetworkd {
          networkConfig.ConfigureWithoutCarrier = true;
          linkConfig.RequiredForOnline = "no";
        };
        # The host firewall (iptables or nftables) must also let the VMs reach
        # the allowed gateway ports.
        # The host firewall sees only the bridge, not which VM: it gets the
        # union; the isolation tables keep each VM to its own ports.
        networking.firewall.interfaces.${br} = {
          allowedTCPPorts = lib.unique (lib.concatMap c.gatewayTCPPorts (lib.attrValues bridged));
          allowedUDPPorts = lib.unique (lib.concatMap c.gatewayUDPPorts (lib.attrValues bridged));
        };
      })

      # networking.nftables.enable = true: the tables join NixOS's ruleset,
      # which nftables.service loads in one `nft -f` transaction on start and
      # on reload (a reload never leaves a moment without them). A restart
      # (stop, then start) does remove them for a moment, but every bridged VM
      # Requires= and is After= nftables.service, so systemd stops the VMs
      # before the stop and starts them again after the start.
      (lib.mkIf (c.firewallMode == "nftables") {
        networking.nftables.tables = c.nft.tables;
      })

      # Otherwise the package's mcp-unikernel-firewall.service loads these
      # files (both tables replaced atomically) and removes the tables on stop.
      # A change of the rules reloads it (ExecReload loads firewall.nft again,
      # atomically) instead of restarting it, which would restart every VM.
      # Whenever this module does not use the firewall unit it masks it
      # (/dev/null): the unit fails closed without its rules file, so a
      # switch that turns it off (last bridged VM removed, firewall.enable =
      # false, networking.nftables.enable = true) must stop it, with the old
      # files still in place, and not start it again — switch-to-configuration
      # does exactly that for a unit that became /dev/null.
      (lib.mkIf (c.firewallMode != "unit") {
        systemd.units."mcp-unikernel-firewall.service".enable = false;
      })

      (lib.mkIf (c.firewallMode == "unit") {
        environment.etc."mcp-unikernel/firewall.nft".source = rulesFile;
        environment.etc."mcp-unikernel/firewall-remove.nft".source = removalFile;
        systemd.units."mcp-unikernel-firewall.service" = {
          overrideStrategy = "asDropin";
          wantedBy = [ "mcp-unikernels.target" ];
          text = ''
            [Unit]
            X-Reload-Triggers=${rulesFile} ${removalFile}
          '';
        };
      })
    ]
  );
}
