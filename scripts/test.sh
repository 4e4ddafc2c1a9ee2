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
  # tests/prometheus.rs: promtool lints /metrics and docs/prometheus/, a prometheus server fires an alert. Where
  # systemd runs, the package also starts a service on port 9090; the tests use ports of their own.
  [promtool]=prometheus
  [prometheus]=prometheus
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

# Power-loss tests (tests/power_loss.rs) run the nodes on LazyFS, a FUSE file system that drops un-fsynced
# writes on command. They need root and /dev/fuse; tools/lazyfs/build.sh installs its build dependencies and
# fuse3 (fusermount3) when missing and compiles the vendored source once (about a minute, cached in the target
# directory). Elsewhere those tests print "skipped: ..." and pass.
if [ -n "${TANDEM_LAZYFS:-}" ]; then
  echo "power-loss tests: LazyFS from TANDEM_LAZYFS=$TANDEM_LAZYFS"
elif [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ]; then
  echo "power-loss tests: building LazyFS (tools/lazyfs/build.sh)"
  TANDEM_LAZYFS=$(tools/lazyfs/build.sh | tail -n 1)
  export TANDEM_LAZYFS
  echo "power-loss tests: LazyFS at $TANDEM_LAZYFS"
else
  echo "power-loss tests will be skipped: they need root and /dev/fuse (uid $(id -u); /dev/fuse $([ -c /dev/fuse ] && echo present || echo missing))"
fi

# End-to-end tests start several real nodes each; three tests at a time keep a 2-core machine responsive
# enough for Raft timeouts. Override with RUST_TEST_THREADS.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}"
cargo test --workspace "$@"

# The Debian package (packaging/README.md): built from the debug binary above, installed with dpkg, its unit
# verified, the installed binary started with the installed config as the unit would, then purged. Needs root.
packaging/test-deb.sh

# Fuzz smoke run (docs/security.md, "Fuzzing"): opt-in, because the first build of the fuzz targets (nightly,
# sanitizers, a target directory of their own) took 20 minutes on a 2-core machine; once built, the run takes
# about 45 s (5 s per target).
if [ -n "${TANDEM_FUZZ_SMOKE:-}" ]; then
  scripts/fuzz-smoke.sh
else
  echo "fuzz smoke run skipped: set TANDEM_FUZZ_SMOKE=1 to run scripts/fuzz-smoke.sh (nightly + cargo-fuzz)"
fi
