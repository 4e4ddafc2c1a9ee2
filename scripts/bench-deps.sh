#!/usr/bin/env bash
# Installs the external programs `tandem bench boot` drives when they are missing (Debian packages): nginx and
# wrk for the HTTP comparison, atftp (client) and atftpd (reference server) for the TFTP comparison, curl for the
# concurrent downloads; and etcd 3.4 (server, etcdctl) for `tandem bench cluster --vs-etcd` (which also installs it
# itself when missing). Safe to run again: it installs only what is missing.
set -euo pipefail

# command -> Debian package, for every external program the boot benchmark drives.
declare -A needed=(
  [nginx]=nginx-light
  [wrk]=wrk
  [atftp]=atftp
  [atftpd]=atftpd
  [curl]=curl
  [etcd]=etcd-server
  [etcdctl]=etcd-client
)

missing=()
for command in "${!needed[@]}"; do
  # nginx and atftpd live in /usr/sbin, which is not on every user's PATH.
  command -v "$command" >/dev/null 2>&1 || [ -x "/usr/sbin/$command" ] || missing+=("${needed[$command]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing benchmark dependencies: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
else
  echo "benchmark dependencies present: ${!needed[*]}"
fi
