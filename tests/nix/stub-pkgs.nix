# STAND-IN for nixpkgs `pkgs` (only what the module, checks/ and flake.nix
# touch): fake derivations with store-like out paths, nothing is built. The
# builders keep their arguments (`args`) so tests can read them back;
# writeText keeps its text (an evaluation-only `nix-instantiate --eval`
# cannot write to the store) and its out path changes with the text, like
# the real one.
let
  hash = s: builtins.substring 0 32 (builtins.hashString "sha256" s);
  drv =
    name:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      meta.mainProgram = name;
    };
  # A builder's result: its out path depends on its arguments' JSON-able part.
  built =
    name: args:
    drv name
    // {
      inherit args;
      outPath = "/nix/store/${hash (name + builtins.toJSON (builtins.attrNames args))}-${name}";
      meta = (args.meta or { }) // {
        mainProgram = args.meta.mainProgram or name;
      };
    };
  writeTextFile =
    {
      name,
      text,
      destination ? "",
      executable ? false,
      ...
    }:
    {
      type = "derivation";
      inherit
        name
        text
        destination
        executable
        ;
      outPath = "/nix/store/${hash (destination + text)}-${name}";
    };
  self = {
    mcp-unikernel = drv "mcp-unikernel";
    ops = drv "ops";
    qemu_kvm = drv "qemu";
    iproute2 = drv "iproute2";
    curl = drv "curl";
    python3 = drv "python3";
    nftables = drv "nftables";
    systemd = drv "systemd";
    kmod = drv "kmod";
    cpio = drv "cpio";
    gzip = drv "gzip";
    xz = drv "xz";
    zstd = drv "zstd";
    findutils = drv "findutils";
    binutils-unwrapped = drv "binutils";
    linuxPackages.kernel = drv "linux-6.12.0" // {
      modDirVersion = "6.12.0";
    };
    pkgsStatic = self // {
      busybox = drv "busybox-static";
      rustPlatform.buildRustPackage = args: built "${args.pname}-static" args;
    };
    stdenv.hostPlatform = {
      system = "x86_64-linux";
      qemuArch = "x86_64";
      linux-kernel.target = "bzImage";
    };
    system = "x86_64-linux";
    writeText = name: text: writeTextFile { inherit name text; };
    inherit writeTextFile;
    runCommand =
      name: env: script:
      built name (env // { buildCommand = script; });
    rustPlatform.buildRustPackage = args: built args.pname args;
    buildGoModule = args: built args.pname args;
    fetchFromGitHub = args: built "source" args // { inherit (args) owner repo rev hash; };
    # STAND-IN: returns its argument, so checks/*.nix can be inspected.
    testers.runNixOSTest = test: test;
  };
in
self
