#!/usr/bin/env bash
# Nix tests for mcp-unikernel.
#  1. parse every .nix file in the repository (always runs);
#  2. module evaluation tests: lib.evalModules on nixos/module.nix with the
#     stand-ins in tests/nix/standins.nix and a nixpkgs lib tree from
#     NIXPKGS_LIB (the directory holding lib/, or lib/ itself); each test is
#     reported "skipped: <name> (NIXPKGS_LIB unset)" without it;
#  3. with MCP_HELPER (the helper binary) the generated JSON goes through
#     `mcp-unikernel check-config`; the nft ruleset is loaded with `nft -c -f`
#     in a throwaway network namespace (needs root and nft).
# Skips are also appended to $MCP_SKIP_LOG when set; KEEP_WORK=1 keeps the
# scratch dir (generated JSON, ruleset, rendered unit). Last line:
#   nix: N passed, N failed, N skipped
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export NIX_CONFIG=${NIX_CONFIG:-$'substituters =\nexperimental-features = nix-command flakes'}

passed=0 failed=0 skipped=0
work=$(mktemp -d)
netns=""
cleanup() {
  [ -n "$netns" ] && ip netns delete "$netns" 2>/dev/null
  [ -n "${KEEP_WORK:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

pass() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAILED: $1${2:+ -- $2}"; failed=$((failed + 1)); }
skip() {
  echo "skipped: $1 ($2)"
  skipped=$((skipped + 1))
  [ -n "${MCP_SKIP_LOG:-}" ] && echo "skipped: $1 ($2)" >>"$MCP_SKIP_LOG"
  return 0
}

# ---- 1. parse --------------------------------------------------------------
while IFS= read -r -d '' f; do
  if out=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then
    pass "parse ${f#./}"
  else
    fail "parse ${f#./}" "$out"
  fi
done < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' -print0 | sort -z)

# ---- 2. module evaluation ---------------------------------------------------
EVAL_TESTS=(
  units-exec-lines units-hardening units-systemd-verify instance-dropins target-and-prune disabled-and-autostart
  json-schema json-check-config json-check-config-user-mode derive-matches-helper
  bridge-and-firewall bridge-mac-null nft-ruleset-loads
  assert-duplicate-ip assert-ip-outside-subnet assert-ip-is-gateway assert-ip-network-address
  assert-ip-broadcast-address assert-ip-invalid assert-ip-missing assert-bridge-name-too-long
  assert-tap-collision assert-volume-target-relative assert-user-mode-ip
  assert-bridge-mode-ports assert-name-invalid assert-bridge-mac-invalid assert-nftables-disabled good-config-no-assertions
  checks-evaluate
)

libdir=""
if [ -n "${NIXPKGS_LIB:-}" ]; then
  if [ -f "$NIXPKGS_LIB/lib/default.nix" ]; then libdir="$NIXPKGS_LIB/lib"
  elif [ -f "$NIXPKGS_LIB/default.nix" ]; then libdir="$NIXPKGS_LIB"
  else fail "NIXPKGS_LIB" "no lib/default.nix under $NIXPKGS_LIB"; fi
fi

if [ -z "$libdir" ]; then
  for t in "${EVAL_TESTS[@]}"; do skip "nix-eval $t" "NIXPKGS_LIB unset"; done
  echo "nix: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
  exit
fi

# The module imports ./lib/nftables.nix (written separately). If it is not
# there yet, evaluate a copy of nixos/ with an empty stub; the ruleset test is
# then skipped.
module="$ROOT/nixos/module.nix"
have_nft_lib=1
if [ ! -f "$ROOT/nixos/lib/nftables.nix" ]; then
  have_nft_lib=0
  cp -r "$ROOT/nixos" "$work/nixos"
  cat >"$work/nixos/lib/nftables.nix" <<'STUB'
# temporary stub (tests only): the real file is nixos/lib/nftables.nix
{ bridge, gateway, prefixLength, allowedTCPPorts, allowedUDPPorts, vms }:
{ ruleset = ""; tables = { mcp-stub = { family = "inet"; content = ""; }; }; }
STUB
  module="$work/nixos/module.nix"
fi

vol="$work/volume"
mkdir -p "$vol"
ELF=$(readlink -f /bin/sh)

# A valid configuration: two bridged unikernels and one in user mode.
# program is an existing ELF on this machine (check-config wants one).
GOOD="{ lib, ... }: {
  services.mcp.unikernels.web = {
    program = \"$ELF\";
    args = [ \"--file\" \"/srv/www/index.html\" ];
    env.RUST_LOG = \"info\";
    volumes = [ { source = \"$vol\"; target = \"/srv/www\"; } ];
    network.ip = \"10.99.0.2\";
    memory = 128;
    accel = \"tcg\";
    klibs = [ \"ntp\" ];
    extraOpsConfig.ManifestPassthrough.futex_trace = \"f\";
  };
  services.mcp.unikernels.a-rather-long-name = {
    program = \"$ELF\";
    network.ip = \"10.99.0.3\";
    stopTimeout = 10;
    restart = \"always\";
  };
  services.mcp.unikernels.usermode = {
    program = \"$ELF\";
    network.mode = \"user\";
    network.ports = [ { host = 18080; guest = 8080; } ];
  };
  services.mcp.unikernels.manual = {
    program = \"$ELF\";
    network.ip = \"10.99.0.4\";
    autoStart = false;
  };
  services.mcp.unikernels.off = {
    program = \"$ELF\";
    network.ip = \"10.99.0.5\";
    enable = false;
  };
}"

# ev CONFIG EXPR: JSON of EXPR, evaluated with the attributes of
# tests/nix/eval.nix (failedAssertions, services, json, nftRuleset ...) in scope.
ev() {
  nix-instantiate --eval --strict --json -E "
    let r = import $ROOT/tests/nix/eval.nix {
          nixpkgsLib = $libdir; moduleFile = $module; config = $1; };
    in with r; $2"
}
# py CODE: runs CODE with the JSON on stdin as `d`; exit status = verdict
py() { python3 -c "import json,sys; d=json.load(sys.stdin)
$1"; }

# check NAME CONFIG EXPR PYTHON
check() {
  local name=$1 out msg
  if ! out=$(ev "$2" "$3" 2>&1); then fail "nix-eval $name" "$(echo "$out" | tail -5)"; return; fi
  if msg=$(printf '%s' "$out" | py "$4" 2>&1); then pass "nix-eval $name"; else fail "nix-eval $name" "$msg"; fi
}

check units-exec-lines "$GOOD" services '
t = d["mcp-unikernel@"]["serviceConfig"]
h = "/nix/store/00000000000000000000000000000000-mcp-unikernel/bin/mcp-unikernel"
assert t["ExecStart"] == h + " start %i", t["ExecStart"]
assert t["ExecStop"] == h + " stop %i", t["ExecStop"]
assert t["ExecStopPost"] == h + " cleanup %i", t["ExecStopPost"]
assert t["Type"] == "exec", t["Type"]
assert "0" in t["SuccessExitStatus"], t["SuccessExitStatus"]
assert t["StateDirectory"] == "mcp-unikernel/%i" and t["RuntimeDirectory"] == "mcp-unikernel/%i"
'

check units-hardening "$GOOD" services '
t = d["mcp-unikernel@"]["serviceConfig"]
want = {"ProtectSystem": "strict", "ProtectHome": True, "PrivateTmp": True, "NoNewPrivileges": True,
        "DevicePolicy": "closed", "RestrictSUIDSGID": True, "ProtectKernelModules": True,
        "SystemCallArchitectures": "native", "AmbientCapabilities": ""}
for k, v in want.items():
    assert t.get(k) == v, (k, t.get(k))
assert sorted(t["DeviceAllow"]) == ["/dev/kvm rw", "/dev/net/tun rw"], t["DeviceAllow"]
assert set(t["RestrictAddressFamilies"]) == {"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"}
caps = set(t["CapabilityBoundingSet"])
assert caps == {"CAP_NET_ADMIN","CAP_SETUID","CAP_SETGID","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_DAC_READ_SEARCH"}, caps
f = t["SystemCallFilter"]
assert "@system-service" in f and "seccomp" in f, f
assert any(x.startswith("~") and "@mount" in x for x in f), f
assert "MemoryDenyWriteExecute" not in t, "TCG needs W+X"
'

# Render the template as NixOS does (lists -> repeated keys) with the helper
# replaced by /bin/true, and let systemd-analyze check every directive.
if ! command -v systemd-analyze >/dev/null; then
  skip "nix-eval units-systemd-verify" "systemd-analyze not installed"
elif ! out=$(ev "$GOOD" services 2>&1); then
  fail "nix-eval units-systemd-verify" "$(echo "$out" | tail -5)"
else
  mkdir -p "$work/units"
  printf '%s' "$out" | py "
import re
t = d['mcp-unikernel@']['serviceConfig']
lines = ['[Unit]', 'Description=mcp unikernel %i', '[Service]']
for k, v in t.items():
    for x in (v if isinstance(v, list) else [v]):
        x = ('true' if x else 'false') if isinstance(x, bool) else str(x)
        lines.append(k + '=' + re.sub(r'/nix/store/[^ ]*/bin/mcp-unikernel', '/bin/true', x))
open('$work/units/mcp-unikernel@web.service', 'w').write('\\n'.join(lines) + '\\n')
"
  if o=$(cd "$work/units" && systemd-analyze verify ./mcp-unikernel@web.service 2>&1) && [ -z "$o" ]; then
    pass "nix-eval units-systemd-verify"
  else
    fail "nix-eval units-systemd-verify" "$o"
  fi
fi

check instance-dropins "$GOOD" services '
w = d["mcp-unikernel@web"]
assert w["overrideStrategy"] == "asDropin"
assert "wantedBy" not in w, "instances are pulled in by the target Wants="
assert len(w["restartTriggers"]) == 1 and w["restartTriggers"][0].endswith("mcp-unikernel-web.json"), w["restartTriggers"]
assert w["serviceConfig"]["Restart"] == "on-failure"
assert w["serviceConfig"]["TimeoutStopSec"] == 45
assert "sys-subsystem-net-devices-mcp\\x2dbr0.device" in w["bindsTo"], w["bindsTo"]
l = d["mcp-unikernel@a-rather-long-name"]
assert l["serviceConfig"]["Restart"] == "always"
u = d["mcp-unikernel@usermode"]
assert "bindsTo" not in u, "user mode must not need the bridge"
'

check target-and-prune "$GOOD" services '
p = d["mcp-unikernels-prune"]
assert p["wantedBy"] == ["mcp-unikernels.target"]
s = p["script"]
for n in ("web", "a-rather-long-name", "usermode", "manual"):
    assert "mcp-unikernel@%s.service" % n in s, n
assert "mcp-unikernel@off.service" not in s
assert p["restartTriggers"], "prune must rerun when the set of names changes"
'

check disabled-and-autostart "$GOOD" '{ manual = services ? "mcp-unikernel@manual"; off = services ? "mcp-unikernel@off"; inherit etcNames targets; }' '
assert d["manual"] is True, "autoStart = false still has its drop-in"
wants = d["targets"]["mcp-unikernels"]["wants"]
assert sorted(wants) == ["mcp-unikernel@a-rather-long-name.service", "mcp-unikernel@usermode.service", "mcp-unikernel@web.service"], wants
assert d["off"] is False, "disabled unikernel has a drop-in"
assert "mcp-unikernel/off.json" not in d["etcNames"]
assert "mcp-unikernel/manual.json" in d["etcNames"]
assert d["targets"]["mcp-unikernels"]["wantedBy"] == ["multi-user.target"]
'


check json-schema "$GOOD" 'json' '
keys = {"schema_version","name","program","args","env","memory_mib","vcpus","accel","network","volumes",
        "klibs","ops_extra","nanos_dir","ops","qemu","qemu_user","qemu_group","stop_timeout_secs","direct_boot"}
netkeys = {"mode","bridge","ip","prefix_length","gateway","nameservers","tap","mac","ports"}
assert set(d) == {"web","a-rather-long-name","usermode","manual"}, sorted(d)
w = json.loads(d["web"])
assert set(w) == keys, set(w) ^ keys
assert set(w["network"]) == netkeys, set(w["network"]) ^ netkeys
assert w["schema_version"] == 1 and w["name"] == "web" and w["memory_mib"] == 128 and w["accel"] == "tcg"
n = w["network"]
assert (n["mode"], n["bridge"], n["ip"], n["prefix_length"], n["gateway"]) == ("bridge","mcp-br0","10.99.0.2",24,"10.99.0.1"), n
assert n["tap"] == "mcp-web" and n["mac"].startswith("02:") and len(n["mac"]) == 17, n
assert w["volumes"][0]["target"] == "/srv/www" and w["ops_extra"] == {"ManifestPassthrough": {"futex_trace": "f"}}
assert w["qemu"].endswith("/bin/qemu-system-x86_64") and w["ops"].endswith("/bin/ops"), (w["qemu"], w["ops"])
assert w["qemu_user"] == "mcp-qemu" and w["nanos_dir"] is None and w["direct_boot"] is None
l = json.loads(d["a-rather-long-name"])["network"]
assert len(l["tap"]) == 15 and l["tap"].startswith("mcp-a-rath-"), l["tap"]
u = json.loads(d["usermode"])["network"]
assert u["mode"] == "user" and u["ip"] is None and u["tap"] is None and u["mac"] is None, u
assert u["ports"] == [{"host": 18080, "guest": 8080, "protocol": "tcp", "host_address": "127.0.0.1"}], u["ports"]
'

# ---- JSON through the helper -------------------------------------------------
if out=$(ev "$GOOD" json 2>&1); then
  for n in web a-rather-long-name usermode manual; do
    printf '%s' "$out" | py "open('$work/$n.json','w').write(d['$n'])"
  done
  json_ok=1
else
  json_ok=0
fi
helper_check() { # NAME FILE...
  local name=$1; shift
  if [ -z "${MCP_HELPER:-}" ]; then skip "nix-eval $name" "MCP_HELPER unset"; return; fi
  if [ "$json_ok" != 1 ]; then fail "nix-eval $name" "module JSON did not evaluate"; return; fi
  local f o
  for f in "$@"; do
    if ! o=$("$MCP_HELPER" check-config "$f" 2>&1); then fail "nix-eval $name" "$(basename "$f"): $o"; return; fi
  done
  pass "nix-eval $name"
}
helper_check json-check-config "$work/web.json" "$work/a-rather-long-name.json" "$work/manual.json"
helper_check json-check-config-user-mode "$work/usermode.json"

# The helper derives TAP and MAC itself when the JSON leaves them null: both
# implementations must agree.
if [ -z "${MCP_HELPER:-}" ]; then
  skip "nix-eval derive-matches-helper" "MCP_HELPER unset"
elif [ "$json_ok" != 1 ]; then
  fail "nix-eval derive-matches-helper" "module JSON did not evaluate"
else
  bad=""
  for n in web a-rather-long-name; do
    python3 - "$work/$n.json" "$work/$n-derived.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["network"]["tap"] = None; c["network"]["mac"] = None
json.dump(c, open(sys.argv[2], "w"))
PY
    if ! o=$("$MCP_HELPER" check-config "$work/$n-derived.json" 2>&1); then bad="$bad $n: $o"; continue; fi
    want=$(python3 -c "import json; n=json.load(open('$work/$n.json'))['network']; print(n['tap'], n['mac'])")
    got=$(printf '%s' "$o" | python3 -c "import json,sys; n=json.load(sys.stdin)['network']; print(n['tap'], n['mac'])" 2>&1)
    [ "$want" = "$got" ] || bad="$bad $n: module '$want' helper '$got'"
  done
  if [ -z "$bad" ]; then pass "nix-eval derive-matches-helper"; else fail "nix-eval derive-matches-helper" "$bad"; fi
fi

check bridge-and-firewall "$GOOD" 'networking' '
assert d["bridges"]["mcp-br0"]["interfaces"] == [], d["bridges"]
a = d["interfaces"]["mcp-br0"]["ipv4"]["addresses"]
assert a == [{"address": "10.99.0.1", "prefixLength": 24}], a
assert d["nftablesEnable"] is True
assert "mcp-br0" in d["firewall"]["interfaces"]
import hashlib
h = hashlib.sha256(b"mcp-unikernel-bridge:mcp-br0").hexdigest()
want = "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))
assert d["interfaces"]["mcp-br0"].get("macAddress") == want, (d["interfaces"]["mcp-br0"], want)
'
check bridge-mac-null "{ imports = [ ($GOOD) ({ services.mcp.bridge.macAddress = null; }) ]; }" 'networking' '
assert "macAddress" not in d["interfaces"]["mcp-br0"], d["interfaces"]["mcp-br0"]
'

# ---- nft ruleset ------------------------------------------------------------
if [ "$have_nft_lib" != 1 ]; then
  skip "nix-eval nft-ruleset-loads" "nixos/lib/nftables.nix not present"
elif ! command -v nft >/dev/null || ! command -v ip >/dev/null || [ "$(id -u)" != 0 ]; then
  skip "nix-eval nft-ruleset-loads" "needs root, nft and ip"
elif ! rs=$(ev "$GOOD" nftRuleset 2>&1); then
  fail "nix-eval nft-ruleset-loads" "$(echo "$rs" | tail -5)"
else
  printf '%s' "$rs" | py "open('$work/ruleset.nft','w').write(d)"
  netns="mcp-nixtest-$$"
  if ! ip netns add "$netns" 2>"$work/netns.err"; then
    fail "nix-eval nft-ruleset-loads" "ip netns add: $(cat "$work/netns.err")"; netns=""
  elif o=$(ip netns exec "$netns" nft -c -f "$work/ruleset.nft" 2>&1) \
       && grep -q "mcp-web" "$work/ruleset.nft" && grep -q "10.99.0.2" "$work/ruleset.nft"; then
    pass "nix-eval nft-ruleset-loads"
  else
    fail "nix-eval nft-ruleset-loads" "${o:-ruleset does not mention the VMs}"
  fi
  [ -n "$netns" ] && ip netns delete "$netns" 2>/dev/null
  netns=""
fi

# ---- assertions: each bad configuration must fail with its message ---------
# assert_case NAME CONFIG-OVERRIDE REGEX: GOOD plus the override (a module)
assert_case() {
  local name=$1 cfg="{ imports = [ ($GOOD) ($2) ]; }"
  check "$name" "$cfg" failedAssertions "
import re
assert any(re.search(r'''$3''', m) for m in d), d
"
}
WEB='services.mcp.unikernels.web'
assert_case assert-duplicate-ip \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.99.0.3\"; }" \
  'a-rather-long-name and web all use network\.ip = "10\.99\.0\.3"|web and a-rather-long-name all use network\.ip = "10\.99\.0\.3"'
assert_case assert-ip-outside-subnet \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.98.0.2\"; }" \
  'services\.mcp\.unikernels\.web\.network\.ip = "10\.98\.0\.2" is outside the bridge subnet 10\.99\.0\.0/24'
assert_case assert-ip-is-gateway \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.99.0.1\"; }" \
  'unikernels\.web\.network\.ip = "10\.99\.0\.1" is the gateway'
assert_case assert-ip-network-address \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.99.0.0\"; }" \
  'unikernels\.web\.network\.ip = "10\.99\.0\.0" is the network address'
assert_case assert-ip-broadcast-address \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.99.0.255\"; }" \
  'unikernels\.web\.network\.ip = "10\.99\.0\.255" is the broadcast address'
assert_case assert-ip-invalid \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.99.0.300\"; }" \
  'unikernels\.web\.network\.ip = "10\.99\.0\.300" is not a dotted IPv4 address'
assert_case assert-ip-missing \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce null; }" \
  'unikernels\.web\.network\.ip must be set when network\.mode = "bridge"'
assert_case assert-bridge-name-too-long \
  "{ services.mcp.bridge.name = \"mcp-bridge-too-long\"; }" \
  'services\.mcp\.bridge\.name = "mcp-bridge-too-long" is not a valid interface name'
# A short name spelled like the shortened form of a long one gets the same TAP.
long=aaaaaa-long-name
short="aaaaaa-$(printf '%s' "$long" | sha256sum | cut -c1-4)"
assert_case assert-tap-collision \
  "{ services.mcp.unikernels.$long = { program = \"$ELF\"; network.ip = \"10.99.0.20\"; };
     services.mcp.unikernels.$short = { program = \"$ELF\"; network.ip = \"10.99.0.21\"; }; }" \
  "(${long} and ${short}|${short} and ${long}) collide after shortening to the TAP name \"mcp-${short}\""
assert_case assert-volume-target-relative \
  "{ $WEB.volumes = [ { source = \"$vol\"; target = \"srv/data\"; } ]; }" \
  'unikernels\.web\.volumes: target "srv/data" .* is not an absolute path'
assert_case assert-user-mode-ip \
  "{ services.mcp.unikernels.usermode.network.ip = \"10.99.0.9\"; }" \
  'unikernels\.usermode\.network\.ip = "10\.99\.0\.9" is a bridge-only setting, but network\.mode = "user"'
assert_case assert-bridge-mode-ports \
  "{ $WEB.network.ports = [ { host = 8080; guest = 8080; } ]; }" \
  'unikernels\.web\.network\.ports = \[ 8080:8080/tcp \] only applies to network\.mode = "user"'
assert_case assert-name-invalid \
  "{ services.mcp.unikernels.Bad_Name = { program = \"$ELF\"; network.ip = \"10.99.0.30\"; }; }" \
  'unikernels\.Bad_Name: the name "Bad_Name" must match'
assert_case assert-bridge-mac-invalid \
  "{ services.mcp.bridge.macAddress = \"03:00:00:00:00:01\"; }" \
  'services\.mcp\.bridge\.macAddress = "03:00:00:00:00:01" is not a unicast MAC address'
assert_case assert-nftables-disabled \
  "{ lib, ... }: { networking.nftables.enable = lib.mkForce false; }" \
  'services\.mcp\.firewall\.enable needs networking\.nftables\.enable = true'
check good-config-no-assertions "$GOOD" failedAssertions 'assert d == [], d'

# ---- checks/: evaluate the nixosTests as far as a lib-only tree allows -------
# runNixOSTest is a STAND-IN returning its argument (tests/nix/stub-pkgs.nix);
# each node's configuration is evaluated with the module and the stand-ins
# (unknown NixOS options are accepted as free-form values) and must pass the
# module's assertions; the test script must be a non-empty program with asserts.
if out=$(nix-instantiate --eval --strict --json "$ROOT/tests/nix/eval-checks.nix" \
           --arg nixpkgsLib "$libdir" --arg moduleFile "$module" 2>&1); then
  if msg=$(printf '%s' "$out" | py '
assert set(d) == {"unikernel-basic","unikernel-isolation","unikernel-kill-restart","unikernel-reconfigure"}, sorted(d)
for name, t in d.items():
    assert t["name"].startswith("mcp-unikernel-"), t["name"]
    s = t["testScript"]
    assert len(s) > 200 and ("assert " in s or ".fail(" in s), name
    compile(s, name, "exec")  # the script is valid Python
    assert t["nodes"], name
    for node, n in t["nodes"].items():
        assert n["failedAssertions"] == [], (name, node, n["failedAssertions"])
    assert any(n["unikernels"] for n in t["nodes"].values()), name
r = d["unikernel-reconfigure"]["nodes"]
assert r["machine/specialisation/changed"]["unikernels"] == ["other", "web"], r
assert r["machine/specialisation/removed"]["unikernels"] == ["web"], r
' 2>&1); then pass "nix-eval checks-evaluate"; else fail "nix-eval checks-evaluate" "$msg"; fi
else
  fail "nix-eval checks-evaluate" "$(echo "$out" | tail -5)"
fi

echo "nix: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
