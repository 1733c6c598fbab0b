#!/usr/bin/env bash
# Start-up time of `mcp-unikernel status NAME` and `check-config FILE` (the
# read-only commands that must stay instant, docs/benchmarks.md): N runs of
# each against a throwaway config/state/runtime tree, median/min/max in ms.
# `status` is timed twice: for a stopped VM, and for a "running" one whose
# launch record names a live stand-in process (a shell whose argv references
# the VM's runtime dir, as QEMU's does), so PID validation reads /proc.
# Uses hyperfine when it is installed, else a plain loop timed with
# date +%s%N. No root needed; nothing outside the tree is touched.
#
#   scripts/bench-status.sh [HELPER] [RUNS]   # HELPER default target/release/mcp-unikernel, RUNS 200
set -euo pipefail
cd "$(dirname "$0")/.."
helper=$(realpath "${1:-target/release/mcp-unikernel}")
runs=${2:-200}
tree=$(mktemp -d /tmp/mcpt-status-XXXXXX)
vmpid=
trap '[ -n "$vmpid" ] && kill "$vmpid" 2>/dev/null; rm -rf "$tree"' EXIT
mkdir -p "$tree/etc" "$tree/state" "$tree/run" "$tree/www"
echo hello > "$tree/www/index.html"
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | head -1 || true)
[ -n "$kernel" ] || kernel=/bin/true
# QEMU never runs as root: as root use the demo's user.
if [ "$(id -u)" -eq 0 ]; then qemu_user=mcp-qemu qemu_group=mcp-qemu; else qemu_user=$(id -un) qemu_group=$(id -gn); fi
cat > "$tree/etc/web.json" <<JSON
{ "schema_version": 1, "name": "web", "program": "/bin/true",
  "memory_mib": 128, "accel": "tcg", "network": { "ip": "10.99.0.2" },
  "volumes": [ { "source": "$tree/www", "target": "/srv/www" } ],
  "direct_boot": { "kernel": "$kernel", "initrd": "/bin/true" },
  "qemu_user": "$qemu_user", "qemu_group": "$qemu_group" }
JSON
h=("$helper" --config-dir "$tree/etc" --state-dir "$tree/state" --runtime-dir "$tree/run")
"${h[@]}" status web >/dev/null
"${h[@]}" check-config "$tree/etc/web.json" >/dev/null
stats() { sort -n | awk '{a[NR]=$1} END {printf "median %.2f ms, min %.2f ms, max %.2f ms (%d runs)\n", a[int((NR+1)/2)], a[1], a[NR], NR}'; }
measure() { # measure LABEL CMD...
  local label=$1; shift
  if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 10 --runs "$runs" --export-json "$tree/h.json" "$(printf '%q ' "$@")" >/dev/null 2>&1
    python3 -c 'import json,sys; [print(t*1000) for t in json.load(open(sys.argv[1]))["results"][0]["times"]]' "$tree/h.json" | stats | sed "s/^/$label (hyperfine): /"
  else
    for _ in $(seq 10); do "$@" >/dev/null 2>&1; done
    for _ in $(seq "$runs"); do
      t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
      echo $(( (t1 - t0) / 1000 )) | awk '{print $1/1000}'
    done | stats | sed "s/^/$label (loop, includes fork+exec of date): /"
  fi
}
measure "status web (stopped)" "${h[@]}" status web
mkdir -p "$tree/run/web/vm"
sh -c 'while :; do sleep 1; done' "$tree/run/web/vm/qmp.sock" &
vmpid=$!
sleep 0.2
ticks=$(sed 's/.*) //' "/proc/$vmpid/stat" | cut -d' ' -f20)
echo "$vmpid" > "$tree/run/web/vm/qemu.pid"
printf '{"name":"web","pid":%s,"start_ticks":%s,"boot_id":"%s","uid":%s,"tap":null,"ip":"10.99.0.2","image_hash":"h","started_unix":0}\n' \
  "$vmpid" "$ticks" "$(cat /proc/sys/kernel/random/boot_id)" "$(id -u)" > "$tree/run/web/launch.json"
"${h[@]}" status web | grep -q running || { echo "bench-status.sh: the stand-in VM does not validate" >&2; "${h[@]}" status web >&2; exit 1; }
measure "status web (running)" "${h[@]}" status web
measure "check-config" "${h[@]}" check-config "$tree/etc/web.json"
