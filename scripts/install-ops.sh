#!/usr/bin/env bash
# Build the pinned `ops` (github.com/nanovms/ops) from the Go module proxy and
# print its path. Reuses an earlier build and Go's module/build caches.
#
# The version ops reports (`ops version` prints "Ops version: <v>") is set at
# link time, as ops's own release.sh does: `-X github.com/nanovms/ops/lepton.Version=`.
# For the pin it is `git describe --tags` of that commit, 0.1.43-24-gcd2208d,
# the same string the flake's packages.ops links in (flake.nix). Without it
# ops prints an empty version. Set OPS_REPORTED_VERSION when overriding
# OPS_VERSION.
#
# `go install github.com/nanovms/ops@<version>` is what we would use, but the
# module proxy reachable here answers 403 to the version-list query that
# `go install` makes for its deprecation check, and the sum database does not
# know ops pseudo-versions. So: a throwaway module that requires the pinned
# version, built with `go build` (same source, same result), with the sum
# check skipped for ops alone.
set -euo pipefail

OPS_VERSION="${OPS_VERSION:-v0.0.0-20250417002431-cd2208de79dc}"   # ops commit cd2208de79dc (2025-04-16)
if [ -z "${OPS_REPORTED_VERSION:-}" ]; then
  case "$OPS_VERSION" in
    v0.0.0-20250417002431-cd2208de79dc) OPS_REPORTED_VERSION=0.1.43-24-gcd2208d ;;
    *) OPS_REPORTED_VERSION=${OPS_VERSION#v} ;;
  esac
fi
case "$OPS_REPORTED_VERSION" in
  *[!A-Za-z0-9._+-]* | "") echo "install-ops: bad OPS_REPORTED_VERSION '$OPS_REPORTED_VERSION'" >&2; exit 1 ;;
esac
# The helper runs ops as each VM's own unprivileged user, so the binary must
# be where every user can execute it (not under root's 0700 home). The
# reported version is part of the cache key: a binary cached by an older
# version of this script (linked without it) is not reused.
if [ "$(id -u)" -eq 0 ]; then
  default_cache=/var/cache/mcp-unikernel
else
  default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/mcp-unikernel"
fi
cache="${MCP_OPS_CACHE:-$default_cache/ops-$OPS_VERSION-$OPS_REPORTED_VERSION}"
bin="$cache/ops"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "install-ops: go is not installed" >&2; exit 1; }
mkdir -p "$cache"
chmod 755 "$cache" "$(dirname "$cache")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  go mod init mcp-unikernel-ops-build >/dev/null 2>&1
  go mod edit -require="github.com/nanovms/ops@$OPS_VERSION"
  GONOSUMDB=github.com/nanovms/ops GOFLAGS=-mod=mod go build \
    -ldflags "-X github.com/nanovms/ops/lepton.Version=$OPS_REPORTED_VERSION" \
    -o "$work/ops" github.com/nanovms/ops
) >&2
chmod 755 "$work/ops"
mv "$work/ops" "$bin"
echo "$bin"
