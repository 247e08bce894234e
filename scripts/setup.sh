#!/usr/bin/env bash
# One-time set-up for a fresh Debian machine with Node and npm: npm dependencies (Bun among
# them), OpenBLAS from Debian when missing, and the gpu-core native build. Cheap when done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# npm dependencies: reinstall when package.json or the lock file is newer than the install.
if [ ! -x node_modules/.bin/bun ] || [ package.json -nt node_modules/.install-stamp ] \
  || { [ -f package-lock.json ] && [ package-lock.json -nt node_modules/.install-stamp ]; }; then
  log "installing npm dependencies"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
  touch node_modules/.install-stamp
fi

# OpenBLAS (CBLAS header + library) for the CPU backend.
have_openblas() {
  [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] \
    || [ -f /usr/include/openblas/cblas.h ] || [ -f /usr/include/aarch64-linux-gnu/cblas.h ]
}
if ! have_openblas; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libopenblas-dev from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq libopenblas-dev >&2
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    log "installing libopenblas-dev from Debian (sudo)"
    sudo -n env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq libopenblas-dev' >&2
  else
    echo "setup: OpenBLAS is missing; install it (e.g. 'sudo apt-get install libopenblas-dev') and run again." >&2
    exit 1
  fi
fi

# gpu-core: make is incremental, so this is a no-op when nothing changed.
make -s -C gpu-core >&2
