#!/usr/bin/env bash
# Installs the Debian packages ktsa needs to build, test, benchmark and run its
# examples; does nothing for packages that are already there.
set -euo pipefail
packages=(cmake g++ make catch2 libeigen3-dev libbenchmark-dev gnuplot-nox)
# Interop adapters, packaging tests and the torch clients (issue 12).
packages+=(xtensor-dev libdlpack-dev pkg-config libtorch-dev python3-torch python3-dev
           python3-setuptools ninja-build pybind11-dev)
packages+=(libopenmpi-dev openmpi-bin)  # ktsa::mpi and the MPI tests (label mpi)
# The fused linear head: oneDNN (its default GEMM) and OpenBLAS (compared in its test and bench).
packages+=(libdnnl-dev libopenblas-dev)
packages+=(libfaiss-dev)  # ktsa::faiss, ktsa/retrieval/faiss.hpp (issue 15)
# issue 16: the libFuzzer harnesses (scripts/fuzz.sh)
packages+=(clang-14 libfuzzer-14-dev libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "ktsa: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
