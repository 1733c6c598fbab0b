# Readiness, health, ordering between unikernels, and secrets through
# systemd credentials (issue 14): the options (added to
# services.mcp.unikernels.<name> by declaring its submodule once more: the
# module system merges both declarations), their assertions, and the
# activation snippet that restarts a VM whose credential files changed
# (nixos/lib/credentials.nix). The JSON fields and the drop-in lines come
# from host/ready-args.nix, used by common.nix and units.nix.
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
  inherit (c) cfg enabled enabledAll;
  inherit (c.readyArgs) probePort validCredId validCredPath;
  inherit (lib) mkOption types;

  opt = name: "services.mcp.unikernels.${name}";
  port = types.ints.between 1 65535;

  readinessType = types.submodule {
    options = {
      tcp = mkOption {
        type = types.nullOr port;
        default = null;
        example = 8080;
        description = "Ready once a TCP connection to this guest port is accepted.";
      };
      http = mkOption {
        type = types.nullOr (
          types.submodule {
            options = {
              port = mkOption {
                type = port;
                example = 8080;
                description = "Guest port of the HTTP server.";
              };
              path = mkOption {
                type = types.str;
                default = "/";
                example = "/healthz";
                description = "Path of the GET request (visible ASCII, no spaces).";
              };
              expectStatus = mkOption {
                type = types.ints.between 100 599;
                default = 200;
                description = "The status that counts as an answer.";
              };
            };
          }
        );
        default = null;
        example = {
          port = 8080;
          path = "/healthz";
        };
        description = "Ready once an HTTP GET answers with {option}`expectStatus`.";
      };
      timeout = mkOption {
        type = types.ints.between 1 3600;
        default = 60;
        description = ''
          Seconds the start waits for the first answer; the start fails
          after that (the unit's `TimeoutStartSec` is this plus 30).
        '';
      };
    };
  };

  healthType = types.submodule {
    options = {
      interval = mkOption {
        type = types.ints.between 1 86400;
        default = 10;
        description = "Seconds between health probes.";
      };
      failures = mkOption {
        type = types.ints.between 1 100;
        default = 3;
        description = "Consecutive failed probes after which the VM is restarted.";
      };
      timeout = mkOption {
        type = types.ints.between 1 300;
        default = 5;
        description = "Seconds one probe may take (at most {option}`interval`).";
      };
    };
  };

  # ---- assertions ------------------------------------------------------------
  depsOf = n: lib.filter (d: enabledAll ? ${d}) (enabledAll.${n}.dependsOn or [ ]);
  # The first cycle through the dependencies of n, as a path that ends
  # where it starts, or null.
  findCycle =
    path: n:
    if lib.elem n path then
      let
        from = l: if l == [ ] || builtins.head l == n then l else from (builtins.tail l);
      in
      from path ++ [ n ]
    else
      lib.foldl' (acc: d: if acc != null then acc else findCycle (path ++ [ n ]) d) null (depsOf n);
  # Each cycle once, starting at its smallest name.
  rotate =
    cyc:
    let
      ring = lib.init cyc;
      m = lib.foldl' (a: b: if b < a then b else a) (builtins.head ring) ring;
      go = l: if builtins.head l == m then l else go (builtins.tail l ++ [ (builtins.head l) ]);
      r = go ring;
    in
    r ++ [ (builtins.head r) ];
  cycles = lib.unique (
    map rotate (lib.filter (x: x != null) (map (findCycle [ ]) (builtins.attrNames enabledAll)))
  );

  perUnikernel =
    name: u:
    let
      r = u.readiness;
      h = u.health;
      isUser = u.network.mode == "user";
      p = if r == null then null else probePort r;
      creds = u.credentials;
      ids = builtins.attrNames creds;
      others = lib.filterAttrs (
        n: uu: n != u.user && (uu.group == u.group || lib.elem u.group uu.extraGroups)
      ) config.users.users;
    in
    lib.optionals (r != null) [
      {
        assertion = (r.tcp == null) != (r.http == null);
        message = "${opt name}.readiness: set exactly one of tcp and http (got ${
          if r.tcp == null then "neither" else "both"
        }).";
      }
      {
        assertion = r.http == null || builtins.match "/[!-~]*" r.http.path != null;
        message = "${opt name}.readiness.http.path = \"${
          if r.http == null then "" else r.http.path
        }\" must start with / and hold visible ASCII only (no spaces).";
      }
      {
        assertion = !isUser || p == null || lib.any (f: f.guest == p && f.protocol == "tcp") u.network.ports;
        message = "${opt name}.readiness probes guest port ${toString p}, but in network.mode = \"user\" the host reaches the guest only through network.ports: add a tcp forward of guest port ${toString p}.";
      }
    ]
    ++ lib.optionals (h != null) [
      {
        assertion = r != null;
        message = "${opt name}.health needs ${opt name}.readiness (the probe it repeats).";
      }
      {
        assertion = h.timeout <= h.interval;
        message = "${opt name}.health.timeout = ${toString h.timeout} is longer than health.interval = ${toString h.interval}.";
      }
    ]
    ++ map (d: {
      assertion = cfg.unikernels ? ${d};
      message = "${opt name}.dependsOn: there is no unikernel \"${d}\" (services.mcp.unikernels.${d}).";
    }) u.dependsOn
    ++ map (d: {
      assertion = !(cfg.unikernels ? ${d}) || cfg.unikernels.${d}.enable;
      message = "${opt name}.dependsOn: the unikernel \"${d}\" is not enabled (services.mcp.unikernels.${d}.enable = false).";
    }) u.dependsOn
    ++ map (id: {
      assertion = validCredId id;
      message = "${opt name}.credentials.\"${id}\": the name must match ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ with at most 64 characters (a guest file name and a systemd credential id).";
    }) ids
    ++ map (id: {
      assertion = validCredPath creds.${id};
      message = "${opt name}.credentials.\"${id}\" = \"${creds.${id}}\" must be an absolute host path without whitespace, control characters or backslashes.";
    }) ids
    ++ map (id: {
      assertion = !(lib.hasPrefix builtins.storeDir creds.${id}) && !(builtins.hasContext creds.${id});
      message = "${opt name}.credentials.\"${id}\" = \"${creds.${id}}\" is in the Nix store, which every local user can read: give the path of a file outside it (e.g. from sops-nix or agenix).";
    }) ids
    ++ lib.optionals (creds != { }) [
      {
        assertion = builtins.length ids <= 64;
        message = "${opt name}.credentials: at most 64 credentials.";
      }
      {
        assertion =
          let
            t = u.credentialsTarget;
          in
          builtins.match "/[^[:cntrl:]]*" t != null
          && t != "/"
          && !(lib.hasPrefix "/.mcp-unikernel" t)
          && !(lib.hasInfix "/../" "${t}/")
          && !(lib.hasInfix "/./" "${t}/");
        message = "${opt name}.credentialsTarget = \"${u.credentialsTarget}\" must be an absolute guest directory (not /, not under /.mcp-unikernel, no . or .. components).";
      }
      {
        assertion = others == { };
        message = "${opt name}.credentials: the VM's image holds them and is readable by its group \"${u.group}\", which ${lib.concatStringsSep " and " (builtins.attrNames others)} also ${
          if builtins.length (builtins.attrNames others) == 1 then "has" else "have"
        }: the group must be the VM's user's alone.";
      }
    ]
    ++ lib.optionals (creds != { }) (
      map (v: {
        assertion =
          let
            a = "${lib.removeSuffix "/" v.target}/";
            b = "${lib.removeSuffix "/" u.credentialsTarget}/";
          in
          !(lib.hasPrefix a b || lib.hasPrefix b a);
        message = "${opt name}.credentialsTarget = \"${u.credentialsTarget}\" is nested with the volume target \"${v.target}\": credentials get a guest directory of their own.";
      }) u.volumes
    );

  withCreds = lib.filterAttrs (_: u: u.credentials != { }) enabled;
  # Run after the secrets are in place (sops-nix: setupSecrets, agenix:
  # agenix), when those modules are loaded.
  secretDeps = lib.filter (n: config.system.activationScripts ? ${n}) [
    "setupSecrets"
    "agenix"
  ];
in
{
  options.services.mcp.unikernels = mkOption {
    type = types.attrsOf (
      types.submodule {
        options = {
          readiness = mkOption {
            type = types.nullOr readinessType;
            default = null;
            example = {
              http = {
                port = 8080;
                path = "/healthz";
              };
              timeout = 30;
            };
            description = ''
              When the VM counts as started. `null`: as soon as QEMU runs.
              Otherwise `mcp-unikernel@<name>.service` becomes active only
              once the guest answers this probe from the host side (at its
              bridge IP; in user mode at the forwarded host port), and a guest
              that does not answer within {option}`timeout` fails the start.
              Units that depend on it ({option}`dependsOn`) start after that.
            '';
          };
          health = mkOption {
            type = types.nullOr healthType;
            default = null;
            example = {
              interval = 10;
              failures = 3;
            };
            description = ''
              Repeat the {option}`readiness` probe every {option}`interval`
              seconds while the VM runs (a timer and a oneshot per VM, nothing
              resident); after {option}`failures` consecutive failures the VM
              is restarted and its journal says why. Needs {option}`readiness`.
            '';
          };
          dependsOn = mkOption {
            type = types.listOf types.str;
            default = [ ];
            example = [ "db" ];
            description = ''
              Other unikernels this one needs: `Requires=` and `After=` their
              units, so it starts after them (after they answer, when they
              have a {option}`readiness` probe) and stops or restarts with
              them.
            '';
          };
          credentials = mkOption {
            type = types.attrsOf types.str;
            default = { };
            example = {
              "tls.key" = "/run/secrets/mcat-tls.key";
            };
            description = ''
              Secrets given to the guest: name -> a file on the host (e.g.
              from sops-nix or agenix; never a Nix store path). The build unit
              loads them with systemd's `LoadCredential=` and bakes each into
              the VM's image as {option}`credentialsTarget`/<name> (mode 0400).
              Only the names reach the instance JSON. The secret is stored in
              that VM's disk image (and staged tree) under
              /var/lib/mcp-unikernel/<name>/, readable by root and the VM's
              own group only. A change of content rebuilds the image and
              `nixos-rebuild switch` restarts only that VM.
            '';
          };
          credentialsTarget = mkOption {
            type = types.str;
            default = "/run/secrets";
            description = "Guest directory holding the credentials (one file per name).";
          };
        };
      }
    );
  };

  config = lib.mkIf (cfg.unikernels != { }) {
    assertions =
      lib.concatLists (lib.mapAttrsToList perUnikernel enabledAll)
      ++ map (cyc: {
        assertion = false;
        message = "services.mcp.unikernels: dependsOn has a cycle: ${lib.concatStringsSep " -> " cyc}.";
      }) cycles;

    system.activationScripts.mcp-unikernel-credentials = lib.mkIf (withCreds != { }) {
      deps = [ "etc" ] ++ secretDeps;
      # The helper only reads and prints unit names.
      supportsDryActivation = true;
      text =
        (import ../lib/credentials.nix {
          inherit (c) helper;
          unikernels = lib.mapAttrs (
            _: u: lib.filterAttrs (id: p: validCredId id && validCredPath p) u.credentials
          ) withCreds;
        }).activationScript;
    };
  };
}
