# The nixosTests (runNixOSTest; the test VMs need KVM on the build host).
#   pkgs        nixpkgs for x86_64-linux
#   module      the NixOS module (the flake's nixosModules.default, which also
#               sets services.mcp.package)
#   fileServer  the example guest program (the flake's packages.file-server)
#   nanosDir    a directory (store path) holding Nanos kernel.img and boot.img
#   opsPackage  ops; nixpkgs's is old (0.1.32), pass a newer one if it fails
#   accel       "tcg" by default: nested KVM is often unavailable inside the
#               test VM; "kvm" where it is.
{
  pkgs,
  module,
  fileServer,
  nanosDir,
  opsPackage ? pkgs.ops,
  accel ? "tcg",
}:
let
  common = import ./common.nix {
    inherit
      module
      fileServer
      nanosDir
      opsPackage
      accel
      ;
  };
  run = file: pkgs.testers.runNixOSTest (import file common);
in
{
  unikernel-basic = run ./basic.nix;
  unikernel-isolation = run ./isolation.nix;
  unikernel-kill-restart = run ./kill-restart.nix;
  unikernel-reconfigure = run ./reconfigure.nix;
}
