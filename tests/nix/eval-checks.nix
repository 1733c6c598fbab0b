# Evaluate checks/*.nix as far as a lib-only nixpkgs tree allows:
# pkgs.testers.runNixOSTest is a STAND-IN that returns its argument
# (stub-pkgs.nix), and every node (and specialisation) is evaluated with the
# module, the stand-ins of standins.nix and the STAND-IN declarations below for
# the other NixOS options the tests use (free-form, unchecked).
{
  nixpkgsLib,
  moduleFile ? ../../nixos/module.nix,
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./stub-pkgs.nix;
  anything = lib.mkOption {
    type = lib.types.anything;
    default = { };
  };
  testOptions = {
    config._module.freeformType = lib.types.attrsOf lib.types.anything; # virtualisation, boot, specialisation ...
    options = {
      systemd.tmpfiles = anything;
      services.nginx = anything;
      networking.firewall.enable = anything;
      networking.firewall.allowedTCPPorts = anything;
      # Kept as a module (like NixOS) so mkForce inside it still applies.
      specialisation = lib.mkOption {
        type = lib.types.attrsOf (
          lib.types.submodule { options.configuration = lib.mkOption { type = lib.types.deferredModule; }; }
        );
        default = { };
      };
    };
  };
  fake =
    name:
    pkgs.mcp-unikernel
    // {
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
    };
  # With a Nanos dir, so the *-nanos tests are evaluated too.
  tests = import ../../checks {
    inherit pkgs;
    module = moduleFile;
    helper = fake "mcp-unikernel";
    fileServer = fake "file-server";
    fileServerStatic = fake "file-server-static";
    opsPackage = fake "ops";
    nanosDir = "/nix/store/00000000000000000000000000000000-nanos-kernel";
  };
  evalNode =
    modules:
    let
      c =
        (lib.evalModules {
          modules = [
            ./standins.nix
            testOptions
            { _module.args.pkgs = pkgs; }
          ] ++ modules;
        }).config;
    in
    {
      failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
      inherit (c) warnings;
      unikernels = builtins.attrNames (c.services.mcp.unikernels or { });
      nftablesEnable = c.networking.nftables.enable or false;
      qemu = toString (c.services.mcp.qemuPackage or "");
      package = toString (c.services.mcp.package or "");
      directBoot = lib.mapAttrs (_: u: u.directBoot != null) (c.services.mcp.unikernels or { });
      programs = lib.mapAttrs (_: u: toString u.program) (c.services.mcp.unikernels or { });
      json = builtins.attrNames (lib.filterAttrs (n: _: lib.hasPrefix "mcp-unikernel/" n) c.environment.etc);
      specialisations = builtins.attrNames (c.specialisation or { });
      raw = c;
    };
  common = import ../../checks/common.nix {
    inherit pkgs;
    module = moduleFile;
    flavour = "stub";
    helper = fake "mcp-unikernel";
    fileServer = fake "file-server";
    fileServerStatic = fake "file-server-static";
    opsPackage = fake "ops";
    nanosDir = null;
    accel = "tcg";
  };
in
{
  # The stand-in QEMU script and the stand-in guest's build script, as text.
  qemuStub = common.qemuStub.text;
  guestInitrd = common.guest.initrd.args.buildCommand;
  guestKernel = common.guest.kernel;
  upgradedHelper = common.upgradedHelper.args.buildCommand;
  tests = lib.mapAttrs (
  _: t:
  {
    inherit (t) name testScript;
    nodes = lib.concatMapAttrs (
      node: m:
      let
        base = evalNode [ m ];
      in
      {
        ${node} = removeAttrs base [ "raw" ];
      }
      // lib.mapAttrs' (
        s: v:
        lib.nameValuePair "${node}/specialisation/${s}" (
          removeAttrs (evalNode [
            m
            v.configuration
          ]) [ "raw" ]
        )
      ) (base.raw.specialisation or { })
    ) t.nodes;
  }
) tests;
}
