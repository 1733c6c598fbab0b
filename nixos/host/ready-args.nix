# What readiness, health, dependsOn and credentials (host/ready.nix) add to
# the instance JSON and to the nixos/lib/units.nix call (not a module:
# imported by common.nix and units.nix with the values they share).
#   import ./ready-args.nix { inherit lib derive enabled helper; }
{
  lib,
  derive,
  enabled,
  helper,
}:
rec {
  # The address the host-side probe connects to: the VM's bridge IP, or
  # (user mode) the host side of the forward of the probed guest port.
  probePort = r: if r.tcp != null then r.tcp else if r.http != null then r.http.port else null;
  probeAddress =
    u:
    let
      port = probePort u.readiness;
      fwd = lib.findFirst (p: p.guest == port && p.protocol == "tcp") null u.network.ports;
      a =
        if u.network.mode == "bridge" then
          u.network.ip
        else if fwd == null then
          null
        else if fwd.hostAddress == "0.0.0.0" then
          "127.0.0.1"
        else
          fwd.hostAddress;
    in
    if a != null && derive.isIPv4 a then a else null;

  validCredId = id: builtins.match "[A-Za-z0-9_][A-Za-z0-9_.-]*" id != null && builtins.stringLength id <= 64;
  validCredPath = p: builtins.match "/[^[:cntrl:][:space:]\\\\]*" p != null;

  # docs/config-schema.md: readiness, health, credentials, credentials_target.
  json = u: {
    readiness =
      if u.readiness == null then
        null
      else
        {
          inherit (u.readiness) tcp;
          http =
            if u.readiness.http == null then
              null
            else
              {
                inherit (u.readiness.http) port path;
                expect_status = u.readiness.http.expectStatus;
              };
          timeout_secs = u.readiness.timeout;
        };
    health =
      if u.health == null then
        null
      else
        {
          interval_secs = u.health.interval;
          inherit (u.health) failures;
          timeout_secs = u.health.timeout;
        };
    # Names only: the content never enters the store, the host paths only
    # the build unit's drop-in.
    credentials = builtins.attrNames u.credentials;
    credentials_target = u.credentialsTarget;
  };

  # Arguments of nixos/lib/units.nix. Values the assertions refuse are left
  # out here, so evaluation reaches the assertion's message instead of a
  # throw from units.nix.
  unitArgs =
    name: u:
    let
      r = u.readiness;
      oneProbe = r != null && (r.tcp == null) != (r.http == null);
      addr = if oneProbe then probeAddress u else null;
      ready = if addr == null then null else { inherit (r) timeout; address = addr; };
      credsOk =
        lib.all (id: validCredId id && validCredPath u.credentials.${id}) (builtins.attrNames u.credentials)
        && !(lib.any (p: lib.hasPrefix builtins.storeDir p) (builtins.attrValues u.credentials));
    in
    {
      inherit helper;
      readiness = ready;
      health =
        if ready == null || u.health == null || u.health.timeout > u.health.interval then
          null
        else
          { inherit (u.health) interval timeout; };
      dependsOn = lib.filter (d: d != name && enabled ? ${d}) u.dependsOn;
      credentials = if credsOk then u.credentials else { };
    };
}
