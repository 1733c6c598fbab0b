{
  description = "mcp-unikernel: run Nanos unikernels as systemd services on NixOS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      src = lib.cleanSourceWith {
        src = ./.;
        filter =
          path: type:
          let
            rel = lib.removePrefix (toString ./. + "/") (toString path);
          in
          !(lib.hasPrefix "target" rel) && !(lib.hasPrefix ".git" rel);
      };

      # One crate of the workspace. Its tests need root, QEMU and TAPs, so
      # none run in the build sandbox (tests/run runs them).
      mkCrate =
        pkgs: pname: meta:
        pkgs.rustPlatform.buildRustPackage {
          inherit pname src;
          version = "0.1.0";
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" pname ];
          doCheck = false;
          meta = {
            license = lib.licenses.mit;
            mainProgram = pname;
          }
          // meta;
        };

      # The helper.
      mkHelper =
        pkgs:
        mkCrate pkgs "mcp-unikernel" {
          description = "Run Nanos unikernels as systemd services";
          platforms = lib.platforms.linux;
        };

      # Example guest program (examples/file-server), used by the checks.
      mkFileServer =
        pkgs:
        mkCrate pkgs "file-server" {
          description = "Example mcp-unikernel guest: serves one file over HTTP";
        };

      # Directory with the Nanos kernel.img and boot.img for the nixosTests:
      # nothing packages Nanos, so it comes from MCP_NANOS_DIR (needs --impure):
      #   MCP_NANOS_DIR=/path/to/nanos nix flake check --impure -L
      nanosEnv = builtins.getEnv "MCP_NANOS_DIR";
      nanosDir =
        if nanosEnv == "" then
          null
        else
          builtins.path {
            path = nanosEnv;
            name = "nanos-kernel";
          };
    in
    {
      packages = forAllSystems (pkgs: {
        default = mkHelper pkgs;
        mcp-unikernel = mkHelper pkgs;
        file-server = mkFileServer pkgs;
      });

      overlays.default = final: _prev: {
        mcp-unikernel = mkHelper final;
        mcp-unikernel-file-server = mkFileServer final;
      };

      # With Nix 2.8 a bare path here fails `nix flake check`.
      nixosModules.default =
        { pkgs, lib, ... }:
        {
          imports = [ (import ./nixos/module.nix) ];
          services.mcp.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      # nixosTests (need KVM on the build host and a Nanos kernel dir):
      # see docs/nixos.md. Without MCP_NANOS_DIR only the builds are checked.
      checks = forAllSystems (
        pkgs:
        {
          helper = self.packages.${pkgs.system}.default;
          file-server = self.packages.${pkgs.system}.file-server;
        }
        // lib.optionalAttrs (nanosDir != null) (
          import ./checks {
            inherit pkgs nanosDir;
            module = self.nixosModules.default;
            fileServer = self.packages.${pkgs.system}.file-server;
          }
        )
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.default ];
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.qemu_kvm
            pkgs.nftables
            pkgs.iproute2
            pkgs.ops
            pkgs.nixfmt-rfc-style
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
