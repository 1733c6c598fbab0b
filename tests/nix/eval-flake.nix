# Evaluate flake.nix's outputs as far as a lib-only nixpkgs tree allows: its
# `nixpkgs` input is a STAND-IN ({ lib; legacyPackages.x86_64-linux = the
# stub pkgs of stub-pkgs.nix }), so packages are the stubs' records of their
# builders' arguments, and the module is evaluated with the stand-ins of
# standins.nix. Used by run-eval-tests.sh:
#   nix-instantiate --eval --strict --json tests/nix/eval-flake.nix --arg nixpkgsLib ... -A ops
{
  nixpkgsLib,
  root ? ../..,
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./stub-pkgs.nix;
  flake = import (root + "/flake.nix");
  nixpkgs = {
    inherit lib;
    legacyPackages.x86_64-linux = pkgs;
  };
  self = flake.outputs { inherit self nixpkgs; } // {
    outPath = root;
  };
  sys = "x86_64-linux";
  moduleEval = lib.evalModules {
    modules = [
      ./standins.nix
      self.nixosModules.default
      { _module.args.pkgs = pkgs; }
      { services.mcp.unikernels.web = { program = "/bin/sh"; network.ip = "10.99.0.2"; }; }
    ];
  };
in
{
  inherit (flake) inputs;
  packageNames = builtins.attrNames self.packages.${sys};
  ops = {
    inherit (self.packages.${sys}.ops.args) pname version vendorHash ldflags subPackages postPatch doCheck;
    src = { inherit (self.packages.${sys}.ops.args.src) owner repo rev hash; };
    mainProgram = self.packages.${sys}.ops.meta.mainProgram;
  };
  helperPostInstall = self.packages.${sys}.default.args.postInstall;
  fileServerStatic = self.packages.${sys}.file-server-static.name;
  overlay = builtins.attrNames (self.overlays.default pkgs pkgs);
  module = {
    opsPackage = toString moduleEval.config.services.mcp.opsPackage;
    package = toString moduleEval.config.services.mcp.package;
    ops = toString self.packages.${sys}.ops;
    helper = toString self.packages.${sys}.default;
    failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) moduleEval.config.assertions);
  };
  checkNames = builtins.attrNames self.checks.${sys};
}
