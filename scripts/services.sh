#!/usr/bin/env bash
# Install the system services the test suite talks to on loopback (redis-server, chromium).
# The tests start and stop their own server processes; this only makes the binaries available.
set -u
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/arcoforge-apt.log 2>&1 \
      || echo "warning: could not install ${need[*]} (see /tmp/arcoforge-apt.log); tests that need them are skipped"
  else
    echo "warning: ${need[*]} missing and apt-get unavailable; tests that need them are skipped"
  fi
fi
exit 0
