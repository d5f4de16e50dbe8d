#!/usr/bin/env bash
# Install what the build and tests need, only where it is missing, so a fresh machine works from a
# clean clone and a warm one does nothing:
#   - pinned Python tools (requirements-dev.txt) in $VENV, checkov (requirements-checkov.txt) in
#     $CHECKOV_VENV — each venv is rebuilt when its requirements file changes (hash stamp);
#   - Debian packages: PostgreSQL 15 server binaries, qemu-user-static + arm64 libc (to run the
#     arm64 bootstrap), chromium + chromium-driver (the browser test), only when absent;
#   - the browser tracker the browser test loads (tests/browser, npm ci, when its lock changes);
#   - the rustup target for arm64 Lambda builds.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VENV:?VENV must be set (the Makefile sets it)}"
: "${CHECKOV_VENV:?CHECKOV_VENV must be set}"

venv() { # venv DIR REQUIREMENTS
  local dir=$1 req=$2 stamp
  stamp=$(sha256sum "$req" | cut -c1-16)
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then return 0; fi
  echo "==> creating $dir from $req"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
  echo "$stamp" > "$dir/.stamp"
}
venv "$VENV" requirements-dev.txt
venv "$CHECKOV_VENV" requirements-checkov.txt

missing=()
pg_bindir() { command -v pg_config >/dev/null && pg_config --bindir 2>/dev/null; ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
found_pg=""
for d in $(pg_bindir); do [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && found_pg=$d; done
[[ -n "$found_pg" ]] || missing+=(postgresql-15)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
[[ -d /usr/aarch64-linux-gnu/lib ]] || missing+=(libc6-arm64-cross)
# The end-to-end browser phase drives headless Chromium over WebDriver (tests/tests/common/browser.rs).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Snowplow's browser tracker from npm, pinned by tests/browser/package-lock.json, served to the
# end-to-end test's page (phase 6).
npm_stamp=$(sha256sum tests/browser/package-lock.json | cut -c1-16)
if [[ ! -f tests/browser/node_modules/.stamp || "$(cat tests/browser/node_modules/.stamp)" != "$npm_stamp" ]]; then
  echo "==> npm ci in tests/browser"
  npm ci --prefix tests/browser --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$npm_stamp" > tests/browser/node_modules/.stamp
fi

if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "==> rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi
