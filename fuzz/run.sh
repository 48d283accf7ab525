#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each):
#   bash fuzz/run.sh [SECONDS]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets it use the sanitizer flags it needs. A crash stops
# the run and leaves its input in fuzz/artifacts/<target>/: fix the cause,
# then copy the input into fuzz/regressions/<target>/ so the test suite
# replays it (tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "error: cargo-fuzz is missing; run 'cargo install cargo-fuzz' and run this again" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1
for target in algo_request pipe_frame kraken_rest kraken_ws; do
    mkdir -p "corpus/$target"
    # Seeds: the regression inputs and the hand-written seeds.
    cp -n regressions/"$target"/* seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    echo "== fuzz $target for ${secs}s"
    log="artifacts/$target.log"
    mkdir -p artifacts
    if ! cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096 \
        -dict="dicts/$target.dict" -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" >&2 || tail -20 "$log" >&2
        echo "fuzz target $target found a crash: see fuzz/artifacts/$target/ and $log" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$log" || true
done
echo "fuzz: no crash in ${secs}s per target"
