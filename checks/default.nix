# The nixosTests (runNixOSTest; the test VMs need KVM on the build host, the
# unikernels run inside them with accel = "tcg" unless told otherwise).
#   pkgs              nixpkgs for x86_64-linux
#   module            the NixOS module (the flake's nixosModules.default)
#   helper            the helper package (the flake's packages.default)
#   fileServer        the example guest program (packages.file-server)
#   fileServerStatic  the same, static (packages.file-server-static): the
#                     Linux stand-in guest has no libc
#   opsPackage        ops (packages.ops, the pinned version)
#   nanosDir          null, or a directory (store path) with Nanos kernel.img
#                     and boot.img: then the *-nanos tests exist too
#   accel             "tcg": nested KVM is often unavailable inside the
#                     test VM; "kvm" where it is
#
# Without a Nanos dir (the default of `nix flake check`):
#   unikernel-wiring                no guest, a stub in place of QEMU
#   unikernel-{basic,isolation,kill-restart,reconfigure}-standin
#                                   the Linux stand-in guest (./guest.nix)
# With one, also unikernel-{basic,isolation,kill-restart,reconfigure}-nanos.
{
  pkgs,
  module,
  helper,
  fileServer,
  fileServerStatic,
  opsPackage,
  nanosDir ? null,
  accel ? "tcg",
}:
let
  common =
    flavour:
    import ./common.nix {
      inherit
        pkgs
        module
        flavour
        helper
        fileServer
        fileServerStatic
        opsPackage
        nanosDir
        accel
        ;
    };
  run = flavour: file: pkgs.testers.runNixOSTest (import file (common flavour));
  guestTests = flavour: {
    "unikernel-basic-${flavour}" = run flavour ./basic.nix;
    "unikernel-isolation-${flavour}" = run flavour ./isolation.nix;
    "unikernel-kill-restart-${flavour}" = run flavour ./kill-restart.nix;
    "unikernel-reconfigure-${flavour}" = run flavour ./reconfigure.nix;
  };
in
{
  unikernel-wiring = run "stub" ./wiring.nix;
}
// guestTests "standin"
// (if nanosDir != null then guestTests "nanos" else { })
