#!/usr/bin/env bash
# Deeper runs of the door fuzz tests (tests/fuzz_*.rs, tests/fuzzkit):
# every door — .mgen, .mir, program directories, checkpoints, JSONL inputs —
# mutated CASES times per seed, each test binary under a time limit and an
# address-space cap (the tests set it). A panic fails the case and names
# it; an abort kills the test binary (reported as a signal); a hang hits the
# time limit. `cargo test --release` runs the same tests with fewer cases.
#
# usage: scripts/fuzz.sh [CASES [SEEDS [MINUTES]]]   (default 20000 1 30)
# replay a failure: MGEN_FUZZ_SEED=S MGEN_FUZZ_CASES=N cargo test --release --test fuzz_X
set -uo pipefail
cd "$(dirname "$0")/.."
cases=${1:-20000}
seeds=${2:-1}
minutes=${3:-30}
cargo build --release --tests --quiet || exit 1
fail=0
for t in tests/fuzz_*.rs; do
    name=$(basename "$t" .rs)
    for seed in $(seq 1 "$seeds"); do
        start=$(date +%s)
        out=$(MGEN_FUZZ_CASES=$cases MGEN_FUZZ_SEED=$seed timeout "${minutes}m" \
            cargo test --release --quiet --test "$name" 2>&1)
        rc=$?
        secs=$(( $(date +%s) - start ))
        doors=$(grep -o 'test result: ok\. [0-9]* passed' <<<"$out" | grep -o '[0-9]* passed' | cut -d' ' -f1)
        case $rc in
            0) verdict="ok: $doors door test(s), 0 panics, 0 aborts, 0 hangs" ;;
            124) verdict="HANG: over ${minutes} min"; fail=1 ;;
            *) if grep -q 'signal: \|SIGABRT\|memory allocation' <<<"$out"; then
                   verdict="ABORT"; else verdict="PANIC"; fi
               fail=1
               grep -m3 'panicked\|case [0-9]* (MGEN_FUZZ_SEED\|signal' <<<"$out" ;;
        esac
        printf '%-14s seed %-3s %6s cases/test  %4ss  %s\n' "$name" "$seed" "$cases" "$secs" "$verdict"
    done
done
exit $fail
