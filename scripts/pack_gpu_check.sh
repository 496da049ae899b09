#!/usr/bin/env bash
# Packs the GPU check's binaries for a machine that has a GPU but no compilers or Debian
# packages (the device machines of this workplace): builds the CUDA test and benchmark targets
# here, strips them, and copies them with every shared library they load except the C runtime
# and the CUDA libraries (the GPU machine's toolkit provides those) into DIR/bin and DIR/lib.
# Then, on the GPU machine: scripts/gpu_check.sh --bundle DIR (or DIR.tar.xz, also written).
#
#   scripts/pack_gpu_check.sh DIR      (default .gpu-bundle; .gitignore names .gpu-bundle*)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.gpu-bundle}
build=${BUILD_DIR:-$root/build-gpu}
cmake -S "$root" -B "$build" -DSTRATA_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > /dev/null
cmake --build "$build" -j "$(nproc)" --target strata_kernels_tests strata_core_tests strata_model_tests strata_trainer_tests strata_parallel_tests gpu_bench gpu_linear_bench gpu_block_bench gpu_model_bench
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
for exe in tests/strata_kernels_tests tests/strata_core_tests tests/strata_model_tests tests/strata_trainer_tests tests/strata_parallel_tests bench/gpu_bench bench/gpu_linear_bench bench/gpu_block_bench bench/gpu_model_bench; do
  cp "$build/$exe" "$dest/bin/"
  strip "$dest/bin/$(basename "$exe")"
  ldd "$build/$exe" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      libcuda.so*|libcudart.so*|libcublas*|libnccl*) ;;
      *) cp -nL "$lib" "$dest/lib/" ;;
    esac
  done
done
strip --strip-unneeded "$dest"/lib/*.so* 2>/dev/null || true
# One compressed file as well (about 20 MB; the directory is about 90 MB with OpenBLAS and ICU),
# small enough to carry to a machine that takes a bounded upload.
tar -cJf "$dest.tar.xz" -C "$(dirname "$dest")" "$(basename "$dest")"
du -sh "$dest" "$dest.tar.xz"
