#!/usr/bin/env bash
# Installs what is missing, builds in Release (CUDA compiled when nvcc is
# present), runs every test, then builds and runs the host tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then runs the libFuzzer
# harnesses of tests/fuzz/ for a fixed number of executions (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
cmake --preset release
cmake --build --preset release
ctest --preset release
if grep -q '^KTSA_ENABLE_CUDA:BOOL=ON' build/release/CMakeCache.txt; then
  if nvidia-smi -L >/dev/null 2>&1; then
    echo "ktsa: CUDA tests (label gpu) compiled and run on: $(nvidia-smi -L | head -n 1)"
  else
    echo "ktsa: no CUDA device here: CUDA code compiled with nvcc; GPU tests (label gpu) skipped"
  fi
else
  echo "ktsa: nvcc not found: CUDA code not compiled, GPU tests not built"
fi
cmake --preset sanitize
cmake --build --preset sanitize
ctest --preset sanitize
# issue 16: every libFuzzer harness, a fixed number of executions each.
bash scripts/fuzz.sh
echo "ktsa: all tests passed (release + sanitize + fuzz)"
