#!/usr/bin/env bash
# smoke.sh: boot the Linux stand-in for a Nanos kernel by hand (no helper) and
# prove the guest side works. Run as root. Steps:
#   1. build the base initramfs (build-initramfs.sh) and the static file-server
#   2. build the second, uncompressed newc cpio the helper would write
#      (/mcp/program, /mcp/args, /mcp/env, /mcp/net, /srv/www/index.html) and
#      concatenate it after the base initramfs
#   3. in a network namespace of its own: bridge 10.99.0.1/24 + TAP, boot
#      qemu-system-x86_64 (-accel tcg -cpu max, direct kernel boot, virtio-net,
#      QMP on a unix socket)
#   4. wait for HTTP 200 with the file's contents from 10.99.0.2:8080
#   5. QMP system_powerdown; QEMU must exit on its own (status 0) within 10 s
#   6. boot again with a program that exits at once: the guest must power off
# Prints the boot time to "net up", to the first HTTP 200, and the power-down
# time. Everything it creates (namespace, bridge, TAP, QEMU, temp dir) is
# removed on exit, also on failure.
#
# Environment: MCP_TEST_KERNEL (default: newest /boot/vmlinuz-*-cloud-amd64),
# MCP_TEST_ACCEL (default tcg), MCP_FILE_SERVER (a prebuilt static
# file-server; default: build it), KEEP=1 keeps the temp dir (console logs).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "smoke.sh: FAIL: $*" >&2; exit 1; }
say() { echo "smoke.sh: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# alive PID: running and not yet a zombie (kill -0 succeeds on zombies).
alive() { local s; s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1); [ -n "$s" ] && [ "$s" != Z ]; }

[ "$(id -u)" -eq 0 ] || die "run as root (network namespace, bridge, TAP)"
for t in qemu-system-x86_64 ip curl cpio python3; do
  command -v "$t" >/dev/null || die "$t not found"
done

kernel=${MCP_TEST_KERNEL:-$(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -1)}
[ -n "$kernel" ] && [ -f "$kernel" ] || die "no kernel (apt-get install linux-image-cloud-amd64 or set MCP_TEST_KERNEL)"
kver=${kernel##*/vmlinuz-}
accel=${MCP_TEST_ACCEL:-tcg}

ns=mcp-smoke-$$
work=$(mktemp -d /tmp/mcp-smoke.XXXXXX)
qpid=
cleanup() {
  local rc=$?
  if [ -n "$qpid" ] && alive "$qpid"; then
    kill "$qpid" 2>/dev/null || true
    sleep 0.5
    kill -9 "$qpid" 2>/dev/null || true
  fi
  ip netns del "$ns" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "smoke.sh: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. build
t=$(now)
bash "$here/build-initramfs.sh" "$work/base.cpio.gz" "$kver"
say "base initramfs built in $(since "$t") s"

if [ -n "${MCP_FILE_SERVER:-}" ]; then
  server=$MCP_FILE_SERVER
else
  t=$(now)
  if (cd "$repo" && cargo metadata --no-deps --format-version 1 2>/dev/null) | grep -q '"name":"file-server"'; then
    (cd "$repo" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
      --target x86_64-unknown-linux-gnu -p file-server)
    server=$repo/target/x86_64-unknown-linux-gnu/release/file-server
  else
    # Not (yet) a workspace member: build a standalone copy.
    say "file-server is not a workspace member; building a standalone copy"
    mkdir -p "$work/fs"
    cp -r "$repo/examples/file-server/Cargo.toml" "$repo/examples/file-server/src" "$work/fs/"
    printf '\n[workspace]\n' >> "$work/fs/Cargo.toml"
    (cd "$work/fs" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
      --target x86_64-unknown-linux-gnu)
    server=$work/fs/target/x86_64-unknown-linux-gnu/release/file-server
  fi
  say "file-server built in $(since "$t") s"
fi
[ -x "$server" ] || die "no file-server at $server"
linkage=$(LC_ALL=C ldd "$server" 2>&1 || true)
case "$linkage" in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) die "$server is dynamically linked: $(echo "$linkage" | tr '\n' ' ')" ;;
esac
command -v file >/dev/null && say "$(file -b "$server" | cut -d, -f1-4)"

# ---------------------------------------------------------------- 2. initrd
# make_initrd NAME ARGS...: base initramfs + the helper-style second cpio.
content="hello from the stand-in guest $$ $(date -u +%FT%TZ)"
make_initrd() {
  local name=$1; shift
  local x=$work/$name
  mkdir -p "$x/mcp" "$x/srv/www"
  install -m 755 "$server" "$x/mcp/program"
  printf '%s\n' "$@" > "$x/mcp/args"
  printf 'GREETING=hello world\nRUST_BACKTRACE=1\n' > "$x/mcp/env"
  printf 'ip=10.99.0.2 prefix=24 gateway=10.99.0.1 mac=%s\n' "$mac" > "$x/mcp/net"
  printf '%s\n' "$content" > "$x/srv/www/index.html"
  cp "$work/base.cpio.gz" "$work/$name.img"
  # The kernel wants each archive to start 4-byte aligned.
  local pad=$(( (4 - $(stat -c %s "$work/$name.img") % 4) % 4 ))
  head -c "$pad" /dev/zero >> "$work/$name.img"
  (cd "$x" && find mcp srv | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >> "$work/$name.img"
}
mac=02:6d:63:70:00:02
make_initrd serve --listen 0.0.0.0:8080 --file /srv/www/index.html
make_initrd exits --version

# ---------------------------------------------------------------- 3. network
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 10.99.0.1/24 dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" link set tap0 master br0
ip -n "$ns" link set tap0 up

# boot NAME: start QEMU in the namespace (console to $work/NAME.console).
boot() {
  local name=$1
  rm -f "$work/qmp.sock"
  t0=$(now)
  ip netns exec "$ns" qemu-system-x86_64 \
    -accel "$accel" -cpu max -m 128 -nographic -nodefaults -serial stdio \
    -kernel "$kernel" -initrd "$work/$name.img" -append "console=ttyS0 ${MCP_TEST_APPEND-quiet}" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac=$mac \
    -qmp "unix:$work/qmp.sock,server,nowait" \
    </dev/null >"$work/$name.console" 2>&1 &
  qpid=$!   # ip netns exec execs QEMU: this is QEMU's PID
}

# wait_exit SECONDS: wait for QEMU to end by itself; sets qrc.
wait_exit() {
  local limit=$1 n=0
  while alive "$qpid"; do
    [ $n -lt $((limit * 20)) ] || return 1
    sleep 0.05; n=$((n + 1))
  done
  qrc=0; wait "$qpid" || qrc=$?
  qpid=
}

qmp() { # qmp COMMAND: send one QMP command, print the reply
  python3 - "$work/qmp.sock" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
f = s.makefile("rw")
def reply():
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m:
            return m
json.loads(f.readline())  # greeting
f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n"); f.flush(); reply()
f.write(json.dumps({"execute": sys.argv[2]}) + "\n"); f.flush()
print(json.dumps(reply()))
PY
}

# ---------------------------------------------------------------- 4. serve
say "booting $kernel ($accel) with the file-server"
boot serve
t_net='' t_http='' body=''
for _ in $(seq 1 1200); do   # 60 s
  alive "$qpid" || { cat "$work/serve.console"; die "QEMU exited before serving"; }
  if [ -z "$t_net" ] && grep -q '^mcp-guest: net up 10.99.0.2' "$work/serve.console"; then t_net=$(since "$t0"); fi
  if body=$(ip netns exec "$ns" curl -sf --max-time 1 http://10.99.0.2:8080/); then
    t_http=$(since "$t0"); break
  fi
  sleep 0.05
done
[ -n "$t_http" ] || { cat "$work/serve.console"; die "no HTTP 200 from 10.99.0.2:8080 within 60 s"; }
[ "$body" = "$content" ] || die "wrong body: '$body' (expected '$content')"
[ -n "$t_net" ] || t_net=$(since "$t0")
say "HTTP 200 with the file's contents"
code=$(ip netns exec "$ns" curl -s -o /dev/null -w '%{http_code}' -X DELETE http://10.99.0.2:8080/)
[ "$code" = 405 ] || die "DELETE gave $code, expected 405"
sleep 0.2
grep -q '"GET / HTTP/1.1" 200' "$work/serve.console" || { cat "$work/serve.console"; die "no request log line on the console"; }

# ---------------------------------------------------------------- 5. power down
t1=$(now)
r=$(qmp system_powerdown)
[ "$r" = '{"return": {}}' ] || die "system_powerdown: $r"
wait_exit 10 || { tail -20 "$work/serve.console"; die "QEMU still running 10 s after system_powerdown"; }
t_off=$(since "$t1")
[ "$qrc" -eq 0 ] || die "QEMU exit status $qrc after power-down"
grep -q 'mcp-guest: ACPI power button' "$work/serve.console" || die "the power button did not reach acpid"
grep -q 'file-server: terminating on signal' "$work/serve.console" || die "file-server did not get SIGTERM"
t_total=$(since "$t0")

# ---------------------------------------------------------------- 6. exit
say "booting again with a program that exits at once (file-server --version)"
boot exits
wait_exit 60 || { cat "$work/exits.console"; die "guest did not power off after its program exited"; }
t_exit=$(since "$t0")
[ "$qrc" -eq 0 ] || die "QEMU exit status $qrc"
grep -q '^file-server 0\.' "$work/exits.console" || { cat "$work/exits.console"; die "program output missing"; }
grep -q 'program exited with status 0; powering off' "$work/exits.console" || die "no power-off message"

echo "---- guest console (first boot)"
grep -v '^\s*$' "$work/serve.console" | sed 's/^/  | /'
echo "----"
say "PASS (accel $accel, kernel $kver)"
say "  boot to 'net up':              ${t_net} s"
say "  boot to first HTTP 200:        ${t_http} s"
say "  system_powerdown to QEMU exit: ${t_off} s (exit status 0)"
say "  boot to power-off (total):     ${t_total} s"
say "  program exit -> power-off run: ${t_exit} s from boot"
