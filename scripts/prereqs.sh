#!/usr/bin/env bash
# Idempotently installs the system tools the tests need (Debian/Ubuntu, run as root):
#   kcat, openssl, Java 17+ (java + keytool), Maven, promtool (package prometheus), redis-server.
# Runs `apt-get update` only when something has to be installed; prints nothing when all is present.
# Installed daemons (redis, prometheus) are NOT started: tests start their own instances.
set -euo pipefail

die() { echo "prereqs.sh: ERROR: $*" >&2; exit 1; }

java_ok() {
  command -v java >/dev/null 2>&1 && command -v keytool >/dev/null 2>&1 || return 1
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2; exit}')
  [[ -n "$v" && "${v%%.*}" -ge 17 ]]
}

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

((${#missing[@]} == 0)) && exit 0

[[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"

echo "prereqs.sh: installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive

# Keep package post-install scripts from starting daemons (redis, prometheus) on this machine.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
fi
cleanup() { if ((own_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT

log=$(mktemp -t prereqs-apt.XXXXXX)
if ! apt-get update -qq >"$log" 2>&1; then
  cat "$log" >&2; die "apt-get update failed"
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
  tail -n 40 "$log" >&2; die "apt-get install ${missing[*]} failed"
fi
rm -f "$log"

# Verify.
command -v kcat >/dev/null 2>&1 || die "kcat still missing after install"
command -v openssl >/dev/null 2>&1 || die "openssl still missing after install"
java_ok || die "Java 17+ (java, keytool) still missing after install"
command -v mvn >/dev/null 2>&1 || die "mvn still missing after install"
command -v promtool >/dev/null 2>&1 || die "promtool still missing after install"
command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install"
echo "prereqs.sh: done" >&2
