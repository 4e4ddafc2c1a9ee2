#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: target/debian/tandem_VERSION-1_ARCH.deb (last line of output).
#
#   packaging/build-deb.sh             the release build (what to ship)
#   packaging/build-deb.sh dev         the debug build the test suite already made (CI's package test: the
#                                      packaging is the same, the binary is not optimised)
#
# Installs cargo-deb from crates.io when it is missing (`cargo install cargo-deb --locked`, a few minutes once).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
case "$profile" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "usage: $0 [release|dev]" >&2; exit 2 ;;
esac
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked --quiet >&2
fi
cargo build --profile "$profile" --bin tandem --quiet >&2
# The manual page, rendered from the binary's own command definitions (`tandem man`), into packaging/out/
# (ignored by git; the assets name it there so that it does not depend on CARGO_TARGET_DIR).
mkdir -p packaging/out
"${CARGO_TARGET_DIR:-target}/$dir/tandem" man | gzip -9n > packaging/out/tandem.1.gz
# --no-build: the binary above; cargo-deb reads `target/release/` in the assets as the profile's directory.
cargo deb --no-build --profile "$profile" --quiet 2>&1 | grep -v '^$' >&2 || true
ls -t "${CARGO_TARGET_DIR:-target}"/debian/tandem_*.deb | head -n 1
