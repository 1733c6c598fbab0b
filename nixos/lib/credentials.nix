# The activation snippet that restarts a VM whose credential files changed.
# Pure (builtins only, like units.nix): the module installs its text as
# system.activationScripts.mcp-unikernel-credentials, and the systemd tier
# runs exactly this text (tests/systemd_ready.rs).
#
#   import ./credentials.nix {
#     helper = "/nix/store/…-mcp-unikernel/bin/mcp-unikernel";
#     unikernels = { web = { "tls.key" = "/run/secrets/web-tls.key"; }; };   # name -> ID -> host path
#   }
#   => { activationScript = "<shell text>"; }
#
# Why: credential files live outside the Nix store (sops-nix, agenix), so
# switch-to-configuration cannot see their content change: the units and the
# instance JSON stay the same. The activation script runs after the secrets
# are in place; for each unikernel with credentials the helper compares the
# files with the keyed digests of its last good build and, when the VM runs
# and one differs, prints its unit, which the snippet appends to
# /run/nixos/activation-restart-list (dry-activation-restart-list under
# `nixos-rebuild dry-activate`). switch-to-configuration restarts exactly
# those units; the restart's build bakes the new content into the image.
{ helper, unikernels }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    isAttrs
    isString
    map
    match
    replaceStrings
    stringLength
    toJSON
    ;
  fail = what: value: throw "nixos/lib/credentials.nix: invalid ${what}: ${toJSON value}";
  # POSIX shell single quotes.
  q = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  checkName =
    n: if match "[a-z0-9][a-z0-9-]*" n != null && stringLength n <= 64 then n else fail "unikernel name" n;
  checkId =
    id: if match "[A-Za-z0-9_][A-Za-z0-9_.-]*" id != null && stringLength id <= 64 then id else fail "credential id" id;
  checkPath = p: if isString p && match "/[^[:cntrl:]]*" p != null then p else fail "credential path" p;
  h = if isString helper && match "/[^[:cntrl:]]*" helper != null then helper else fail "helper" helper;
  us = if isAttrs unikernels then unikernels else fail "unikernels" unikernels;
  names = builtins.filter (n: us.${n} != { }) (attrNames us);
  check =
    name:
    let
      creds = us.${checkName name};
      args = map (id: q "${checkId id}=${checkPath creds.${id}}") (attrNames creds);
    in
    ''
      ${q h} credentials-changed ${q name} ${concatStringsSep " " args} >>"$_mcp_list" \
        || echo "mcp-unikernel: could not compare the credentials of ${name}; it keeps running as it is" >&2
    '';
in
{
  activationScript =
    if builtins.seq h names == [ ] then
      ""
    else
      ''
        # mcp-unikernel: restart only the VMs whose credential content changed
        # (the files are outside the Nix store; docs/nixos.md, "credentials").
        if [ "''${NIXOS_ACTION:-}" = dry-activate ]; then
          _mcp_list=/run/nixos/dry-activation-restart-list
        else
          _mcp_list=/run/nixos/activation-restart-list
        fi
        mkdir -p /run/nixos
      ''
      + concatStringsSep "" (map check names);
}
