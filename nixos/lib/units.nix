# Per-instance drop-ins for the shipped units (systemd/*.service.in). Pure:
# builtins only, so CI renders exactly this text with a bare
# `nix-instantiate --eval` (tests/systemd_units.rs does) and the module
# installs it with
#   systemd.units."${r.vmUnit}" = { text = r.vmDropin; overrideStrategy = "asDropin"; };
#   systemd.units."${r.buildUnit}" = { text = r.buildDropin; overrideStrategy = "asDropin"; };
#
#   import ./units.nix {
#     name = "web";                 # ^[a-z0-9][a-z0-9-]*$, at most 64 characters
#     restart ? "on-failure";       # no on-success on-failure on-abnormal on-abort always
#     stopTimeout ? 30;             # s the helper waits for the guest after the power button
#     buildTimeout ? 900;           # TimeoutStartSec= of the build instance (cold builds)
#     restartTriggers ? [ ];        # strings -> X-Restart-Triggers= (the instance JSON's store path)
#     requires ? [ ]; after ? [ ]; bindsTo ? [ ];   # extra units for the VM instance
#     buildNetwork ? false;         # true -> PrivateNetwork=no for the build (ops downloads Nanos)
#     userNetwork ? false;          # true for network.mode = "user": QEMU's slirp needs IP sockets
#   }
#   => { vmUnit = "mcp-unikernel@web.service"; vmDropin = "<text>";
#        buildUnit = "mcp-unikernel-build@web.service"; buildDropin = "<text>"; }
#
# TimeoutStopSec= of the VM instance is stopTimeout + 45: Nanos waits up to
# 30 s after the power button before it powers off (UNIX_SHUTDOWN_TIMEOUT_SECS),
# and after the helper's own stopTimeout come QMP quit (5 s) and a signal (5 s),
# so systemd's own SIGTERM/SIGKILL never races the helper's sequence.
{
  name,
  restart ? "on-failure",
  stopTimeout ? 30,
  buildTimeout ? 900,
  restartTriggers ? [ ],
  requires ? [ ],
  after ? [ ],
  bindsTo ? [ ],
  buildNetwork ? false,
  userNetwork ? false,
}:
let
  inherit (builtins) all concatStringsSep filter isBool isInt isList isString match stringLength toJSON;

  fail = what: value: throw "nixos/lib/units.nix: invalid ${what}: ${toJSON value}";

  checkName =
    n:
    if isString n && match "[a-z0-9][a-z0-9-]*" n != null && stringLength n <= 64 then
      n
    else
      fail "name (^[a-z0-9][a-z0-9-]*$, at most 64 characters)" n;

  restarts = [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ];
  checkRestart =
    r:
    if isString r && builtins.elem r restarts then
      r
    else
      fail "restart (one of ${concatStringsSep " " restarts})" r;

  checkSeconds =
    what: min: max: s:
    if isInt s && s >= min && s <= max then s else fail "${what} (integer seconds ${toString min}..${toString max})" s;

  # The pattern NixOS checks unit names in after/requires/bindsTo with.
  unitPattern = "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  checkUnits =
    what: us:
    if !(isList us) then
      fail "${what} (list of unit names)" us
    else
      map (u: if isString u && match unitPattern u != null then u else fail "unit name in ${what}" u) us;

  # A value must stay on its line: no control characters (newline), and no
  # backslash (a trailing one continues the line).
  checkTriggers =
    ts:
    if !(isList ts) then
      fail "restartTriggers (list of strings)" ts
    else
      map (t: if isString t && match "[^[:cntrl:]\\\\]*" t != null then t else fail "restartTriggers entry (no control characters or backslashes)" t) ts;

  n = checkName name;
  r = checkRestart restart;
  stop = checkSeconds "stopTimeout" 1 3600 stopTimeout;
  build = checkSeconds "buildTimeout" 1 86400 buildTimeout;
  triggers = checkTriggers restartTriggers;
  req = checkUnits "requires" requires;
  aft = checkUnits "after" after;
  binds = checkUnits "bindsTo" bindsTo;
  net = if isBool buildNetwork then buildNetwork else fail "buildNetwork (bool)" buildNetwork;
  userNet = if isBool userNetwork then userNetwork else fail "userNetwork (bool)" userNetwork;

  line = key: values: if values == [ ] then [ ] else [ "${key}=${concatStringsSep " " values}" ];
  text = lines: concatStringsSep "\n" lines + "\n";
in
{
  vmUnit = "mcp-unikernel@${n}.service";
  buildUnit = "mcp-unikernel-build@${n}.service";

  vmDropin = text (
    [ "[Unit]" ]
    ++ line "X-Restart-Triggers" triggers
    ++ line "Requires" req
    ++ line "BindsTo" binds
    # Units it requires or is bound to are also ordered before it.
    ++ line "After" (aft ++ filter (u: !(builtins.elem u aft)) (req ++ binds))
    ++ [
      ""
      "[Service]"
      "Restart=${r}"
      "TimeoutStopSec=${toString (stop + 45)}"
    ]
    # The template allows no IP sockets (a bridged guest's traffic is on its
    # TAP); user-mode networking is QEMU talking IP on the guest's behalf.
    ++ (if userNet then [ "RestrictAddressFamilies=AF_INET AF_INET6" "IPAddressDeny=" ] else [ ])
  );

  buildDropin = text (
    [
      "[Service]"
      "TimeoutStartSec=${toString build}"
    ]
    ++ (if net then [ "PrivateNetwork=no" ] else [ ])
  );
}
