# Evaluate nixos/module.nix with lib.evalModules, the stand-ins and one test
# configuration. Used by run-eval-tests.sh:
#   nix-instantiate --eval --strict --json -E \
#     '(import tests/nix/eval.nix { nixpkgsLib = /opt/nixpkgs-lib/lib; config = ./x.nix; }).json'
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
  mcpEtc = lib.filterAttrs (n: _: lib.hasPrefix "mcp-unikernel/" n) c.environment.etc;
  jsonEtc = lib.filterAttrs (n: _: lib.hasSuffix ".json" n) mcpEtc;
  short = n: lib.removeSuffix ".json" (lib.removePrefix "mcp-unikernel/" n);
in
{
  inherit eval;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  inherit (c) warnings;
  services = c.systemd.services;
  targets = c.systemd.targets;
  # systemd.units.<name>: overrideStrategy, text, wantedBy, enable.
  units = lib.mapAttrs (_: u: { inherit (u) text overrideStrategy wantedBy enable; }) c.systemd.units;
  packages = map toString c.systemd.packages;
  systemPackages = map toString c.environment.systemPackages;
  # <name> -> JSON text
  json = lib.mapAttrs' (n: v: lib.nameValuePair (short n) v.source.text) jsonEtc;
  # <name> -> the store paths the JSON text refers to (its string context)
  jsonContext = lib.mapAttrs' (
    n: v: lib.nameValuePair (short n) (builtins.attrNames (builtins.getContext v.source.text))
  ) jsonEtc;
  # the JSON's store file (what X-Restart-Triggers names)
  jsonFile = lib.mapAttrs' (n: v: lib.nameValuePair (short n) (toString v.source)) jsonEtc;
  etcNames = builtins.attrNames c.environment.etc;
  # other /etc/mcp-unikernel files (firewall.nft ...): name -> text
  etcText = lib.mapAttrs' (n: v: lib.nameValuePair (lib.removePrefix "mcp-unikernel/" n) (v.source.text or null)) (
    lib.filterAttrs (n: _: !lib.hasSuffix ".json" n) mcpEtc
  );
  users = lib.mapAttrs (_: u: {
    inherit (u)
      name
      isSystemUser
      group
      extraGroups
      description
      ;
  }) c.users.users;
  groups = builtins.attrNames c.users.groups;
  networking = {
    inherit (c.networking) bridges interfaces firewall;
    nftablesEnable = c.networking.nftables.enable;
    nftablesTables = c.networking.nftables.tables;
  };
  networkdNetworks = c.systemd.network.networks;
  activationScripts = removeAttrs c.system.activationScripts [ "script" ];
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
      inherit (d) tapName mac userName;
    };
}
