#!/usr/bin/env bash
# Builds LazyFS (a FUSE file system that keeps un-fsynced writes in its own cache and drops them on
# "lazyfs::clear-cache", like a power cut) from the vendored source in tools/lazyfs/src, and prints the path
# of the binary as its last line of standard output. Everything else goes to standard error.
#
#   tools/lazyfs/build.sh [OUT_DIR]   default OUT_DIR: ${CARGO_TARGET_DIR:-<repo>/target}/lazyfs (kept between
#                                     runs: a second call with unchanged sources only prints the path)
#   LAZYFS_SRC=DIR build.sh           build another checkout of github.com/dsrhaslab/lazyfs instead
#
# Needs root for apt-get (only when a build dependency is missing): g++, pkg-config, libfuse3-dev, fuse3,
# libspdlog-dev, libtoml11-dev (Debian 12). Upstream's CMake files download toml11 and spdlog from GitHub at
# configure time, which CI machines may not reach; Debian ships the same versions (toml11 3.7.1, spdlog
# 1.10.0), so this compiles the sources directly against them with one g++ command (~45-60 s on 2 cores).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SRC=${LAZYFS_SRC:-$HERE/src}
OUT=${1:-${CARGO_TARGET_DIR:-$REPO/target}/lazyfs}
BIN=$OUT/lazyfs

[ -f "$SRC/lazyfs/src/main.cpp" ] || { echo "lazyfs build: no LazyFS source in $SRC" >&2; exit 1; }

packages=(g++ pkg-config libfuse3-dev fuse3 libspdlog-dev libtoml11-dev)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "lazyfs build: installing ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq >&2
  $sudo_cmd apt-get install -y -qq "${missing[@]}" >&2
fi

if [ -x "$BIN" ] && [ -z "$(find "$SRC" "$0" -newer "$BIN" -type f -print -quit)" ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$OUT"
echo "lazyfs build: compiling $SRC into $BIN" >&2
# shellcheck disable=SC2046  # pkg-config's flags must split into words
g++ -std=c++17 -O2 -w -o "$BIN.$$.tmp" \
  -I"$SRC/lazyfs/include" -I"$SRC/libs/libpcache/include" \
  $(find "$SRC/lazyfs/src" "$SRC/libs/libpcache/src" -name '*.cpp' | sort) \
  "$SRC/lazyfs/include/lazyfs/fusepp/Fuse.cpp" \
  $(pkg-config --cflags --libs spdlog fuse3) >&2
mv "$BIN.$$.tmp" "$BIN"
echo "$BIN"
