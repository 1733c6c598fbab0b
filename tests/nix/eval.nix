# Evaluate nixos/module.nix with lib.evalModules, the stand-ins and one test
# configuration. Used by run-eval-tests.sh:
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --arg nixpkgsLib /opt/nixpkgs-lib/lib --arg config ./cases/x.nix -A <attr>
{
  nixpkgsLib,
  config,
  moduleFile ? ../../nixos/module.nix,
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./stub-pkgs.nix;
  eval = lib.evalModules {
    modules = [
      ./standins.nix
      moduleFile
      config
      { _module.args.pkgs = pkgs; }
    ];
  };
  c = eval.config;
  etcJSON = lib.mapAttrs' (
    n: v: lib.nameValuePair (lib.removeSuffix ".json" (lib.removePrefix "mcp-unikernel/" n)) v.source.text
  ) (lib.filterAttrs (n: _: lib.hasPrefix "mcp-unikernel/" n) c.environment.etc);
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  services = c.systemd.services;
  targets = c.systemd.targets;
  json = etcJSON;
  etcNames = builtins.attrNames c.environment.etc;
  users = c.users;
  networking = {
    inherit (c.networking) bridges interfaces firewall;
    nftablesEnable = c.networking.nftables.enable;
  };
  # Rendered as NixOS renders networking.nftables.tables.
  nftRuleset = lib.concatStrings (
    lib.mapAttrsToList (name: t: ''
      table ${t.family} ${name} {
      ${t.content}
      }
    '') c.networking.nftables.tables
  );
  derive =
    let
      d = import ../../nixos/lib/derive.nix;
    in
    {
      inherit (d) tapName mac;
    };
}
