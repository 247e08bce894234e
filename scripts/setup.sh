#!/usr/bin/env bash
# One-time set-up for a fresh Debian machine with Node and npm: npm dependencies (Bun among
# them), OpenBLAS and Chromium (the dashboard's browser tests) from Debian when missing, and the
# gpu-core native build. Cheap when done.
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

# Debian packages, installed when missing: as root, or with passwordless sudo; otherwise say what to install.
apt_install() {
  local package=$1 why=$2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing $package from Debian ($why)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "$package" >&2
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    log "installing $package from Debian ($why, sudo)"
    sudo -n env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -qq && apt-get install -y -qq $package" >&2
  else
    echo "setup: $package is missing ($why); install it (e.g. 'sudo apt-get install $package') and run again." >&2
    exit 1
  fi
}

# OpenBLAS (CBLAS header + library) for the CPU backend.
have_openblas() {
  [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] \
    || [ -f /usr/include/openblas/cblas.h ] || [ -f /usr/include/aarch64-linux-gnu/cblas.h ]
}
have_openblas || apt_install libopenblas-dev "the CPU backend"
# oneDNN (built on OpenMP, as Debian ships it) for the CPU backend's 3x3 convolutions.
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || apt_install libdnnl-dev "the CPU backend's convolutions"

# Chromium, driven headless by playwright-core in the dashboard's browser tests (test/dashboard/).
[ -x /usr/bin/chromium ] || apt_install chromium "the dashboard's browser tests"

# A font for the charts' and grids' text (SVG rasterised by sharp's librsvg).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_install fonts-dejavu-core "text in charts and image grids"

# gpu-core: make is incremental, so this is a no-op when nothing changed.
make -s -C gpu-core >&2
