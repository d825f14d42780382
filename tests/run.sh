#!/usr/bin/env bash
# run.sh — the whole test suite, in stages (each one must pass):
#   1. warnings-as-errors build, every ctest test (unit, integration, deploy)
#   2. clang ASan+UBSan build, every ctest test again (the servers run instrumented)
#   3. clang libFuzzer build, each harness fuzzed for FUZZ_SECONDS (default 20) from its corpus
# Environment: SACGATE_SKIP_DEPS=1 skips the package check; STAGES="1 2 3" picks stages;
# JOBS sets ctest parallelism (default 4: the integration tests mostly wait on their gateways, a
# 2-core machine stays below full load with four at once).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[ "${SACGATE_SKIP_DEPS:-0}" = 1 ] || scripts/deps.sh
stages=${STAGES:-1 2 3}
jobs=${JOBS:-4}
fuzz_seconds=${FUZZ_SECONDS:-20}
t0=$SECONDS

stage() { echo; echo "==== stage $1 ($((SECONDS - t0)) s so far)"; }

for s in $stages; do
  case $s in
    1)
      stage "1: build (-Werror) and ctest"
      cmake -S . -B build -G Ninja -DSACGATE_WERROR=ON >/dev/null
      cmake --build build
      ctest --test-dir build --output-on-failure -j"$jobs"
      ;;
    2)
      stage "2: ASan+UBSan build and ctest"
      cmake -S . -B build-asan -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSACGATE_WERROR=ON \
        -DSACGATE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
      cmake --build build-asan
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build-asan --output-on-failure -j"$jobs"
      ;;
    3)
      stage "3: libFuzzer, ${fuzz_seconds} s per harness"
      cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSACGATE_FUZZ=ON \
        -DSACGATE_SANITIZE=ON >/dev/null
      cmake --build build-fuzz --target fuzz_mqtt fuzz_sas fuzz_propbag fuzz_wire fuzz_ndjson fuzz_sim fuzz_ws fuzz_inquiry \
        fuzz_tlspsk fuzz_x509
      for f in mqtt sas propbag wire ndjson sim ws inquiry tlspsk x509; do
        work=$(mktemp -d)
        cp tests/fuzz/corpus/$f/* "$work/"
        echo "fuzz_$f:"
        rc=0
        build-fuzz/tests/fuzz/fuzz_$f -max_total_time="$fuzz_seconds" -max_len=8192 -print_final_stats=1 \
          -artifact_prefix="$root/build-fuzz/fuzz_$f-" "$work" >"build-fuzz/fuzz_$f.log" 2>&1 || rc=$?
        # its figures, for the CI log
        sed -n -E '/^stat::(number_of_executed_units|new_units_added)/p' "build-fuzz/fuzz_$f.log"
        rm -rf "$work"
        # libFuzzer exits non-zero on a crash, leak or timeout.
        if [ $rc -ne 0 ]; then
          tail -40 "build-fuzz/fuzz_$f.log"
          echo "fuzz_$f found a problem (exit $rc): reproducer in build-fuzz/fuzz_$f-*"
          exit 1
        fi
      done
      ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
echo
echo "==== all stages passed in $((SECONDS - t0)) s"
