#!/usr/bin/env bash
# Fuzz the config parser (tests/fuzz_config.rs, proptest) for SECONDS
# (default 600): repeated release-mode passes of the property tests with a
# large case count, each with fresh random seeds, until time is up. Prints
# the number of cases run; exits non-zero on the first failing case.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
per_pass=20000
cargo test --release --quiet --test fuzz_config --no-run
end=$(( $(date +%s) + secs )); passes=0; start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
  MCP_FUZZ_CASES=$per_pass cargo test --release --quiet --test fuzz_config >/dev/null
  passes=$((passes + 1))
done
echo "fuzz-config: $((passes * per_pass * 4)) cases in $(( $(date +%s) - start )) s (4 properties x $per_pass cases x $passes passes), no failure"
