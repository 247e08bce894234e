#!/usr/bin/env bash
# Packs what a bare GPU machine needs to run the gpu-core tests and the CUDA benchmark into one
# archive under 64 MiB: Bun (xz-compressed), the engine tests and bench/cuda.ts bundled by
# `bun build` (npm dependencies inlined), the test fixtures, the gpu-core sources to build there,
# OpenBLAS from this machine's Debian packages (for the CPU reference backend, if the GPU machine
# lacks it), and run-device.sh, which builds and runs everything. See gpu-core/cuda/README.md.
#
#   bash scripts/pack-device.sh            -> .cache/device/ddpo-device.tar
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=.cache/device
STAGE=$OUT/stage
ARCHIVE=$OUT/ddpo-device.tar
LIMIT=$((64 * 1024 * 1024))
BUN=node_modules/.bin/bun
log() { printf '[pack-device] %s\n' "$*" >&2; }

[ -x "$BUN" ] || { echo "pack-device: run scripts/setup.sh first (no $BUN)" >&2; exit 1; }
rm -rf "$STAGE"
HERE=$PWD
mkdir -p "$STAGE/test/gpu-core" "$STAGE/bench" "$STAGE/debs"

# Bun: the binary compresses ~4x; reuse the last compression when the binary has not changed.
BUN_BIN=$(readlink -f "$BUN")
if [ ! -f "$OUT/bun.xz" ] || [ "$BUN_BIN" -nt "$OUT/bun.xz" ]; then
  log "compressing $(basename "$BUN_BIN") ($(du -h "$BUN_BIN" | cut -f1))"
  xz -6 -T1 -c "$BUN_BIN" >"$OUT/bun.xz.tmp" && mv "$OUT/bun.xz.tmp" "$OUT/bun.xz"
fi
cp "$OUT/bun.xz" "$STAGE/bun.xz"

# gpu-core sources (built on the GPU machine: -march=native there, and its CUDA libraries).
mkdir -p "$STAGE/gpu-core"
cp -r gpu-core/Makefile gpu-core/include gpu-core/core gpu-core/cpu gpu-core/cuda "$STAGE/gpu-core/"

# Tests and bench, bundled. Each bundle keeps its path, so import.meta.dir finds test/fixtures
# as in the repository; the engine library comes from GPU_CORE_LIB_DIR (run-device.sh sets it).
# worker.test.ts is left out: its Worker loads a .ts file beside it that a bundle does not carry.
for t in test/gpu-core/*.test.ts; do
  case "$t" in */worker.test.ts) continue ;; esac
  "$BUN" build "$t" --target=bun --outfile "$STAGE/${t%.ts}.js" >/dev/null
done
"$BUN" build bench/cuda.ts --target=bun --outfile "$STAGE/bench/cuda.js" >/dev/null
cp -r test/fixtures "$STAGE/test/fixtures"

# OpenBLAS (+ its Fortran runtime) as Debian packages: the CPU backend is the reference the CUDA
# tests compare against. Debian 12's glibc (2.36) is older than the GPU image's, so they run there.
# Only the headers and shared libraries travel (the -dev package's static library is most of it).
debs=(libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0)
if (cd "$STAGE/debs" && apt-get download "${debs[@]}" >/dev/null 2>&1); then
  mkdir -p "$OUT/blas" && rm -rf "$OUT/blas"/*
  for d in "$STAGE"/debs/*.deb; do dpkg -x "$d" "$OUT/blas"; done
  (cd "$OUT/blas" && find . \( -name '*.h' -o -name '*.so*' \) \( -type f -o -type l \) -print0 |
    tar --null -cJf "$HERE/$STAGE/blas.tar.xz" -T -)
  log "packed ${debs[*]} (headers and shared libraries)"
else
  log "warning: could not download ${debs[*]}; the GPU machine must have OpenBLAS itself"
fi
rm -rf "$STAGE/debs"

cat >"$STAGE/run-device.sh" <<'EOF'
#!/usr/bin/env bash
# On the GPU machine, from the unpacked archive: builds gpu-core (CPU and CUDA), runs the engine
# tests (CUDA against CPU) and the CUDA benchmark. Results go to $OUT when it is set.
#   bash run-device.sh [test|bench|all]   (default all)
set -uo pipefail
cd "$(dirname "$0")"
HERE=$PWD
RES=${OUT:-$HERE/results}
mkdir -p "$RES"
what=${1:-all}
[ -x bun ] || xz -dc bun.xz >bun && chmod +x bun

# OpenBLAS from the packed Debian files when the system has no cblas.h.
MAKEVARS=()
have_cblas=0
for h in /usr/include/cblas.h /usr/include/x86_64-linux-gnu/cblas.h /usr/include/openblas/cblas.h; do
  [ -f "$h" ] && have_cblas=1
done
if [ "$have_cblas" = 0 ] && [ -f blas.tar.xz ]; then
  mkdir -p blas && tar -xJf blas.tar.xz -C blas
  inc=$(dirname "$(find "$HERE/blas" -name cblas.h | head -1)")
  lib=$(dirname "$(find "$HERE/blas" -name 'libopenblas.so*' | head -1)")
  export LD_LIBRARY_PATH="$lib:$HERE/blas/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  MAKEVARS=(CPPFLAGS="-I$inc" LDLIBS="-L$lib -L$HERE/blas/usr/lib/x86_64-linux-gnu -lopenblas -lm -lpthread")
fi
# oneDNN (the CPU backend's 3x3 convolutions) is not packed (39 MB of library): on a machine
# without it the CPU reference builds with DNNL=0, every convolution on its GEMM paths.
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || MAKEVARS+=(DNNL=0)
# cuBLAS/cuDNN: the toolkit's, else the pip wheels python3 imports (PyTorch's). cuDNN opens its
# sub-libraries at run time, so its folder goes on the loader path too.
NV=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
[ -n "$NV" ] && export LD_LIBRARY_PATH="$(ls -d "$NV"/*/lib 2>/dev/null | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# `all` builds the CUDA library whenever nvcc, cuBLAS and cuDNN are found, and says so when not.
make -C gpu-core -j8 all ${NV:+NVIDIA_ROOT=$NV} "${MAKEVARS[@]}" 2>&1 | tee "$RES/build.log" | tail -5
export GPU_CORE_LIB_DIR=$HERE/gpu-core/build
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RES/device.txt"

rc=0
if [ "$what" = all ] || [ "$what" = test ]; then
  # The CPU op table and the CUDA-vs-CPU table; the default backend stays CPU for the CPU tests.
  GPU_CORE_BACKEND=cpu ./bun test --timeout 600000 test/gpu-core 2>&1 | tee "$RES/test.log" | tail -40
  rc=${PIPESTATUS[0]}
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  ./bun bench/cuda.js --json 2>&1 | tee "$RES/bench.log" | tail -45
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
exit $rc
EOF
chmod +x "$STAGE/run-device.sh"

tar -cf "$ARCHIVE" -C "$STAGE" .
rm -rf "$STAGE" "$OUT/blas" # the bundles are build output; keep only the archive (and bun.xz)
size=$(stat -c %s "$ARCHIVE")
log "$ARCHIVE: $((size / 1024 / 1024)) MiB"
if [ "$size" -ge "$LIMIT" ]; then
  echo "pack-device: $ARCHIVE is $size bytes, over the 64 MiB limit" >&2
  exit 1
fi
