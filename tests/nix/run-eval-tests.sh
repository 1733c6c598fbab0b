#!/usr/bin/env bash
# Nix tests for mcp-unikernel.
#  1. parse every .nix file in the repository (always runs);
#  2. module evaluation tests: lib.evalModules on nixos/module.nix with the
#     stand-ins in tests/nix/standins.nix and a nixpkgs lib tree from
#     NIXPKGS_LIB (the directory holding lib/, or lib/ itself); each test is
#     reported "skipped: <name> (NIXPKGS_LIB unset)" without it; flake.nix's
#     outputs are evaluated with a stand-in nixpkgs input (eval-flake.nix) and
#     checks/*.nix with a stand-in runNixOSTest (eval-checks.nix);
#  3. with MCP_HELPER (the helper binary) the generated JSON goes through
#     `mcp-unikernel check-config`; the nft ruleset and its removal are loaded
#     in a throwaway network namespace (needs root and nft); with systemd's
#     systemd-analyze and the package's unit files (systemd/), the units plus
#     the module's drop-ins are checked by `systemd-analyze verify`.
# Nix's stderr never reaches the JSON that is parsed (it is kept apart and
# shown when an evaluation fails), and the Nix settings the tests need are
# added to NIX_CONFIG (no substituters, flakes, no build-users-group: a
# machine without a nixbld group otherwise gets a warning on every call).
# Skips are also appended to $MCP_SKIP_LOG when set; KEEP_WORK=1 keeps the
# scratch dir. MCP_UNITS_NIX=FILE evaluates with FILE as nixos/lib/units.nix
# when the tree has none yet (development only). Last line:
#   nix: N passed, N failed, N skipped
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG
}substituters =
experimental-features = nix-command flakes
build-users-group ="
export NIX_CONFIG
# The flake's *-nanos checks depend on it; the evaluation tests must not.
unset MCP_NANOS_DIR

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
  runner-ignores-nix-warnings
  systemd-packages instance-dropins build-dropins dropin-unit-names-valid bridge-device-escaped
  container-no-device-binding networkd-ordering target-wants-and-autostart no-prune-unit
  units-systemd-verify
  json-schema json-qemu-user-per-vm json-volume-limit json-path-literal-in-closure
  json-check-config json-check-config-user-mode derive-matches-helper
  users-per-vm user-name-derivation assert-shared-user assert-shared-group assert-user-root
  assert-user-invalid removed-qemu-user
  restart-values-match-nixos assert-bridge-name-invalid-at assert-bridge-name-invalid-plus
  firewall-unit-on-iptables-host firewall-nixos-nftables firewall-disabled firewall-tap-ingress-hooks
  nft-ruleset-and-removal-load
  bridge-and-firewall bridge-mac-null
  warning-nanos-dir-null nanos-dir-offline-build ops-option-describes-versions
  assert-duplicate-ip assert-ip-outside-subnet assert-ip-is-gateway assert-ip-network-address
  assert-ip-broadcast-address assert-ip-invalid assert-ip-missing assert-bridge-name-too-long
  assert-tap-collision assert-volume-target-relative assert-user-mode-ip
  assert-bridge-mode-ports assert-name-invalid assert-bridge-mac-invalid good-config-no-assertions
  egress-per-vm-ports dns-ntp-defaults dns-ntp-none-by-default assert-nameserver-unreachable assert-nameserver-port-not-allowed
  assert-ntp-klib-without-servers assert-ntp-server-unreachable assert-gateway-ports-user-mode
  on-remove-json-and-gc-unit on-remove-gc-unit-without-unikernels on-remove-rejects-other-values
  flake-ops-package flake-module-defaults flake-checks-default flake-helper-units flake-lock-pinned
  checks-evaluate
)
# readiness, health, dependsOn, credentials (issue 14): tests/nix/ready-tests.sh
. "$ROOT/tests/nix/ready-tests.sh"
EVAL_TESTS+=("${READY_EVAL_TESTS[@]}")

libdir=""
if [ -n "${NIXPKGS_LIB:-}" ]; then
  if [ -f "$NIXPKGS_LIB/lib/default.nix" ]; then libdir="$NIXPKGS_LIB/lib"
  elif [ -f "$NIXPKGS_LIB/default.nix" ]; then libdir="$NIXPKGS_LIB"
  else fail "NIXPKGS_LIB" "no lib/default.nix under $NIXPKGS_LIB"; fi
fi

# flake.lock needs no nixpkgs lib.
lockcheck() {
  python3 - "$ROOT/flake.lock" "$ROOT/flake.nix" <<'PY'
import json, re, sys
lock = json.load(open(sys.argv[1]))
flake = open(sys.argv[2]).read()
url = re.search(r'inputs\.nixpkgs\.url\s*=\s*"github:([^/]+)/([^/]+)/([^"]+)"', flake)
assert url, "flake.nix: inputs.nixpkgs.url is not github:OWNER/REPO/REF"
assert lock["version"] == 7 and lock["root"] == "root", (lock["version"], lock["root"])
assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}, lock["nodes"]["root"]
n = lock["nodes"]["nixpkgs"]
l, o = n["locked"], n["original"]
assert l["type"] == "github" and l["repo"] == "nixpkgs" and l["owner"].lower() == "nixos", l
assert re.fullmatch(r"[0-9a-f]{40}", l["rev"]), l["rev"]
assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", l["narHash"]), l["narHash"]
assert isinstance(l["lastModified"], int) and l["lastModified"] > 1.7e9, l["lastModified"]
# the lock must be for the input flake.nix asks for, else Nix re-locks it
assert (o["type"], o["owner"], o["repo"], o["ref"]) == ("github",) + url.groups(), (o, url.groups())
PY
}
if msg=$(lockcheck 2>&1); then pass "nix-eval flake-lock-pinned"; else fail "nix-eval flake-lock-pinned" "$msg"; fi

if [ -z "$libdir" ]; then
  for t in "${EVAL_TESTS[@]}"; do
    [ "$t" = flake-lock-pinned ] || skip "nix-eval $t" "NIXPKGS_LIB unset"
  done
  echo "nix: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
  exit
fi

# The module imports ./lib/units.nix and ./lib/nftables.nix (written by
# others, merged separately). While one of them is missing (or nftables.nix
# has no `removal` yet), a copy of the tree is evaluated with minimal stubs,
# and the tests that check what those files render are reported skipped.
eroot=$ROOT
units_real=1 removal_real=1
nft_has_removal() {
  [ "$(nix-instantiate --eval --strict -E "(import $ROOT/nixos/lib/nftables.nix {
    bridge = \"b\"; gateway = \"10.0.0.1\"; prefixLength = 24; vms = [ ]; }) ? removal" 2>/dev/null)" = true ]
}
if [ ! -f "$ROOT/nixos/lib/units.nix" ] || ! nft_has_removal; then
  eroot=$work/tree
  mkdir -p "$eroot/tests"
  cp -r "$ROOT/nixos" "$ROOT/checks" "$ROOT/flake.nix" "$ROOT/flake.lock" "$eroot/"
  cp -r "$ROOT/tests/nix" "$ROOT/tests/guest" "$eroot/tests/"
  [ -f "$ROOT/Cargo.lock" ] && cp "$ROOT/Cargo.lock" "$eroot/"
  if [ ! -f "$ROOT/nixos/lib/units.nix" ]; then
    if [ -n "${MCP_UNITS_NIX:-}" ]; then
      echo "note: nixos/lib/units.nix missing, evaluating with MCP_UNITS_NIX=$MCP_UNITS_NIX"
      cp "$MCP_UNITS_NIX" "$eroot/nixos/lib/units.nix"
    else
      units_real=0
      cat >"$eroot/nixos/lib/units.nix" <<'STUB'
# temporary stub (tests only): the real file is nixos/lib/units.nix
{ name, ... }: {
  vmUnit = "mcp-unikernel@${name}.service"; buildUnit = "mcp-unikernel-build@${name}.service";
  vmDropin = "[Unit]\n"; buildDropin = "[Unit]\n";
}
STUB
    fi
  fi
  if ! nft_has_removal; then
    removal_real=0
    mv "$eroot/nixos/lib/nftables.nix" "$eroot/nixos/lib/nftables-without-removal.nix"
    cat >"$eroot/nixos/lib/nftables.nix" <<'STUB'
# temporary stub (tests only): nixos/lib/nftables.nix without its `removal` output
args: import ./nftables-without-removal.nix args // { removal = "# stub\n"; }
STUB
  fi
fi
module="$eroot/nixos/module.nix"
# needs_units NAME / needs_removal NAME: skip (and return 1) while stubbed
needs_units() { [ "$units_real" = 1 ] || { skip "nix-eval $1" "nixos/lib/units.nix not present"; return 1; }; }
needs_removal() { [ "$removal_real" = 1 ] || { skip "nix-eval $1" "nixos/lib/nftables.nix has no removal output"; return 1; }; }

vol="$work/volume"
mkdir -p "$vol"
ELF=$(readlink -f /bin/sh)

# A valid configuration: bridged unikernels, one in user mode, one started by
# hand, one disabled. program is an existing ELF on this machine (check-config
# wants one).
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
    # its own gateway ports: a proxy, DNS and NTP on the host (the ntp klib
    # needs a reachable server)
    network.allowedGatewayTCPPorts = [ 3128 ];
    network.allowedGatewayUDPPorts = [ 53 123 ];
  };
  services.mcp.unikernels.a-rather-long-name-for-a-unikernel = {
    program = \"$ELF\";
    network.ip = \"10.99.0.3\";
    stopTimeout = 10;
    buildTimeout = 60;
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
LONG=a-rather-long-name-for-a-unikernel
with_good() { echo "{ imports = [ ($GOOD) ($1) ]; }"; }

# ev CONFIG EXPR: JSON of EXPR on stdout, evaluated with the attributes of
# tests/nix/eval.nix (failedAssertions, units, json ...) in scope. Nix's
# stderr goes to $work/stderr only.
ev() {
  nix-instantiate --eval --strict --json -E "
    let r = import $eroot/tests/nix/eval.nix {
          nixpkgsLib = $libdir; moduleFile = $module; config = $1; };
    in with r; $2" 2>"$work/stderr"
}
nixerr() { tail -5 "$work/stderr"; }

# py CODE: runs CODE with the JSON on stdin as `d`; exit status = verdict.
# ini(text) parses a unit file: {section: {key: [values...]}}, values split
# at whitespace (repeated keys accumulate, an empty assignment resets).
PYLIB='
import json, re, sys, hashlib
UNIT_NAME = re.compile(r"[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)")
def ini(text):
    out, sec = {}, None
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sec = out.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        k, v = k.strip(), v.strip()
        if v == "":
            sec[k] = []
        else:
            sec.setdefault(k, []).extend(v.split())
    return out
def get(u, sec, key):
    return u.get(sec, {}).get(key, [])
'
py() { python3 -c "$PYLIB
d = json.load(sys.stdin)
$1"; }

# check NAME CONFIG EXPR PYTHON
check() {
  local name=$1 out msg
  if ! out=$(ev "$2" "$3"); then fail "nix-eval $name" "$(nixerr)"; return; fi
  if msg=$(printf '%s' "$out" | py "$4" 2>&1); then pass "nix-eval $name"; else fail "nix-eval $name" "$msg"; fi
}

# ---- the runner itself --------------------------------------------------------
# What broke 30 of 44 tests on a fresh machine: Nix warning on stderr (here
# made to warn on purpose) must not reach the parsed JSON.
if out=$(NIX_CONFIG="$NIX_CONFIG
build-users-group = mcp-no-such-group" ev "$GOOD" 'builtins.attrNames json'); then
  if msg=$(printf '%s' "$out" | py 'assert "web" in d, d' 2>&1); then
    if grep -q "mcp-no-such-group" "$work/stderr"; then pass "nix-eval runner-ignores-nix-warnings"
    else pass "nix-eval runner-ignores-nix-warnings"; echo "  (note: this Nix printed no warning for a missing build-users-group)"; fi
  else fail "nix-eval runner-ignores-nix-warnings" "$msg"; fi
else
  fail "nix-eval runner-ignores-nix-warnings" "$(nixerr)"
fi

# ---- units -------------------------------------------------------------------
check systemd-packages "$GOOD" '{ inherit packages systemPackages; }' '
h = "/nix/store/00000000000000000000000000000000-mcp-unikernel"
assert d["packages"] == [h], d["packages"]
assert h in d["systemPackages"], d["systemPackages"]
'

dropins_expr='{ inherit units jsonFile; }'
if needs_units instance-dropins; then
check instance-dropins "$GOOD" "$dropins_expr" '
U = d["units"]
w = U["mcp-unikernel@web.service"]
assert w["overrideStrategy"] == "asDropin", w
assert w["wantedBy"] == [], "instances are pulled in by the target Wants="
t = ini(w["text"])
assert get(t, "Service", "Restart") == ["on-failure"], t
assert get(t, "Service", "TimeoutStopSec") == ["75"], t
assert d["jsonFile"]["web"] in get(t, "Unit", "X-Restart-Triggers"), (t, d["jsonFile"]["web"])
dev = "sys-subsystem-net-devices-mcp\\x2dbr0.device"
for u in ("mcp-unikernel-firewall.service", "mcp-br0-netdev.service", "network-addresses-mcp-br0.service"):
    assert u in get(t, "Unit", "Requires") and u in get(t, "Unit", "After"), (u, t)
assert get(t, "Unit", "BindsTo") == [dev] and dev in get(t, "Unit", "After"), t
l = ini(U["mcp-unikernel@a-rather-long-name-for-a-unikernel.service"]["text"])
assert get(l, "Service", "Restart") == ["always"] and get(l, "Service", "TimeoutStopSec") == ["55"], l
u = ini(U["mcp-unikernel@usermode.service"]["text"])
assert not get(u, "Unit", "BindsTo") and not get(u, "Unit", "Requires"), ("user mode needs no bridge and no rules", u)
assert d["jsonFile"]["usermode"] in get(u, "Unit", "X-Restart-Triggers"), u
# user-mode networking (slirp) gets IP sockets back (userNetwork), bridged VMs do not
assert "AF_INET" in get(u, "Service", "RestrictAddressFamilies"), u
assert "AF_INET" not in get(t, "Service", "RestrictAddressFamilies"), t
'
fi

if needs_units build-dropins; then
check build-dropins "$GOOD" "$dropins_expr" '
U = d["units"]
b = U["mcp-unikernel-build@web.service"]
assert b["overrideStrategy"] == "asDropin", b
t = ini(b["text"])
assert get(t, "Service", "TimeoutStartSec") == ["900"], t
assert get(t, "Service", "PrivateNetwork") == ["no"], ("nanosDir is null: ops must download", t)
l = ini(U["mcp-unikernel-build@a-rather-long-name-for-a-unikernel.service"]["text"])
assert get(l, "Service", "TimeoutStartSec") == ["60"], l
'
fi

# Drop-in text is not type-checked by NixOS: the names in it must pass the
# same unitNameType pattern NixOS applies to after/requires/bindsTo, for
# every bridge name the module accepts.
if needs_units dropin-unit-names-valid; then
check dropin-unit-names-valid "$(with_good '{ services.mcp.bridge.name = "Br_x-1"; }')" "$dropins_expr" '
bad = []
for n, u in d["units"].items():
    if "mcp" not in n:
        continue
    assert UNIT_NAME.fullmatch(n), n
    for sec in ini(u["text"]).values():
        for k in ("Requires", "After", "BindsTo", "Wants", "Before", "PartOf"):
            bad += [(n, k, x) for x in sec.get(k, []) if not UNIT_NAME.fullmatch(x)]
assert not bad, bad
'
fi

# utils.escapeSystemdPath, not a hand-written escape: "-" becomes \x2d, "_" stays.
if needs_units bridge-device-escaped; then
check bridge-device-escaped "$(with_good '{ services.mcp.bridge.name = "br_mcp-0"; }')" "$dropins_expr" '
t = ini(d["units"]["mcp-unikernel@web.service"]["text"])
assert get(t, "Unit", "BindsTo") == ["sys-subsystem-net-devices-br_mcp\\x2d0.device"], t
assert "br_mcp-0-netdev.service" in get(t, "Unit", "Requires"), t
'
fi

if needs_units container-no-device-binding; then
check container-no-device-binding "$(with_good '{ boot.isContainer = true; }')" "$dropins_expr" '
t = ini(d["units"]["mcp-unikernel@web.service"]["text"])
assert not get(t, "Unit", "BindsTo"), ("no device units in containers", t)
assert not [x for x in get(t, "Unit", "After") if x.endswith(".device")], t
for u in ("mcp-br0-netdev.service", "network-addresses-mcp-br0.service"):
    assert u in get(t, "Unit", "Requires") and u in get(t, "Unit", "After"), (u, t)
'
fi

if needs_units networkd-ordering; then
check networkd-ordering "$(with_good '{ networking.useNetworkd = true; }')" '{ inherit units networkdNetworks; }' '
t = ini(d["units"]["mcp-unikernel@web.service"]["text"])
assert "systemd-networkd.service" in get(t, "Unit", "After"), t
assert not [x for x in get(t, "Unit", "After") + get(t, "Unit", "Requires") if x.startswith("network-addresses-")], t
assert get(t, "Unit", "BindsTo") == ["sys-subsystem-net-devices-mcp\\x2dbr0.device"], t
n = d["networkdNetworks"]["40-mcp-br0"]
assert n["networkConfig"]["ConfigureWithoutCarrier"] is True and n["linkConfig"]["RequiredForOnline"] == "no", n
'
fi

check target-wants-and-autostart "$GOOD" '{ inherit etcNames targets; u = builtins.attrNames units; }' '
t = d["targets"]["mcp-unikernels"]
assert t["overrideStrategy"] == "asDropin", t
assert t["wantedBy"] == ["multi-user.target"], t
assert sorted(t["wants"]) == sorted("mcp-unikernel@%s.service" % n for n in ("web", "a-rather-long-name-for-a-unikernel", "usermode")), t["wants"]
assert "mcp-unikernel@manual.service" in d["u"] and "mcp-unikernel-build@manual.service" in d["u"], "autoStart = false still has its drop-ins"
assert "mcp-unikernel@off.service" not in d["u"] and "mcp-unikernel-build@off.service" not in d["u"], "disabled unikernel has drop-ins"
assert "mcp-unikernel/off.json" not in d["etcNames"] and "mcp-unikernel/manual.json" in d["etcNames"]
'

# The template has ConditionPathExists=/etc/mcp-unikernel/%i.json: a removed
# instance is stopped by switch-to-configuration and its restart skipped.
check no-prune-unit "$GOOD" '{ s = builtins.attrNames services; u = builtins.attrNames units; }' '
assert not [n for n in d["s"] + d["u"] if "prune" in n], d
'

# The package's units (systemd/, @helper@/@nft@ substituted) plus the
# module's drop-ins for "web", checked by systemd-analyze verify.
if ! command -v systemd-analyze >/dev/null; then
  skip "nix-eval units-systemd-verify" "systemd-analyze not installed"
elif [ ! -f "$ROOT/systemd/mcp-unikernel@.service.in" ]; then
  skip "nix-eval units-systemd-verify" "systemd/ unit files not present"
elif needs_units units-systemd-verify; then
  if ! out=$(ev "$GOOD" "$dropins_expr"); then
    fail "nix-eval units-systemd-verify" "$(nixerr)"
  else
    u=$work/units; mkdir -p "$u"
    for f in "$ROOT"/systemd/*.in "$ROOT"/systemd/*.target; do
      [ -e "$f" ] || continue
      sed -e 's|@helper@|/bin/true|g' -e 's|@systemctl@|/bin/true|g' -e "s|@nft@|$(command -v nft || echo /bin/true)|g" "$f" >"$u/$(basename "$f" .in)"
    done
    printf '%s' "$out" | py "
import os
for n in ('mcp-unikernel@web.service', 'mcp-unikernel-build@web.service'):
    os.makedirs('$u/' + n + '.d', exist_ok=True)
    open('$u/' + n + '.d/overrides.conf', 'w').write(d['units'][n]['text'])
"
    if o=$(cd "$u" && SYSTEMD_UNIT_PATH="$u:" systemd-analyze verify --man=no mcp-unikernel@web.service mcp-unikernel-build@web.service mcp-unikernel-gc.service 2>&1 \
           | grep -v -e 'not found' -e 'Unit .* is not loaded' ); [ -z "$o" ]; then
      pass "nix-eval units-systemd-verify"
    else
      fail "nix-eval units-systemd-verify" "$o"
    fi
  fi
fi

# ---- JSON --------------------------------------------------------------------
check json-schema "$GOOD" 'json' '
keys = {"schema_version","name","program","args","env","memory_mib","vcpus","accel","network","volumes",
        "volume_limit_mib","klibs","ops_extra","nanos_dir","ops","qemu","qemu_user","qemu_group",
        "stop_timeout_secs","direct_boot","on_remove","readiness","health","credentials","credentials_target"}
netkeys = {"mode","bridge","ip","prefix_length","gateway","nameservers","ntp_servers","tap","mac","ports"}
assert set(d) == {"web","a-rather-long-name-for-a-unikernel","usermode","manual"}, sorted(d)
w = json.loads(d["web"])
assert set(w) == keys, set(w) ^ keys
assert set(w["network"]) == netkeys, set(w["network"]) ^ netkeys
assert w["schema_version"] == 1 and w["name"] == "web" and w["memory_mib"] == 128 and w["accel"] == "tcg"
n = w["network"]
assert (n["mode"], n["bridge"], n["ip"], n["prefix_length"], n["gateway"]) == ("bridge","mcp-br0","10.99.0.2",24,"10.99.0.1"), n
assert n["tap"] == "mcp-web" and n["mac"].startswith("02:") and len(n["mac"]) == 17, n
assert w["volumes"][0]["target"] == "/srv/www" and w["ops_extra"] == {"ManifestPassthrough": {"futex_trace": "f"}}
assert w["qemu"].endswith("/bin/qemu-system-x86_64") and w["ops"].endswith("/bin/ops"), (w["qemu"], w["ops"])
assert w["nanos_dir"] is None and w["direct_boot"] is None
l = json.loads(d["a-rather-long-name-for-a-unikernel"])["network"]
assert len(l["tap"]) == 15 and l["tap"].startswith("mcp-a-rath-"), l["tap"]
u = json.loads(d["usermode"])["network"]
assert u["mode"] == "user" and u["ip"] is None and u["tap"] is None and u["mac"] is None, u
assert u["ports"] == [{"host": 18080, "guest": 8080, "protocol": "tcp", "host_address": "127.0.0.1"}], u["ports"]
'

check json-qemu-user-per-vm "$GOOD" 'json' '
def user(name):
    u = "mcp-vm-" + name
    return u if len(u) <= 31 else "mcp-vm-%s-%s" % (name[:15], hashlib.sha256(name.encode()).hexdigest()[:8])
seen = set()
for n, j in d.items():
    c = json.loads(j)
    assert c["qemu_user"] == user(n) and c["qemu_group"] == user(n), (n, c["qemu_user"], c["qemu_group"])
    seen.add(c["qemu_user"])
assert len(seen) == len(d), "one user per VM"
'

check json-volume-limit "$(with_good '{ services.mcp.unikernels.usermode.volumeLimit = 16384; }')" 'json' '
assert json.loads(d["web"])["volume_limit_mib"] == 4096, "default 4096 MiB"
assert json.loads(d["usermode"])["volume_limit_mib"] == 16384
'

# A path literal program (and volume source, and nanosDir) is copied into the
# store by toJSON and the JSON keeps it in its string context, so it is in
# the system closure (toString would drop both).
mkdir -p "$work/lit/data" "$work/lit/nanos"
cp "$ELF" "$work/lit/prog"
: >"$work/lit/nanos/kernel.img"
check json-path-literal-in-closure "$(with_good "{ lib, ... }: {
    services.mcp.unikernels.web.program = lib.mkForce $work/lit/prog;
    services.mcp.unikernels.web.volumes = lib.mkForce [ { source = $work/lit/data; target = \"/data\"; } ];
    services.mcp.nanosDir = $work/lit/nanos;
  }")" '{ inherit json jsonContext; }' '
w = json.loads(d["json"]["web"])
ctx = d["jsonContext"]["web"]
for field, v in (("program", w["program"]), ("volumes[0].source", w["volumes"][0]["source"]), ("nanos_dir", w["nanos_dir"])):
    assert v.startswith("/nix/store/"), (field, v)
    assert v in ctx, (field, v, "not in the string context", ctx)
assert w["program"].endswith("-prog") and w["nanos_dir"].endswith("-nanos"), w
'

# ---- JSON through the helper -------------------------------------------------
json_ok=0
if out=$(ev "$GOOD" json); then
  for n in web "$LONG" usermode manual; do
    printf '%s' "$out" | py "open('$work/$n.json','w').write(d['$n'])"
  done
  json_ok=1
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
helper_check json-check-config "$work/web.json" "$work/$LONG.json" "$work/manual.json"
helper_check json-check-config-user-mode "$work/usermode.json"

# The helper derives TAP and MAC itself when the JSON leaves them null: both
# implementations must agree.
if [ -z "${MCP_HELPER:-}" ]; then
  skip "nix-eval derive-matches-helper" "MCP_HELPER unset"
elif [ "$json_ok" != 1 ]; then
  fail "nix-eval derive-matches-helper" "module JSON did not evaluate"
else
  bad=""
  for n in web "$LONG"; do
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

# ---- users -------------------------------------------------------------------
check users-per-vm "$GOOD" '{ inherit users groups; }' '
U = d["users"]
for n in ("mcp-vm-web", "mcp-vm-usermode", "mcp-vm-manual"):
    u = U[n]
    assert u["isSystemUser"] is True and u["group"] == n and u["extraGroups"] == ["kvm"], u
    assert n in d["groups"], d["groups"]
assert "mcp-vm-off" not in U, "disabled unikernel has a user"
assert "mcp-qemu" not in U and "mcp-qemu" not in d["groups"], "the shared QEMU user is gone"
'

check user-name-derivation "$GOOD" '{ n = map derive.userName [ "a" "exactly-24-characters-ab" "exactly-25-characters-abc" "a-rather-long-name-for-a-unikernel" ]; }' '
import hashlib
names = ["a", "exactly-24-characters-ab", "exactly-25-characters-abc", "a-rather-long-name-for-a-unikernel"]
want = []
for n in names:
    u = "mcp-vm-" + n
    want.append(u if len(u) <= 31 else "mcp-vm-%s-%s" % (n[:15], hashlib.sha256(n.encode()).hexdigest()[:8]))
assert d["n"] == want, (d["n"], want)
assert all(len(u) <= 31 for u in d["n"]), "NixOS aborts on user names of 32 characters or more"
assert d["n"][1] == "mcp-vm-exactly-24-characters-ab" and len(d["n"][2]) == 31
'

# ---- assertions: each bad configuration must fail with its message ---------
# assert_case NAME CONFIG-OVERRIDE REGEX: GOOD plus the override (a module);
# the units must still evaluate (no raw type error from another module).
assert_case() {
  local name=$1
  check "$name" "$(with_good "$2")" '{ inherit failedAssertions; u = builtins.attrNames units; }' "
import re
d = d['failedAssertions']
assert any(re.search(r'''$3''', m) for m in d), d
"
}
WEB='services.mcp.unikernels.web'
assert_case assert-shared-user \
  "{ services.mcp.unikernels.manual.user = \"mcp-vm-web\"; }" \
  '(web and manual|manual and web) all use user = "mcp-vm-web"; each unikernel needs its own user'
assert_case assert-shared-group \
  "{ services.mcp.unikernels.manual.group = \"mcp-vm-web\"; }" \
  '(web and manual|manual and web) all use group = "mcp-vm-web"; each unikernel needs its own group'
assert_case assert-user-root \
  "{ $WEB.user = \"root\"; }" \
  'unikernels\.web: QEMU must not run as root \(user = "root"'
assert_case assert-user-invalid \
  "{ $WEB.user = \"mcp-vm-a-user-name-of-32-chars-x\"; }" \
  'unikernels\.web\.user = "mcp-vm-a-user-name-of-32-chars-x" is not a valid user name for NixOS'
assert_case removed-qemu-user \
  "{ services.mcp.qemuUser = \"mcp-qemu\"; }" \
  'services\.mcp\.qemuUser[\s\S]*(no longer has any effect|has been removed)[\s\S]*Each unikernel has its own user now: services\.mcp\.unikernels\.<name>\.user'

# Exactly NixOS's Restart= values: each evaluates, on-watchdog is a type error
# of the module's own option (before any other module sees it).
rv_ok=1 rv_msg=""
for r in no on-success on-failure on-abnormal on-abort always; do
  if ! o=$(ev "$(with_good "{ lib, ... }: { $WEB.restart = lib.mkForce \"$r\"; }")" 'failedAssertions'); then
    rv_ok=0; rv_msg="$rv_msg $r: $(nixerr)"
  elif [ "$o" != "[]" ]; then rv_ok=0; rv_msg="$rv_msg $r: $o"; fi
done
if ev "$(with_good "{ lib, ... }: { $WEB.restart = lib.mkForce \"on-watchdog\"; }")" 'eval.config.services.mcp.unikernels.web.restart' >/dev/null; then
  rv_ok=0; rv_msg="$rv_msg on-watchdog was accepted"
elif ! grep -q 'services\.mcp\.unikernels\.web\.restart' "$work/stderr"; then
  rv_ok=0; rv_msg="$rv_msg on-watchdog: not rejected by the restart option: $(nixerr)"
fi
if [ "$rv_ok" = 1 ]; then pass "nix-eval restart-values-match-nixos"; else fail "nix-eval restart-values-match-nixos" "$rv_msg"; fi

assert_case assert-bridge-name-invalid-at \
  "{ services.mcp.bridge.name = \"br@mcp\"; }" \
  'services\.mcp\.bridge\.name = "br@mcp" is not a valid bridge name'
assert_case assert-bridge-name-invalid-plus \
  "{ services.mcp.bridge.name = \"br+mcp\"; }" \
  'services\.mcp\.bridge\.name = "br\+mcp" is not a valid bridge name'
assert_case assert-duplicate-ip \
  "{ lib, ... }: { $WEB.network.ip = lib.mkForce \"10.99.0.3\"; }" \
  '(a-rather-long-name-for-a-unikernel and web|web and a-rather-long-name-for-a-unikernel) all use network\.ip = "10\.99\.0\.3"'
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
  'services\.mcp\.bridge\.name = "mcp-bridge-too-long" is not a valid bridge name'
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
check good-config-no-assertions "$GOOD" failedAssertions 'assert d == [], d'

# ---- onRemove and mcp-unikernel-gc.service (issue 15) ------------------------
check on-remove-json-and-gc-unit "$(with_good '{ services.mcp.unikernels.manual.onRemove = "purge"; }')" "{
    inherit json units packages;
    fewer = (import $eroot/tests/nix/eval.nix { nixpkgsLib = $libdir; moduleFile = $module;
      config = $(with_good '{ services.mcp.unikernels.manual.onRemove = "purge"; services.mcp.unikernels.manual.enable = false; }'); }).units.\"mcp-unikernel-gc.service\".text;
  }" '
assert json.loads(d["json"]["web"])["on_remove"] == "keep", "default keep"
assert json.loads(d["json"]["manual"])["on_remove"] == "purge"
g = d["units"]["mcp-unikernel-gc.service"]
assert g["overrideStrategy"] == "asDropin" and g["wantedBy"] == ["multi-user.target"] and g["enable"] is True, g
t = get(ini(g["text"]), "Unit", "X-Restart-Triggers")
assert len(t) == 1 and t[0].startswith("/nix/store/"), g["text"]
f = get(ini(d["fewer"]), "Unit", "X-Restart-Triggers")
assert f != t, ("removing a unikernel must restart the gc unit (its trigger changes)", t, f)
'
check on-remove-gc-unit-without-unikernels '{ }' '{ inherit units packages; }' '
assert "mcp-unikernel-gc.service" in d["units"], ("the gc unit must stay when the last unikernel is removed", list(d["units"]))
assert d["packages"], "the package (with the gc unit) must stay installed"
assert not [n for n in d["units"] if n.startswith("mcp-unikernel@")], d["units"].keys()
'
if ev "$(with_good "{ $WEB.onRemove = \"delete\"; }")" 'eval.config.services.mcp.unikernels.web.onRemove' >/dev/null; then
  fail "nix-eval on-remove-rejects-other-values" "onRemove = \"delete\" was accepted"
elif grep -q 'services\.mcp\.unikernels\.web\.onRemove' "$work/stderr"; then
  pass "nix-eval on-remove-rejects-other-values"
else
  fail "nix-eval on-remove-rejects-other-values" "$(nixerr)"
fi

# ---- per-VM egress, the guest's resolver and NTP servers (issue 15) ---------
check egress-per-vm-ports "$GOOD" '{ inherit etcText networking; }' '
r = d["etcText"]["firewall.nft"]
host = r[r.index("table inet mcp-unikernel-host {"):]
host = host[:host.index("\n}\n")]
assert "ip saddr 10.99.0.2 jump gw-web" in host, host
chain = host[host.index("chain gw-web {"):]
chain = chain[:chain.index("\n  }")]
assert "tcp dport 3128 accept" in chain and "udp dport { 53, 123 } accept" in chain, chain
assert "jump gw-manual" not in host and "chain gw-manual" not in host, "a VM without own ports gets no chain"
assert "3128" not in host.replace(chain, ""), "3128 must be allowed in web chain only"
i = d["networking"]["firewall"]["interfaces"]["mcp-br0"]
assert 3128 in i["allowedTCPPorts"] and {53, 123} <= set(i["allowedUDPPorts"]), ("the host firewall opens the union", i)
'
check dns-ntp-defaults "$(with_good '{ services.mcp.firewall.allowedUDPPorts = [ 53 ]; services.mcp.unikernels.manual.network.nameservers = [ ]; }')" '{ inherit json; }' '
j = {n: json.loads(t)["network"] for n, t in d["json"].items()}
assert j["web"]["nameservers"] == ["10.99.0.1"] and j["web"]["ntp_servers"] == ["10.99.0.1"], j["web"]
l = j["a-rather-long-name-for-a-unikernel"]
assert l["nameservers"] == ["10.99.0.1"], ("UDP 53 allowed globally: the gateway resolves", l)
assert l["ntp_servers"] == [], ("UDP 123 not allowed for it: no NTP server", l)
assert j["manual"]["nameservers"] == [], ("set explicitly to none", j["manual"])
assert j["usermode"]["nameservers"] == [] and j["usermode"]["ntp_servers"] == [], j["usermode"]
'
check dns-ntp-none-by-default "$GOOD" '{ inherit json; }' '
l = json.loads(d["json"]["a-rather-long-name-for-a-unikernel"])["network"]
assert l["nameservers"] == [] and l["ntp_servers"] == [], ("no port 53/123 allowed: neither resolver nor NTP server", l)
'
assert_case assert-nameserver-unreachable \
  "{ $WEB.network.nameservers = [ \"8.8.8.8\" ]; }" \
  'unikernels\.web\.network\.nameservers = \[ "8\.8\.8\.8" \]: the guest can reach only the gateway 10\.99\.0\.1'
assert_case assert-nameserver-port-not-allowed \
  "{ services.mcp.unikernels.manual.network.nameservers = [ \"10.99.0.1\" ]; }" \
  'unikernels\.manual\.network\.nameservers = \[ "10\.99\.0\.1" \], but port 53 on the gateway is not allowed for it'
assert_case assert-ntp-klib-without-servers \
  "{ services.mcp.unikernels.manual.klibs = [ \"ntp\" ]; }" \
  'unikernels\.manual\.klibs contains "ntp" but network\.ntpServers is empty: the ntp klib would fall back to pool\.ntp\.org'
assert_case assert-ntp-server-unreachable \
  "{ $WEB.network.ntpServers = [ \"10.99.0.1\" \"192.0.2.1\" ]; }" \
  'unikernels\.web\.network\.ntpServers = \[ "10\.99\.0\.1" "192\.0\.2\.1" \]: the guest can reach only the gateway'
assert_case assert-gateway-ports-user-mode \
  "{ services.mcp.unikernels.usermode.network.allowedGatewayTCPPorts = [ 3128 ]; }" \
  'unikernels\.usermode\.network\.allowedGateway\*Ports only apply to network\.mode = "bridge"'

# ---- firewall ----------------------------------------------------------------
fw_expr='{ inherit units etcText networking; }'
if needs_units firewall-unit-on-iptables-host; then
check firewall-unit-on-iptables-host "$GOOD" "$fw_expr" '
n = d["networking"]
assert n["nftablesEnable"] is False, "the module switched the host firewall to nftables"
assert n["nftablesTables"] == {}, n["nftablesTables"]
rules, removal = d["etcText"]["firewall.nft"], d["etcText"]["firewall-remove.nft"]
assert "table bridge mcp-unikernel" in rules and "table inet mcp-unikernel-host" in rules and "mcp-web" in rules, rules[:300]
assert removal, "no removal file"
f = d["units"]["mcp-unikernel-firewall.service"]
assert f["overrideStrategy"] == "asDropin" and f["wantedBy"] == ["mcp-unikernels.target"] and f["enable"] is True, f
t = ini(f["text"])
trig = get(t, "Unit", "X-Reload-Triggers")
assert len(trig) == 2 and all(x.startswith("/nix/store/") for x in trig), ("rules changes must reload, not restart", t)
assert not get(t, "Unit", "X-Restart-Triggers"), t
for vm in ("web", "manual", "a-rather-long-name-for-a-unikernel"):
    v = ini(d["units"]["mcp-unikernel@%s.service" % vm]["text"])
    assert "mcp-unikernel-firewall.service" in get(v, "Unit", "Requires") and "mcp-unikernel-firewall.service" in get(v, "Unit", "After"), v
    assert "nftables.service" not in get(v, "Unit", "Requires"), v
'
fi

if needs_units firewall-nixos-nftables; then
check firewall-nixos-nftables "$(with_good '{ networking.nftables.enable = true; }')" "$fw_expr" '
n = d["networking"]
assert {"mcp-unikernel", "mcp-unikernel-host"} <= set(n["nftablesTables"]), n["nftablesTables"]
assert n["nftablesTables"]["mcp-unikernel"]["family"] == "bridge" and n["nftablesTables"]["mcp-unikernel-host"]["family"] == "inet"
assert "firewall.nft" not in d["etcText"] and "firewall-remove.nft" not in d["etcText"], d["etcText"]
f = d["units"].get("mcp-unikernel-firewall.service")
assert f is not None and f["enable"] is False, ("the firewall unit must be masked: two units would load the same tables", f)
v = ini(d["units"]["mcp-unikernel@web.service"]["text"])
assert "nftables.service" in get(v, "Unit", "Requires") and "nftables.service" in get(v, "Unit", "After"), v
assert "mcp-unikernel-firewall.service" not in get(v, "Unit", "Requires") + get(v, "Unit", "After"), v
'
fi

if needs_units firewall-disabled; then
check firewall-disabled "$(with_good '{ services.mcp.firewall.enable = false; }')" "$fw_expr" '
assert "firewall.nft" not in d["etcText"], d["etcText"]
f = d["units"].get("mcp-unikernel-firewall.service")
assert f is not None and f["enable"] is False, ("masked, so a switch stops it and does not start it without its rules file", f)
assert d["networking"]["nftablesTables"] == {}
v = ini(d["units"]["mcp-unikernel@web.service"]["text"])
assert not [u for u in get(v, "Unit", "Requires") if u in ("nftables.service", "mcp-unikernel-firewall.service")], v
'
fi

# services.mcp.firewall.tapIngressHooks follows the kernel (Linux >= 6.16
# loads a netdev table bound to TAPs that do not exist yet).
if [ "$(nix-instantiate --eval --strict -E "(builtins.functionArgs (import $ROOT/nixos/lib/nftables.nix)) ? tapIngressHooks" 2>/dev/null)" != true ]; then
  skip "nix-eval firewall-tap-ingress-hooks" "nixos/lib/nftables.nix has no tapIngressHooks argument"
else
  check firewall-tap-ingress-hooks "$(with_good '{ networking.nftables.enable = true; }')" "{
      old = (import $eroot/tests/nix/eval.nix { nixpkgsLib = $libdir; moduleFile = $module;
        config = $(with_good '{ networking.nftables.enable = true; boot.kernelPackages.kernel.version = "6.12.0"; }'); }).networking.nftablesTables;
      new = (import $eroot/tests/nix/eval.nix { nixpkgsLib = $libdir; moduleFile = $module;
        config = $(with_good '{ networking.nftables.enable = true; boot.kernelPackages.kernel.version = "6.18.1"; }'); }).networking.nftablesTables;
      off = (import $eroot/tests/nix/eval.nix { nixpkgsLib = $libdir; moduleFile = $module;
        config = $(with_good '{ networking.nftables.enable = true; boot.kernelPackages.kernel.version = "6.18.1"; services.mcp.firewall.tapIngressHooks = false; }'); }).networking.nftablesTables;
    }" '
fam = lambda t: {v["family"] for v in t.values()}
assert "netdev" not in fam(d["old"]), ("a 6.12 kernel refuses the TAP ingress table", d["old"].keys())
assert "netdev" in fam(d["new"]), ("6.16+ gets the TAP ingress table", d["new"].keys())
assert "netdev" not in fam(d["off"]), d["off"].keys()
'
fi

# The files mcp-unikernel-firewall.service loads: the ruleset, then the removal.
if ! command -v nft >/dev/null || ! command -v ip >/dev/null || [ "$(id -u)" != 0 ]; then
  skip "nix-eval nft-ruleset-and-removal-load" "needs root, nft and ip"
elif needs_removal nft-ruleset-and-removal-load; then
  if ! rs=$(ev "$GOOD" etcText); then
    fail "nix-eval nft-ruleset-and-removal-load" "$(nixerr)"
  else
    printf '%s' "$rs" | py "open('$work/firewall.nft','w').write(d['firewall.nft']); open('$work/firewall-remove.nft','w').write(d['firewall-remove.nft'])"
    netns="mcp-nixtest-$$"
    if ! ip netns add "$netns" 2>"$work/netns.err"; then
      fail "nix-eval nft-ruleset-and-removal-load" "ip netns add: $(cat "$work/netns.err")"; netns=""
    elif ! o=$(ip netns exec "$netns" nft -f "$work/firewall.nft" 2>&1); then
      fail "nix-eval nft-ruleset-and-removal-load" "firewall.nft: $o"
    elif ! o=$(ip netns exec "$netns" nft -f "$work/firewall.nft" 2>&1); then
      fail "nix-eval nft-ruleset-and-removal-load" "firewall.nft loaded twice (reload): $o"
    elif ! o=$(ip netns exec "$netns" nft list table bridge mcp-unikernel 2>&1) || ! grep -q mcp-web <<<"$o"; then
      fail "nix-eval nft-ruleset-and-removal-load" "ruleset does not mention the VMs: $o"
    elif ! o=$(ip netns exec "$netns" nft -f "$work/firewall-remove.nft" 2>&1); then
      fail "nix-eval nft-ruleset-and-removal-load" "firewall-remove.nft: $o"
    elif o=$(ip netns exec "$netns" nft list tables 2>&1) && grep -q mcp-unikernel <<<"$o"; then
      fail "nix-eval nft-ruleset-and-removal-load" "tables left after the removal: $o"
    elif ! o=$(ip netns exec "$netns" nft -f "$work/firewall-remove.nft" 2>&1); then
      fail "nix-eval nft-ruleset-and-removal-load" "firewall-remove.nft with no tables loaded: $o"
    else
      pass "nix-eval nft-ruleset-and-removal-load"
    fi
    [ -n "$netns" ] && ip netns delete "$netns" 2>/dev/null
    netns=""
  fi
fi

check bridge-and-firewall "$GOOD" 'networking' '
assert d["bridges"]["mcp-br0"]["interfaces"] == [], d["bridges"]
a = d["interfaces"]["mcp-br0"]["ipv4"]["addresses"]
assert a == [{"address": "10.99.0.1", "prefixLength": 24}], a
assert d["nftablesEnable"] is False
assert "mcp-br0" in d["firewall"]["interfaces"]
h = hashlib.sha256(b"mcp-unikernel-bridge:mcp-br0").hexdigest()
want = "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))
assert d["interfaces"]["mcp-br0"].get("macAddress") == want, (d["interfaces"]["mcp-br0"], want)
'
check bridge-mac-null "$(with_good '{ services.mcp.bridge.macAddress = null; }')" 'networking' '
assert d["interfaces"]["mcp-br0"]["macAddress"] is None, d["interfaces"]["mcp-br0"]
'

# ---- Nanos kernel --------------------------------------------------------------
check warning-nanos-dir-null "$GOOD" 'warnings' '
assert any("services.mcp.nanosDir is null" in w and "unpinned" in w for w in d), d
'
if needs_units nanos-dir-offline-build; then
check nanos-dir-offline-build "$(with_good '{ services.mcp.nanosDir = "/nix/store/00000000000000000000000000000000-nanos-0.1.55"; }')" '{ inherit warnings units json; }' '
assert not [w for w in d["warnings"] if "nanosDir" in w], d["warnings"]
t = ini(d["units"]["mcp-unikernel-build@web.service"]["text"])
assert get(t, "Service", "PrivateNetwork") != ["no"], ("the build keeps PrivateNetwork=yes", t)
assert json.loads(d["json"]["web"])["nanos_dir"] == "/nix/store/00000000000000000000000000000000-nanos-0.1.55"
'
fi

check ops-option-describes-versions "$GOOD" 'eval.options.services.mcp.opsPackage.description' '
assert "0.1.43-24-gcd2208d" in d and "cd2208de79dc" in d and "0.1.32" in d, d
'

# ---- flake.nix -------------------------------------------------------------------
# fl NAME EXPR PYTHON: EXPR over tests/nix/eval-flake.nix's attributes.
fl() {
  local name=$1 out msg
  if ! out=$(nix-instantiate --eval --strict --json -E "
      with (import $eroot/tests/nix/eval-flake.nix { nixpkgsLib = $libdir; root = $eroot; }); $2" 2>"$work/stderr"); then
    fail "nix-eval $name" "$(nixerr)"; return
  fi
  if msg=$(printf '%s' "$out" | py "$3" 2>&1); then pass "nix-eval $name"; else fail "nix-eval $name" "$msg"; fi
}
pin_commit=$(sed -n 's/^OPS_VERSION="\${OPS_VERSION:-v0\.0\.0-[0-9]*-\([0-9a-f]*\)}".*/\1/p' scripts/install-ops.sh)
pin_version=$(sed -n 's/^ *v0\.0\.0-[0-9]*-[0-9a-f]*) OPS_REPORTED_VERSION=\([^ ]*\) ;;$/\1/p' scripts/install-ops.sh)
fl flake-ops-package 'ops' "
pin_commit, pin_version = '$pin_commit', '$pin_version'
assert pin_commit and pin_version, ('cannot read the pin from scripts/install-ops.sh', pin_commit, pin_version)
assert d['src']['owner'] == 'nanovms' and d['src']['repo'] == 'ops', d['src']
assert d['src']['rev'].startswith(pin_commit) and len(d['src']['rev']) == 40, (d['src']['rev'], pin_commit)
assert d['version'] == pin_version, (d['version'], pin_version)
assert 'github.com/nanovms/ops/lepton.Version=' + pin_version in ' '.join(d['ldflags']), d['ldflags']
assert re.fullmatch(r'sha256-[A-Za-z0-9+/]{43}=', d['src']['hash']) and re.fullmatch(r'sha256-[A-Za-z0-9+/]{43}=', d['vendorHash']), d
assert d['subPackages'] == ['.'] and d['mainProgram'] == 'ops' and d['doCheck'] is False, d
assert 'rm -r daemon' in d['postPatch'], d['postPatch']
"
fl flake-module-defaults 'module' '
assert d["failedAssertions"] == [], d["failedAssertions"]
assert d["opsPackage"] == d["ops"], ("nixosModules.default must default opsPackage to packages.ops", d)
assert d["package"] == d["helper"], d
'
fl flake-checks-default '{ inherit checkNames packageNames overlay; }' '
c = set(d["checkNames"])
want = {"unikernel-wiring"} | {"unikernel-%s-standin" % t for t in ("basic", "isolation", "kill-restart", "reconfigure")}
assert want <= c, ("nix flake check must run the VM tests without MCP_NANOS_DIR", sorted(c))
assert not [n for n in c if n.endswith("-nanos")], sorted(c)
assert {"helper", "ops", "file-server"} <= c, sorted(c)
assert {"default", "mcp-unikernel", "ops", "file-server", "file-server-static"} <= set(d["packageNames"]), d["packageNames"]
assert "ops" not in d["overlay"] and "mcp-unikernel-ops" in d["overlay"], ("the overlay must not replace nixpkgs ops", d["overlay"])
'
fl flake-helper-units 'helperPostInstall' '
assert "$out/lib/systemd/system" in d, d
assert "--subst-var-by helper \"$out/bin/mcp-unikernel\"" in d, d
assert re.search(r"--subst-var-by nft \"/nix/store/[^\"]*nftables/bin/nft\"", d), d
assert "systemd/*.service.in" in d and "@helper@" in d, d
'

# ---- checks/: evaluate the nixosTests as far as a lib-only tree allows -------
# runNixOSTest is a STAND-IN returning its argument (tests/nix/stub-pkgs.nix);
# each node's configuration (and specialisation) is evaluated with the module
# and the stand-ins and must pass the module's assertions; the test scripts
# and the stand-in QEMU must compile as Python.
if out=$(nix-instantiate --eval --strict --json "$eroot/tests/nix/eval-checks.nix" \
           --arg nixpkgsLib "$libdir" --arg moduleFile "$module" 2>"$work/stderr"); then
  if msg=$(printf '%s' "$out" | py '
flavours = ("standin", "nanos")
kinds = ("basic", "isolation", "kill-restart", "reconfigure")
want = {"unikernel-wiring"} | {"unikernel-%s-%s" % (k, f) for k in kinds for f in flavours}
T = d["tests"]
assert set(T) == want, sorted(set(T) ^ want)
for name, t in T.items():
    assert t["name"].startswith("mcp-unikernel-"), t["name"]
    s = t["testScript"]
    assert len(s) > 200 and ("assert " in s or ".fail(" in s), name
    compile(s, name, "exec")  # the script is valid Python
    assert t["nodes"], name
    for node, n in t["nodes"].items():
        assert n["failedAssertions"] == [], (name, node, n["failedAssertions"])
        if name.endswith("-standin"):
            assert all(n["directBoot"].values()), (name, node, "stand-in tests boot the Linux stand-in")
            assert not [w for w in n["warnings"] if "nanosDir" in w], (name, node, n["warnings"])
        if name.endswith("-nanos"):
            assert not any(n["directBoot"].values()), (name, node)
    assert any(n["unikernels"] for n in t["nodes"].values()), name
compile(d["qemuStub"], "qemu-stub", "exec")
assert d["qemuStub"].startswith("#!/nix/store/") and "python3" in d["qemuStub"].splitlines()[0]
w = T["unikernel-wiring"]["nodes"]
assert w["ipt"]["nftablesEnable"] is False and w["nft"]["nftablesEnable"] is True, w
assert all(n["qemu"].endswith("-qemu-stub") for n in w.values()), [n["qemu"] for n in w.values()]
for f in ("init", "power-button", "udhcpc.script"):
    assert "tests/guest/" + f in d["guestInitrd"] or ("-" + f) in d["guestInitrd"], f
assert d["guestKernel"].endswith("/bzImage"), d["guestKernel"]
for f in flavours:
    r = T["unikernel-reconfigure-" + f]["nodes"]
    assert r["machine"]["unikernels"] == ["other", "web"], r["machine"]
    assert r["machine/specialisation/changed"]["unikernels"] == ["other", "web"], r
    assert r["machine/specialisation/added"]["unikernels"] == ["extra", "other", "web"], r
    assert r["machine/specialisation/removed"]["unikernels"] == ["web"], r
    up = r["machine/specialisation/upgraded"]
    assert up["unikernels"] == ["web"] and up["package"].endswith("-mcp-unikernel-upgraded"), up
    assert r["machine"]["package"] != up["package"]
' 2>&1); then pass "nix-eval checks-evaluate"; else fail "nix-eval checks-evaluate" "$msg"; fi
else
  fail "nix-eval checks-evaluate" "$(nixerr)"
fi

ready_tests

echo "nix: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
