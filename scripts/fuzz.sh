#!/usr/bin/env bash
# Builds each libFuzzer harness of tests/fuzz/ on its own (clang-14, ASan +
# UBSan, the command in each harness's header) and runs it for a fixed number
# of executions from a copy of its seed corpus (tests/fuzz/corpus/<name>),
# with a fixed seed. Any finding (a crash, a leak, a UB report, an oracle
# failure, a timeout) fails the script and leaves the input in build/fuzz/.
#   KTSA_FUZZ_SCALE=N  multiplies every execution count (default 1)
#   KTSA_FUZZ_ONLY="kernels loss"  runs only the named harnesses
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${KTSA_FUZZ_CXX:-clang++-14}
SCALE=${KTSA_FUZZ_SCALE:-1}
ONLY=${KTSA_FUZZ_ONLY:-kernels loss metrics eval_readers}
OUT=build/fuzz
mkdir -p "$OUT"
# Executions per harness: sized for about a minute each on 2 cores.
declare -A RUNS=([kernels]=6000 [loss]=60000 [metrics]=60000 [eval_readers]=20000)
declare -A MAXLEN=([kernels]=8192 [loss]=512 [metrics]=512 [eval_readers]=2048)

pids=()
for h in $ONLY; do  # build two at a time
  $CXX -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude "tests/fuzz/fuzz_$h.cpp" \
    -o "$OUT/fuzz_$h" &
  pids+=($!)
  if ((${#pids[@]} == 2)); then wait "${pids[0]}"; wait "${pids[1]}"; pids=(); fi
done
for p in "${pids[@]}"; do wait "$p"; done

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
for h in $ONLY; do
  rm -rf "$OUT/corpus_$h"
  cp -r "tests/fuzz/corpus/$h" "$OUT/corpus_$h"
  runs=$((RUNS[$h] * SCALE))
  echo "ktsa: fuzz_$h: $runs executions"
  start=$(date +%s)
  if ! "$OUT/fuzz_$h" -runs="$runs" -seed=1 -len_control=0 -max_len="${MAXLEN[$h]}" \
      -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$OUT/$h-" \
      "$OUT/corpus_$h" >"$OUT/$h.log" 2>&1; then
    grep -a -E "finding|ERROR|SUMMARY|runtime error" "$OUT/$h.log" | head -n 20 || true
    echo "ktsa: fuzz_$h found a problem: input saved as $OUT/$h-*; log $OUT/$h.log" >&2
    exit 1
  fi
  echo "ktsa: fuzz_$h: no finding ($(($(date +%s) - start)) s; $(grep -a -o 'cov: [0-9]*' "$OUT/$h.log" | tail -n 1))"
done
