#!/usr/bin/env bash
# A few seconds of every fuzz target over its committed corpus (fuzz/corpus/<target>/); fails on any crash, leak
# of memory past the RSS limit, or hang. Needs the nightly toolchain (rustup) and cargo-fuzz
# (`cargo install cargo-fuzz --locked`); without them it says why and skips. The long run, targets and
# figures: docs/security.md, "Fuzzing".
#
#   scripts/fuzz-smoke.sh                 every target, FUZZ_SMOKE_SECONDS (default 5) each
#   scripts/fuzz-smoke.sh tftp_packet     one target
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz smoke run skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke run skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
  exit 0
fi

seconds="${FUZZ_SMOKE_SECONDS:-5}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build for every target (incremental in fuzz/target).
cargo +nightly fuzz build
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz smoke: $target for ${seconds}s over $(find "$corpus" -type f | wc -l) corpus inputs"
  # The committed corpus is read only: new inputs go to a scratch directory that is thrown away.
  scratch=$(mktemp -d)
  if ! cargo +nightly fuzz run "$target" "$scratch" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=512 -timeout=5 -max_len=65536 \
    -print_final_stats=1 >"$scratch.log" 2>&1; then
    tail -n 40 "$scratch.log" >&2
    rm -rf "$scratch" "$scratch.log"
    echo "fuzz smoke: $target FAILED; the input that failed is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch.log" | tr '\n' ' '
  echo
  rm -rf "$scratch" "$scratch.log"
done
echo "fuzz smoke: ${#targets[@]} targets passed"
