# Units: the package ships them (systemd/ in the repo, installed by the
# package into lib/systemd/system/); this file installs them and adds one
# drop-in per instance, rendered by nixos/lib/units.nix — the same function
# the systemd tests use, so CI runs exactly the text NixOS installs.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  c = import ./common.nix {
    inherit
      config
      lib
      pkgs
      utils
      ;
  };
  inherit (c) cfg enabled;

  renderUnits =
    name: u:
    let
      deps = c.vmDeps name u;
    in
    import ../lib/units.nix (
      {
        inherit name;
        inherit (u) restart stopTimeout buildTimeout;
        # The JSON's store path: switch-to-configuration restarts exactly the
        # instances whose config changed.
        restartTriggers = [ "${c.instanceFile name u}" ];
        inherit (deps) requires after bindsTo;
        # Without a local Nanos dir ops must download the kernel (a direct-boot
        # test guest needs no ops).
        buildNetwork = cfg.nanosDir == null && u.directBoot == null;
        # QEMU's user-mode networking (slirp) needs IP sockets, which the
        # template denies.
        userNetwork = u.network.mode == "user";
      }
      # readiness, health, dependsOn, credentials (host/ready.nix)
      // c.readyArgs.unitArgs name u
    );

  rendered = lib.mapAttrs renderUnits enabled;
in
{
  config = lib.mkIf (cfg.unikernels != { }) {
    # mcp-unikernel@.service, mcp-unikernel-build@.service,
    # mcp-unikernel-firewall.service, mcp-unikernels.target.
    systemd.packages = [ cfg.package ];

    environment.systemPackages = [ cfg.package ];

    environment.etc = lib.mapAttrs' (
      name: u: lib.nameValuePair "mcp-unikernel/${name}.json" { source = c.instanceFile name u; }
    ) enabled;

    # One drop-in per instance of each template
    # (/etc/systemd/system/<unit>.d/overrides.conf). A unikernel removed from
    # the configuration loses its drop-ins and its JSON: switch-to-configuration
    # stops the running instance (with the old files still in place) and starts
    # it again after activation, and that start is skipped by the template's
    # ConditionPathExists=/etc/mcp-unikernel/%i.json. So no prune unit.
    systemd.units = lib.mkMerge (
      lib.mapAttrsToList (_: r: {
        ${r.vmUnit} = {
          text = r.vmDropin;
          overrideStrategy = "asDropin";
        };
        ${r.buildUnit} = {
          text = r.buildDropin;
          overrideStrategy = "asDropin";
        };
      }
      // lib.optionalAttrs (r.healthDropin != null) {
        ${r.healthUnit} = {
          text = r.healthDropin;
          overrideStrategy = "asDropin";
        };
        ${r.healthTimer} = {
          text = r.healthTimerDropin;
          overrideStrategy = "asDropin";
        };
      }) rendered
    );

    # The target (shipped by the package) pulls in the instances with Wants=
    # rather than with wantedBy symlinks to instance names that have no unit
    # file of their own.
    systemd.targets.mcp-unikernels = {
      overrideStrategy = "asDropin";
      wantedBy = [ "multi-user.target" ];
      wants = map (n: "mcp-unikernel@${n}.service") (
        builtins.attrNames (lib.filterAttrs (_: u: u.autoStart) enabled)
      );
    };
  };
}
