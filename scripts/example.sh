#!/usr/bin/env bash
# Installs what is missing, builds the main example in Release and runs it on
# its built-in data: the KTSA paper's system on a simulated market calibrated to
# the paper's Base CVRs (Table 1: logged actions, Table 2: learned Oracles,
# Table 3: Base, MLE, KTO, KTSA per category under the buyer and the Oracle).
# Extra arguments go to the example (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh
cmake --preset release >/dev/null
cmake --build --preset release --target ktsa_self_alignment
./build/release/examples/self_alignment/ktsa_self_alignment "$@"
