#!/usr/bin/env bash
# Installs the Debian packages ktsa needs to build, test, benchmark and run its
# examples; does nothing for packages that are already there.
set -euo pipefail
packages=(cmake g++ make catch2 libeigen3-dev libbenchmark-dev gnuplot-nox)
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
