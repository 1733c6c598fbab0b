# Evaluation tests of readiness, health, dependsOn and credentials (issue 14;
# nixos/host/ready.nix, nixos/host/ready-args.nix, nixos/lib/units.nix,
# nixos/lib/credentials.nix). Sourced by run-eval-tests.sh, which defines
# check, assert_case, with_good, ev, py, helper_check, fl and GOOD; the test
# names are listed here so that a run without NIXPKGS_LIB reports them skipped.
READY_EVAL_TESTS=(
  ready-defaults-change-nothing ready-tcp-dropin ready-http-json ready-user-mode-probe-address
  ready-health-units ready-depends-on-ordering ready-credentials-build-dropin
  ready-credentials-json-names-only ready-credentials-activation-script
  ready-credentials-activation-after-secrets ready-json-check-config ready-units-systemd-verify
  ready-option-types ready-flake-installs-health-units
  assert-readiness-both assert-readiness-neither assert-readiness-http-path
  assert-readiness-user-mode-no-forward assert-health-needs-readiness assert-health-timeout
  assert-depends-on-unknown assert-depends-on-disabled assert-depends-on-self assert-depends-on-cycle
  assert-credentials-name assert-credentials-relative assert-credentials-store-path
  assert-credentials-store-context assert-credentials-target-root assert-credentials-target-nested
  assert-credentials-shared-group
)

ready_tests() {
  local WEB='services.mcp.unikernels.web' UM='services.mcp.unikernels.usermode'
  local dropins='{ inherit units json; }'

  # Nothing changes for a unikernel without the new options.
  check ready-defaults-change-nothing "$GOOD" '{ inherit units json activationScripts; }' '
w = json.loads(d["json"]["web"])
assert w["readiness"] is None and w["health"] is None, w
assert w["credentials"] == [] and w["credentials_target"] == "/run/secrets", w
t = ini(d["units"]["mcp-unikernel@web.service"]["text"])
assert not get(t, "Service", "ExecStartPost") and not get(t, "Service", "TimeoutStartSec"), t
assert not get(t, "Service", "IPAddressAllow") and not get(t, "Unit", "Wants"), t
assert not [n for n in d["units"] if "health" in n], sorted(d["units"])
b = ini(d["units"]["mcp-unikernel-build@web.service"]["text"])
assert not get(b, "Service", "LoadCredential"), b
assert "mcp-unikernel-credentials" not in d["activationScripts"], d["activationScripts"]
'

  check ready-tcp-dropin "$(with_good "{ $WEB.readiness = { tcp = 8080; timeout = 20; }; }")" "$dropins" '
t = ini(d["units"]["mcp-unikernel@web.service"]["text"])
post = get(t, "Service", "ExecStartPost")
assert len(post) == 3 and post[0].endswith("/bin/mcp-unikernel") and post[1:] == ["wait-ready", "web"], post
assert get(t, "Service", "TimeoutStartSec") == ["50"], ("timeout + 30", t)
assert get(t, "Unit", "StartLimitIntervalSec") == ["250"], ("5 x (timeout + 30): a loop of timed-out starts ends", t)
assert get(t, "Service", "RestrictAddressFamilies") == ["AF_INET"], t
assert get(t, "Service", "IPAddressAllow") == ["10.99.0.2"], ("the VM address only", t)
assert json.loads(d["json"]["web"])["readiness"] == {"tcp": 8080, "http": None, "timeout_secs": 20}
'

  check ready-http-json "$(with_good "{ $WEB.readiness.http = { port = 8080; path = \"/healthz\"; expectStatus = 204; }; }")" 'json' '
r = json.loads(d["web"])["readiness"]
assert r == {"tcp": None, "http": {"port": 8080, "path": "/healthz", "expect_status": 204}, "timeout_secs": 60}, r
'

  check ready-user-mode-probe-address "$(with_good "{ $UM.readiness.tcp = 8080; $UM.network.ports = [ { host = 18081; guest = 9090; } ]; }")" "$dropins" '
t = ini(d["units"]["mcp-unikernel@usermode.service"]["text"])
assert get(t, "Service", "IPAddressAllow") == ["127.0.0.1"], ("the forward host address", t)
assert "AF_INET" in get(t, "Service", "RestrictAddressFamilies"), t
'

  check ready-health-units "$(with_good "{ $WEB.readiness.tcp = 8080; $WEB.health = { interval = 7; failures = 4; timeout = 2; }; }")" '{ inherit units json; }' '
U = d["units"]
t = ini(U["mcp-unikernel@web.service"]["text"])
assert get(t, "Unit", "Wants") == ["mcp-unikernel-health@web.timer"], t
s = U["mcp-unikernel-health@web.service"]
assert s["overrideStrategy"] == "asDropin", s
s = ini(s["text"])
assert get(s, "Service", "IPAddressAllow") == ["10.99.0.2"] and get(s, "Service", "TimeoutStartSec") == ["32"], s
tm = U["mcp-unikernel-health@web.timer"]
assert tm["overrideStrategy"] == "asDropin", tm
assert tm["text"] == "[Timer]\nOnActiveSec=\nOnActiveSec=7s\nOnUnitActiveSec=7s\n", tm["text"]
assert json.loads(d["json"]["web"])["health"] == {"interval_secs": 7, "failures": 4, "timeout_secs": 2}
assert "mcp-unikernel-health@manual.timer" not in U
'

  check ready-depends-on-ordering "$(with_good "{ $WEB.dependsOn = [ \"manual\" \"usermode\" ]; services.mcp.unikernels.manual.readiness.tcp = 5432; }")" "$dropins" '
t = ini(d["units"]["mcp-unikernel@web.service"]["text"])
for u in ("mcp-unikernel@manual.service", "mcp-unikernel@usermode.service"):
    assert u in get(t, "Unit", "Requires") and u in get(t, "Unit", "After"), (u, t)
m = ini(d["units"]["mcp-unikernel@manual.service"]["text"])
assert get(m, "Service", "ExecStartPost")[1:] == ["wait-ready", "manual"], ("the dependency gates with its readiness", m)
assert not [u for u in get(m, "Unit", "Requires") if u.startswith("mcp-unikernel@")], m
'

  local CRED="{ $WEB.credentials = { \"tls.key\" = \"/run/secrets/web-tls.key\"; \"db_pw\" = \"/run/agenix/db%pw\"; }; }"
  check ready-credentials-build-dropin "$(with_good "$CRED")" "$dropins" '
b = d["units"]["mcp-unikernel-build@web.service"]["text"]
lines = b.splitlines()
assert "LoadCredential=tls.key:/run/secrets/web-tls.key" in lines, b
assert "SetCredential=tls.key:mcp-unikernel: credential file missing: /run/secrets/web-tls.key" in lines, b
assert "LoadCredential=db_pw:/run/agenix/db%%pw" in lines, ("% is a specifier: doubled", b)
v = d["units"]["mcp-unikernel@web.service"]["text"]
assert "Credential" not in v, ("only the build loads them", v)
'

  check ready-credentials-json-names-only "$(with_good "$CRED")" '{ inherit json jsonContext; }' '
w = json.loads(d["json"]["web"])
assert w["credentials"] == ["db_pw", "tls.key"] and w["credentials_target"] == "/run/secrets", w
assert "/run/secrets/web-tls.key" not in d["json"]["web"] and "agenix" not in d["json"]["web"], "host paths in the JSON"
assert not [p for p in d["jsonContext"]["web"] if "secret" in p], d["jsonContext"]["web"]
'

  check ready-credentials-activation-script "$(with_good "$CRED")" 'activationScripts' '
a = d["mcp-unikernel-credentials"]
assert a["deps"] == ["etc"] and a["supportsDryActivation"] is True, a
s = a["text"]
assert "/run/nixos/activation-restart-list" in s and "/run/nixos/dry-activation-restart-list" in s, s
line = [l for l in s.splitlines() if "credentials-changed" in l][0]
assert "/bin/mcp-unikernel\x27 credentials-changed \x27web\x27 \x27db_pw=/run/agenix/db%pw\x27 \x27tls.key=/run/secrets/web-tls.key\x27 >>\"$_mcp_list\"" in line, line
assert "manual" not in s, "only unikernels with credentials"
import subprocess
r = subprocess.run(["bash", "-n"], input=s, text=True, capture_output=True)
assert r.returncode == 0, r.stderr
'

  check ready-credentials-activation-after-secrets "$(with_good "{ imports = [ ($CRED) ]; system.activationScripts.setupSecrets = \"true\"; system.activationScripts.agenix = { text = \"true\"; }; }")" 'activationScripts' '
assert d["mcp-unikernel-credentials"]["deps"] == ["etc", "setupSecrets", "agenix"], d["mcp-unikernel-credentials"]
'

  # The module's JSON with every new field goes through the helper.
  if [ -z "${MCP_HELPER:-}" ]; then
    skip "nix-eval ready-json-check-config" "MCP_HELPER unset"
  elif ! out=$(ev "$(with_good "{ $WEB.readiness.http.port = 8080; $WEB.health = { }; $WEB.credentials.\"tls.key\" = \"/run/secrets/x\"; $UM.readiness.tcp = 8080; }")" json); then
    fail "nix-eval ready-json-check-config" "$(nixerr)"
  else
    printf '%s' "$out" | py "open('$work/ready-web.json','w').write(d['web']); open('$work/ready-um.json','w').write(d['usermode'])"
    helper_check ready-json-check-config "$work/ready-web.json" "$work/ready-um.json"
  fi

  # The package's units plus every drop-in of a VM with readiness, health,
  # dependsOn and credentials load cleanly (systemd-analyze verify).
  if ! command -v systemd-analyze >/dev/null; then
    skip "nix-eval ready-units-systemd-verify" "systemd-analyze not installed"
  elif ! out=$(ev "$(with_good "{ $WEB.readiness.tcp = 8080; $WEB.health = { }; $WEB.dependsOn = [ \"manual\" ]; $WEB.credentials.\"tls.key\" = \"/run/secrets/x\"; }")" "$dropins"); then
    fail "nix-eval ready-units-systemd-verify" "$(nixerr)"
  else
    local u=$work/ready-units f o
    mkdir -p "$u"
    for f in "$ROOT"/systemd/*; do
      sed -e 's|@helper@|/bin/true|g' -e 's|@systemctl@|/bin/true|g' -e "s|@nft@|$(command -v nft || echo /bin/true)|g" "$f" >"$u/$(basename "$f" .in)"
    done
    printf '%s' "$out" | py "
import os
for n, v in d['units'].items():
    if n.startswith('mcp-unikernel') and (n.endswith('@web.service') or n.endswith('@web.timer') or n.endswith('@manual.service')):
        os.makedirs('$u/' + n + '.d', exist_ok=True)
        open('$u/' + n + '.d/overrides.conf', 'w').write(v['text'].replace('/nix/store/00000000000000000000000000000000-mcp-unikernel/bin/mcp-unikernel', '/bin/true'))
"
    if o=$(cd "$u" && SYSTEMD_UNIT_PATH="$u:" systemd-analyze verify --man=no mcp-unikernel@web.service mcp-unikernel-build@web.service \
             mcp-unikernel-health@web.service mcp-unikernel-health@web.timer 2>&1 | grep -v -e 'not found' -e 'Unit .* is not loaded'); [ -z "$o" ]; then
      pass "nix-eval ready-units-systemd-verify"
    else
      fail "nix-eval ready-units-systemd-verify" "$o"
    fi
  fi

  # Type errors of the options themselves (before any assertion).
  local bad=""
  for expr in "$WEB.readiness.tcp = 0;" "$WEB.readiness.tcp = 70000;" "$WEB.health.failures = 0;" \
              "$WEB.readiness.http.expectStatus = 99;" "$WEB.credentials.\"k\" = /etc/hostname;" \
              "$WEB.dependsOn = \"manual\";"; do
    if ev "$(with_good "{ $expr }")" 'eval.config.services.mcp.unikernels.web' >/dev/null; then
      bad="$bad [accepted: $expr]"
    elif ! grep -q 'services\.mcp\.unikernels\.web\.' "$work/stderr"; then
      bad="$bad [$expr: not refused by its option: $(nixerr)]"
    fi
  done
  if [ -z "$bad" ]; then pass "nix-eval ready-option-types"; else fail "nix-eval ready-option-types" "$bad"; fi

  fl ready-flake-installs-health-units 'helperPostInstall' '
assert "systemd/*.timer" in d, ("the timer unit is not installed", d)
assert re.search(r"--subst-var-by systemctl \"/nix/store/[^\"]*systemd[^\"]*/bin/systemctl\"", d), d
assert "@systemctl@" in d, ("the placeholder check", d)
'

  assert_case assert-readiness-both "{ $WEB.readiness = { tcp = 8080; http.port = 8080; }; }" \
    'unikernels\.web\.readiness: set exactly one of tcp and http \(got both\)'
  assert_case assert-readiness-neither "{ $WEB.readiness = { timeout = 5; }; }" \
    'unikernels\.web\.readiness: set exactly one of tcp and http \(got neither\)'
  assert_case assert-readiness-http-path "{ $WEB.readiness.http = { port = 8080; path = \"health z\"; }; }" \
    'unikernels\.web\.readiness\.http\.path = "health z" must start with /'
  assert_case assert-readiness-user-mode-no-forward "{ $UM.readiness.tcp = 9090; }" \
    'unikernels\.usermode\.readiness probes guest port 9090, but in network\.mode = "user" .* add a tcp forward of guest port 9090'
  assert_case assert-health-needs-readiness "{ $WEB.health = { }; }" \
    'unikernels\.web\.health needs services\.mcp\.unikernels\.web\.readiness'
  assert_case assert-health-timeout "{ $WEB.readiness.tcp = 8080; $WEB.health = { interval = 2; timeout = 3; }; }" \
    'unikernels\.web\.health\.timeout = 3 is longer than health\.interval = 2'
  assert_case assert-depends-on-unknown "{ $WEB.dependsOn = [ \"nope\" ]; }" \
    'unikernels\.web\.dependsOn: there is no unikernel "nope"'
  assert_case assert-depends-on-disabled "{ $WEB.dependsOn = [ \"off\" ]; }" \
    'unikernels\.web\.dependsOn: the unikernel "off" is not enabled'
  assert_case assert-depends-on-self "{ $WEB.dependsOn = [ \"web\" ]; }" \
    'dependsOn has a cycle: web -> web\.'
  assert_case assert-depends-on-cycle "{ $WEB.dependsOn = [ \"manual\" ]; services.mcp.unikernels.manual.dependsOn = [ \"usermode\" ]; $UM.dependsOn = [ \"web\" ]; }" \
    'dependsOn has a cycle: manual -> usermode -> web -> manual\.'
  assert_case assert-credentials-name "{ $WEB.credentials.\"a/b\" = \"/run/secrets/x\"; }" \
    'unikernels\.web\.credentials\."a/b": the name must match'
  assert_case assert-credentials-relative "{ $WEB.credentials.\"k\" = \"secrets/k\"; }" \
    'unikernels\.web\.credentials\."k" = "secrets/k" must be an absolute host path'
  assert_case assert-credentials-store-path "{ $WEB.credentials.\"k\" = \"/nix/store/00000000000000000000000000000000-k\"; }" \
    'unikernels\.web\.credentials\."k" = "/nix/store/0{32}-k" is in the Nix store'
  assert_case assert-credentials-store-context "{ pkgs, ... }: { $WEB.credentials.\"k\" = \"\${pkgs.writeText \"k\" \"s3cret\"}\"; }" \
    'unikernels\.web\.credentials\."k" = "/nix/store/[^"]*-k" is in the Nix store'
  assert_case assert-credentials-target-root "{ $WEB.credentials.\"k\" = \"/run/secrets/k\"; $WEB.credentialsTarget = \"/\"; }" \
    'unikernels\.web\.credentialsTarget = "/" must be an absolute guest directory'
  assert_case assert-credentials-target-nested "{ $WEB.credentials.\"k\" = \"/run/secrets/k\"; $WEB.credentialsTarget = \"/srv/www/keys\"; }" \
    'unikernels\.web\.credentialsTarget = "/srv/www/keys" is nested with the volume target "/srv/www"'
  assert_case assert-credentials-shared-group "{ $WEB.credentials.\"k\" = \"/run/secrets/k\"; users.users.alice = { group = \"users\"; extraGroups = [ \"mcp-vm-web\" ]; }; }" \
    'unikernels\.web\.credentials: the VM.s image holds them and is readable by its group "mcp-vm-web", which alice also has'
}
