# STAND-IN for nixpkgs `pkgs` (only what the module and checks/ touch):
# fake derivations with store-like out paths. writeText keeps its text (an
# evaluation-only `nix-instantiate --eval` cannot write to the store) and its
# out path changes with the text, like the real one.
let
  drv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
in
{
  mcp-unikernel = drv "mcp-unikernel";
  ops = drv "ops";
  qemu_kvm = drv "qemu";
  iproute2 = drv "iproute2";
  curl = drv "curl";
  python3 = drv "python3";
  pkgsStatic.busybox = drv "busybox";
  stdenv.hostPlatform = {
    system = "x86_64-linux";
    qemuArch = "x86_64";
  };
  system = "x86_64-linux";
  writeText = name: text: {
    type = "derivation";
    inherit name text;
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" text)}-${name}";
  };
  # STAND-IN: returns its argument, so checks/*.nix can be inspected.
  testers.runNixOSTest = test: test;
}
