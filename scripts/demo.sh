#!/usr/bin/env bash
# The main job on the example unikernel: build the helper and the example
# file server, write the example instance config (examples/hello.json.in),
# `mcp-unikernel start` it on the bridge mcp-br0 (10.99.0.1/24) inside a
# network namespace of its own, fetch http://10.99.0.2:8080/ from the bridge,
# show `status`, then `stop` and `cleanup`. Run as root.
#
# With MCP_NANOS_DIR=/dir (kernel.img, boot.img, klibs/) it boots a real
# Nanos image built by ops. Without it, it runs the whole demo on the Linux
# stand-in guest that CI uses instead of Nanos (the same helper code path:
# staging, TAP, QEMU, QMP) and says so. --download lets ops fetch the Nanos
# kernel instead (hosts with internet access only); --standin forces the
# stand-in. --no-setup skips scripts/setup.sh (apt, users, ops).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=auto setup=1
for a in "$@"; do
  case "$a" in
    --download) mode=download ;;
    --standin) mode=standin ;;
    --no-setup) setup=0 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (TAP, bridge and namespace need it)" >&2; exit 1; }
if [ "$mode" = auto ]; then
  if [ -n "${MCP_NANOS_DIR:-}" ]; then
    mode=nanos
  else
    mode=standin
    cat >&2 <<'MSG'
============================================================================
demo.sh: no MCP_NANOS_DIR, so this runs on the LINUX STAND-IN for Nanos (a
Debian cloud kernel + busybox initramfs booted by the same helper code path).
For a real Nanos unikernel, point MCP_NANOS_DIR at a directory holding the
Nanos kernel.img, boot.img and klibs/ (built from nanovms/nanos, or a Nanos
release), or pass --download where this host reaches the internet.
============================================================================
MSG
  fi
fi

if [ "$setup" = 1 ]; then OPS=$(scripts/setup.sh); else OPS=${OPS:-ops}; fi
echo "== building mcp-unikernel and the example server"
cargo build --quiet --release -p mcp-unikernel
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
  --target x86_64-unknown-linux-gnu -p file-server
bin=$PWD/target/release/mcp-unikernel
server=$PWD/target/x86_64-unknown-linux-gnu/release/file-server

work=$(mktemp -d /tmp/mcp-demo.XXXXXX)
chmod 711 "$work"   # QEMU and ops run as mcp-qemu and must reach their dirs and image
ns=mcp-demo-$$
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    ip netns exec "$ns" "$bin" "${dirs[@]}" stop hello >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  ip netns exec "$ns" "$bin" "${dirs[@]}" cleanup hello >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
dirs=(--config-dir "$work/etc" --state-dir "$work/state" --runtime-dir "$work/run")
trap cleanup EXIT
mkdir -p "$work/etc" "$work/www"
echo "Hello from a unikernel, served from a volume dir ($(date -u +%FT%TZ))" > "$work/www/index.html"

case "$mode" in
  nanos) boot="\"nanos_dir\": \"$MCP_NANOS_DIR\"," ;;
  download) boot="" ;;
  standin)
    kver=$(ls /boot | sed -n 's/^vmlinuz-\(.*-cloud-amd64\)$/\1/p' | sort | tail -1)
    bash tests/guest/build-initramfs.sh "$work/base-initramfs.cpio.gz" "$kver" >/dev/null
    boot="\"direct_boot\": {\"kernel\": \"/boot/vmlinuz-$kver\", \"initrd\": \"$work/base-initramfs.cpio.gz\", \"append\": \"quiet\"}," ;;
esac
sed -e "s|@PROGRAM@|$server|" -e "s|@VOLUME@|$work/www|" -e "s|@OPS@|$OPS|" \
    -e "s|@ACCEL@|${MCP_ACCEL:-tcg}|" -e "s|\"@BOOT@\": null,|$boot|" \
    examples/hello.json.in > "$work/etc/hello.json"
"$bin" check-config "$work/etc/hello.json" >/dev/null

echo "== network namespace $ns with bridge mcp-br0 10.99.0.1/24"
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add mcp-br0 type bridge
ip -n "$ns" addr add 10.99.0.1/24 dev mcp-br0
ip -n "$ns" link set mcp-br0 up

echo "== mcp-unikernel start hello ($mode)"
ip netns exec "$ns" "$bin" "${dirs[@]}" start hello > "$work/console.log" 2>&1 &
pid=$!
t0=$(date +%s.%N)
for _ in $(seq 1 600); do
  if body=$(ip netns exec "$ns" curl -sf --max-time 1 http://10.99.0.2:8080/); then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "start failed:"; cat "$work/console.log"; exit 1; }
  sleep 0.2
done
[ -n "${body:-}" ] || { echo "no HTTP answer within 120 s:"; tail -30 "$work/console.log"; exit 1; }
printf '== http://10.99.0.2:8080/ answered %.1f s after start:\n%s\n' "$(awk "BEGIN {print $(date +%s.%N) - $t0}")" "$body"
echo "== mcp-unikernel status"
ip netns exec "$ns" "$bin" "${dirs[@]}" status hello
echo "== mcp-unikernel stop hello"
ip netns exec "$ns" "$bin" "${dirs[@]}" stop hello
wait "$pid" || true
pid=
ip netns exec "$ns" "$bin" "${dirs[@]}" cleanup hello
echo "== done"
