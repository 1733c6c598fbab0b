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
#     helper ? null;                # the helper's path (needed with readiness: ExecStartPost=)
#     readiness ? null;             # { timeout = S; address = "10.99.0.2"; }: ExecStartPost=helper wait-ready,
#                                   #   TimeoutStartSec=timeout+30, AF_INET + IPAddressAllow= that address only
#     health ? null;                # { interval = S; timeout = S; } (needs readiness): Wants= the health timer
#     dependsOn ? [ ];              # unikernel names: Requires= + After= mcp-unikernel@<dep>.service
#     credentials ? { };            # ID -> host path: LoadCredential= (+ SetCredential= fallback) for the build
#   }
#   => { vmUnit = "mcp-unikernel@web.service"; vmDropin = "<text>";
#        buildUnit = "mcp-unikernel-build@web.service"; buildDropin = "<text>";
#        healthUnit = "mcp-unikernel-health@web.service"; healthTimer = "mcp-unikernel-health@web.timer";
#        healthDropin = "<text>" or null; healthTimerDropin = "<text>" or null; }
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
  helper ? null,
  readiness ? null,
  health ? null,
  dependsOn ? [ ],
  credentials ? { },
}:
let
  inherit (builtins)
    all
    attrNames
    concatStringsSep
    filter
    isAttrs
    isBool
    isInt
    isList
    isString
    match
    replaceStrings
    stringLength
    toJSON
    ;

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

  # ---- readiness, health, dependsOn, credentials (issue 14) ----------------
  checkAddress =
    what: a:
    if isString a && match "(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])([.](25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}" a != null then
      a
    else
      fail "${what} (dotted IPv4)" a;
  ready =
    if readiness == null then
      null
    else if !(isAttrs readiness) then
      fail "readiness ({ timeout; address; } or null)" readiness
    else
      {
        timeout = checkSeconds "readiness.timeout" 1 3600 (readiness.timeout or null);
        address = checkAddress "readiness.address" (readiness.address or null);
      };
  helperPath =
    if ready == null then
      null
    else if isString helper && match "/[^[:cntrl:][:space:]\\%]*" helper != null then
      helper
    else
      fail "helper (absolute path, needed with readiness)" helper;
  hc =
    if health == null then
      null
    else if ready == null then
      fail "health (needs readiness)" health
    else if !(isAttrs health) then
      fail "health ({ interval; timeout; } or null)" health
    else
      {
        interval = checkSeconds "health.interval" 1 86400 (health.interval or null);
        timeout = checkSeconds "health.timeout" 1 300 (health.timeout or null);
      };
  deps =
    if !(isList dependsOn) then
      fail "dependsOn (list of unikernel names)" dependsOn
    else
      map (d: if d == n then fail "dependsOn entry (the unikernel itself)" d else "mcp-unikernel@${checkName d}.service") dependsOn;
  # A credential id is a file name in the guest and the part before ':' of
  # LoadCredential=; a host path must stay on its line and be taken
  # literally (% starts a specifier: doubled).
  checkCredId =
    id: if match "[A-Za-z0-9_][A-Za-z0-9_.-]*" id != null && stringLength id <= 64 then id else fail "credentials id (^[A-Za-z0-9_][A-Za-z0-9_.-]*$, at most 64 characters)" id;
  checkCredPath =
    id: p:
    if isString p && match "/[^[:cntrl:][:space:]\\]*" p != null then
      replaceStrings [ "%" ] [ "%%" ] p
    else
      fail "credentials.${id} (an absolute host path without whitespace, control characters or backslashes)" p;
  creds =
    if !(isAttrs credentials) then
      fail "credentials (attrs of ID = host path)" credentials
    else
      map (id: {
        id = checkCredId id;
        path = checkCredPath id credentials.${id};
      }) (attrNames credentials);

  healthUnit = "mcp-unikernel-health@${n}.service";
  healthTimer = "mcp-unikernel-health@${n}.timer";

  line = key: values: if values == [ ] then [ ] else [ "${key}=${concatStringsSep " " values}" ];
  text = lines: concatStringsSep "\n" lines + "\n";
  # src/credentials.rs MISSING_PREFIX
  missingPrefix = "mcp-unikernel: credential file missing: ";
in
{
  vmUnit = "mcp-unikernel@${n}.service";
  buildUnit = "mcp-unikernel-build@${n}.service";

  vmDropin = text (
    [ "[Unit]" ]
    ++ line "X-Restart-Triggers" triggers
    ++ line "Requires" (req ++ deps)
    ++ line "BindsTo" binds
    # Units it requires or is bound to are also ordered before it (so a
    # dependency with readiness gates this VM until it answers).
    ++ line "After" (aft ++ filter (u: !(builtins.elem u aft)) (req ++ deps ++ binds))
    ++ line "Wants" (if hc == null then [ ] else [ healthTimer ])
    # A start now lasts up to the readiness timeout: the template's start
    # limit (5 in 60 s) would never end a loop of starts that time out, so
    # the window grows with it (five failed starts in a row end in failed).
    ++ (if ready == null then [ ] else [ "StartLimitIntervalSec=${toString (5 * (ready.timeout + 30))}" ])
    ++ [
      ""
      "[Service]"
      "Restart=${r}"
      "TimeoutStopSec=${toString (stop + 45)}"
    ]
    # The template allows no IP sockets (a bridged guest's traffic is on its
    # TAP); user-mode networking is QEMU talking IP on the guest's behalf.
    ++ (if userNet then [ "RestrictAddressFamilies=AF_INET AF_INET6" "IPAddressDeny=" ] else [ ])
    # The unit is active once the guest answers; the probe needs an IPv4
    # socket to exactly the address it connects to, nothing else.
    ++ (
      if ready == null then
        [ ]
      else
        [
          "ExecStartPost=${helperPath} wait-ready ${n}"
          "TimeoutStartSec=${toString (ready.timeout + 30)}"
          "RestrictAddressFamilies=AF_INET"
          "IPAddressAllow=${ready.address}"
        ]
    )
  );

  inherit healthUnit healthTimer;
  healthDropin =
    if hc == null then
      null
    else
      text [
        "[Service]"
        "IPAddressAllow=${ready.address}"
        "TimeoutStartSec=${toString (hc.timeout + 30)}"
      ];
  healthTimerDropin =
    if hc == null then
      null
    else
      text [
        "[Timer]"
        "OnActiveSec="
        "OnActiveSec=${toString hc.interval}s"
        "OnUnitActiveSec=${toString hc.interval}s"
      ];

  buildDropin = text (
    [
      "[Service]"
      "TimeoutStartSec=${toString build}"
    ]
    ++ (if net then [ "PrivateNetwork=no" ] else [ ])
    # systemd puts each host file into $CREDENTIALS_DIRECTORY; when one is
    # missing the fallback value says which (src/credentials.rs), so the
    # build fails naming it.
    ++ builtins.concatMap (c: [
      "LoadCredential=${c.id}:${c.path}"
      "SetCredential=${c.id}:${missingPrefix}${c.path}"
    ]) creds
  );
}
