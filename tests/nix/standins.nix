# STAND-INS for the NixOS options the module sets or reads, so that
# lib.evalModules can evaluate nixos/module.nix with only a nixpkgs `lib` tree
# (no full nixpkgs here). They are NOT the real NixOS declarations: types are
# loose (attrsOf anything) on purpose; only the module's output is checked.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  loose = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    environment.etc = loose;
    environment.systemPackages = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };
    users.users = loose;
    users.groups = loose;
    systemd.package = mkOption {
      type = types.anything;
      default = "/nix/store/00000000000000000000000000000000-systemd";
    };
    systemd.services = loose;
    systemd.targets = loose;
    systemd.network.networks = loose;
    networking.useNetworkd = mkOption {
      type = types.bool;
      default = false;
    };
    networking.bridges = loose;
    networking.interfaces = loose;
    networking.firewall.interfaces = loose;
    networking.nftables.enable = mkOption {
      type = types.bool;
      default = false;
    };
    networking.nftables.tables = loose;
  };
}
