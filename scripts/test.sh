#!/usr/bin/env bash
# Runs Tandem's whole test suite on a fresh machine: installs the external programs the tests drive when they
# are missing (Debian packages), then runs `cargo test --workspace`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package, for every external program a test drives.
declare -A needed=(
  [curl]=curl
  [tftp]=tftp-hpa
  [atftp]=atftp
)

missing=()
for command in "${!needed[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${needed[$command]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

# End-to-end tests start several real nodes each; three tests at a time keep a 2-core machine responsive
# enough for Raft timeouts. Override with RUST_TEST_THREADS.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}"
cargo test --workspace "$@"
