#!/usr/bin/env bash
# The Debian package, installed for real (issue 12, item 7): builds it from the debug binary the test suite
# made, installs it with `dpkg -i`, checks the unit with `systemd-analyze verify`, the user and the modes of
# what the package owns, then starts the installed binary with the installed config the way the unit does
# (as user tandem, with CAP_NET_BIND_SERVICE only, so it binds HTTP 80 and TFTP 69), writes and reads a
# document through the installed CLI, stops it, and purges the package. Needs root (dpkg); elsewhere it says
# it skipped. Bounded: every wait has a deadline.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "package test skipped: it installs a package and needs root (uid $(id -u))"
  exit 0
fi
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

fail() { echo "package test FAILED: $*" >&2; exit 1; }
cleanup() {
  if [ -n "${pid:-}" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  dpkg --purge tandem >/dev/null 2>&1 || true
  rm -rf /var/lib/tandem
}
trap cleanup EXIT
cleanup

deb=$(packaging/build-deb.sh dev | tail -n 1)
echo "package test: built $deb ($(du -h "$deb" | cut -f1))"
dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
dpkg -s tandem | grep -q '^Status: install ok installed' || fail "dpkg does not list tandem as installed"

unit=$(dpkg -L tandem | grep '/systemd/system/tandem.service$') || fail "the package has no tandem.service"
systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
for key in 'User=tandem' 'ProtectSystem=strict' 'ReadWritePaths=/var/lib/tandem' \
           'AmbientCapabilities=CAP_NET_BIND_SERVICE' 'NoNewPrivileges=yes'; do
  grep -qx "$key" "$unit" || fail "$unit lacks $key"
done

getent passwd tandem >/dev/null || fail "no user tandem"
[ "$(stat -c '%U %a' /var/lib/tandem)" = "tandem 700" ] || fail "/var/lib/tandem is $(stat -c '%U %a' /var/lib/tandem)"
[ "$(stat -c '%U:%G %a' /etc/tandem/tandem.toml)" = "root:tandem 640" ] \
  || fail "/etc/tandem/tandem.toml is $(stat -c '%U:%G %a' /etc/tandem/tandem.toml)"
[ -s /usr/share/man/man1/tandem.1.gz ] || fail "no manual page"
zcat /usr/share/man/man1/tandem.1.gz | grep -q 'TANDEM SERVERS ADD' || fail "the manual page lacks the commands"

# The installed binary with the installed config, as the unit runs it: ports 80, 69, 7070, 7071 of 127.0.0.1.
busy=$(ss -Htlnu '( sport = :80 or sport = :69 or sport = :7070 or sport = :7071 )' | grep 127.0.0.1 || true)
busy+=$(ss -Htlnu '( sport = :80 or sport = :69 or sport = :7070 or sport = :7071 )' | grep -E '\*:|0\.0\.0\.0:' || true)
if [ -n "$busy" ]; then
  echo "package test: the start check skipped, a port it needs is taken:"; echo "$busy"
  echo "package test: passed (install, unit, user, modes, manual page)"
  exit 0
fi
log=$(mktemp)
setpriv --reuid=tandem --regid=tandem --init-groups --inh-caps=+net_bind_service \
  --ambient-caps=+net_bind_service --no-new-privs \
  /usr/bin/tandem serve --config /etc/tandem/tandem.toml >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  /usr/bin/tandem --server http://127.0.0.1:7070 status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "the installed node exited"; }
  sleep 0.1
done
/usr/bin/tandem --server http://127.0.0.1:7070 status >/dev/null || { cat "$log"; fail "the installed node does not answer"; }
/usr/bin/tandem --server http://127.0.0.1:7070 put notes installed '{"by": "package test"}' --reason "package test" >/dev/null \
  || fail "put through the installed node"
/usr/bin/tandem --server http://127.0.0.1:7070 get notes installed | grep -q 'package test' || fail "get"
ss -Htlnp '( sport = :80 )' | grep -q tandem || fail "the boot server does not listen on port 80"
ss -Hlnup '( sport = :69 )' | grep -q tandem || fail "the TFTP server does not listen on port 69"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:80/boot/v1/config/02:00:00:00:00:99)
[ "$code" = "404" ] || fail "the boot server answered $code for an unknown MAC (expected 404)"
[ "$(stat -c '%U' /var/lib/tandem/* | sort -u)" = "tandem" ] || fail "files in /var/lib/tandem not owned by tandem"
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the installed node did not stop on SIGTERM"
pid=""
echo "package test: passed (install, unit verified, user and modes, manual page, installed node served ports 80/69/7070 as user tandem, stopped on SIGTERM)"
