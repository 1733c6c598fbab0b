#!/usr/bin/env bash
# The lifecycle benchmark (docs/benchmarks.md): prints one Markdown table
# measured in one run on this machine (warm start vs plain QEMU, cold start vs
# a build by hand, the nothing-changed check on 100 MiB of volume data, stop,
# and N VMs started together), with a header naming the guest, the
# acceleration and the machine. Run as root, from a checkout:
#
#   scripts/bench.sh                      # Linux stand-in guest (no Nanos kernel)
#   MCP_NANOS_DIR=/path/to/nanos scripts/bench.sh   # Nanos, images built by ops
#   scripts/bench.sh --runs 7 --vms 30    # arguments go to the bench
#
# Bench arguments: --runs N (5) --vms N (20) --density-runs N (5) --vm-mib M
# (64) --volume-mib M (100) --only warm,cold,check,density --out FILE.
# The report is also written to target/bench/lifecycle-<UTC time>.md unless
# --out is given. Environment: MCP_NANOS_DIR, MCP_TEST_ACCEL (default tcg),
# OPS / MCP_TEST_OPS (ops binary, Nanos only), MCP_TEST_KERNEL (stand-in
# kernel). Needs what tests/run needs (scripts/setup.sh installs it: QEMU,
# iproute2, busybox-static, cpio, linux-image-cloud-amd64, the mcp-qemu user).
# Everything runs inside a network namespace the bench creates and removes.
# About 12 minutes on 2 cores under TCG.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "bench.sh: run as root (namespaces, TAPs, QEMU as the mcp-qemu user)" >&2; exit 1; }
id -u mcp-qemu >/dev/null 2>&1 || { echo "bench.sh: no mcp-qemu user (scripts/setup.sh creates it)" >&2; exit 1; }

export MCP_TEST_ACCEL="${MCP_TEST_ACCEL:-tcg}"

echo "== building the helper (release) and the static example server (the guest program)" >&2
cargo build --quiet --release -p mcp-unikernel
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
  --target x86_64-unknown-linux-gnu -p file-server
export MCP_FILE_SERVER="$PWD/target/x86_64-unknown-linux-gnu/release/file-server"

if [ -n "${MCP_NANOS_DIR:-}" ]; then
  if [ -z "${MCP_TEST_OPS:-}" ]; then
    if [ -z "${OPS:-}" ] && [ -x scripts/install-ops.sh ] && command -v go >/dev/null; then
      OPS=$(scripts/install-ops.sh 2>/dev/null) || OPS=
    fi
    [ -n "${OPS:-}" ] || { echo "bench.sh: MCP_NANOS_DIR is set but no ops (set OPS, or install go for scripts/install-ops.sh)" >&2; exit 1; }
    export MCP_TEST_OPS="$OPS"
  fi
fi

args=("$@")
have_out=0
for a in "$@"; do [ "$a" = --out ] && have_out=1; done
if [ "$have_out" = 0 ]; then
  args+=(--out "$PWD/target/bench/lifecycle-$(date -u +%Y%m%dT%H%M%SZ).md")
fi

echo "== cargo bench --bench lifecycle (accel: $MCP_TEST_ACCEL, Nanos: ${MCP_NANOS_DIR:-none, Linux stand-in})" >&2
exec cargo bench --quiet --bench lifecycle -- "${args[@]}"
