# State on removal (issue 15, part 4): services.mcp.unikernels.<name>.onRemove
# ("keep" | "purge", default "keep") and the package's
# mcp-unikernel-gc.service, which acts on it.
#
# How the removed VM's name and policy reach whatever purges: evaluation
# never sees the old generation, so the policy travels with the VM's own
# state. The JSON carries on_remove; `mcp-unikernel build` (every start)
# and `gc` record it in the root-owned <state>/<name>/removal.json with the
# TAP name and uid. On `nixos-rebuild switch` that removes a unikernel,
# switch-to-configuration stops its instance before activation (its start
# afterwards is skipped by ConditionPathExists), activation drops its JSON,
# and mcp-unikernel-gc.service — whose X-Restart-Triggers name the list of
# declared unikernels and their policies, so it restarts exactly when that
# list changes — runs `mcp-unikernel gc` after that: every state/runtime
# dir without a JSON is purged when its record says purge, kept otherwise.
# The unit is installed whenever the module is imported, also with no
# unikernels left, so removing the last one purges it too; it does nothing
# on a host whose state and runtime roots are empty (its conditions).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib) mkOption types;
  c = import ./common.nix {
    inherit
      config
      lib
      pkgs
      utils
      ;
  };
  inherit (c) cfg enabled;
  declared = pkgs.writeText "mcp-unikernel-declared.json" (
    builtins.toJSON (lib.mapAttrs (_: u: u.onRemove) enabled)
  );
in
{
  options.services.mcp.unikernels = mkOption {
    type = types.attrsOf (
      types.submodule {
        options.onRemove = mkOption {
          type = types.enum [
            "keep"
            "purge"
          ];
          default = "keep";
          description = ''
            What happens to this unikernel's files when it is removed from
            the configuration (or disabled) and `nixos-rebuild switch` runs:
            `keep` leaves its state dir (staged copies, images, whatever was
            baked into them), and `mcp-unikernel list` shows it as
            `removed (state kept)`; `purge` deletes its state dir, runtime
            dir and TAP (`mcp-unikernel-gc.service`). `mcp-unikernel purge
            <name>` does the same by hand; it refuses while the VM runs.
          '';
        };
      }
    );
  };

  config = {
    # (host/units.nix installs the package while there are unikernels)
    systemd.packages = lib.mkIf (cfg.unikernels == { }) [ cfg.package ];
    systemd.units."mcp-unikernel-gc.service" = {
      overrideStrategy = "asDropin";
      wantedBy = [ "multi-user.target" ];
      text = ''
        [Unit]
        X-Restart-Triggers=${declared}
      '';
    };
  };
}
