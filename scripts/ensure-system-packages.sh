#!/usr/bin/env bash
# Makes sure the Debian packages the sandbox runs are installed. Installs the missing ones with apt-get
# when running as root; otherwise names them and exits non-zero. Idempotent and quiet when all are there.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
have pg_basebackup && have pg_dump && have pg_restore || missing+=(postgresql-client)
have redis-server && have redis-cli || missing+=(redis-server redis-tools)
have rclone || missing+=(rclone)
have prometheus && have promtool || missing+=(prometheus)
have prometheus-alertmanager || missing+=(prometheus-alertmanager)
have chromium || missing+=(chromium)  # the e2e test that renders the Prefect UI
have node && have npm || missing+=(nodejs npm)  # npm ci: anvil and solc (package.json)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "scaleops needs these Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# A policy-rc.d keeps the packages' own system services from starting: the sandbox runs its own.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
