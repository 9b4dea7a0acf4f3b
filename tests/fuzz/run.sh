#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoder, under sanitizers: every harness for SECONDS each.
#
#   bash tests/fuzz/run.sh [SECONDS]      # default 60
#
# rans_fuzzer: libFuzzer (clang -fsanitize=fuzzer,address,undefined) on the C decoder with the
# bundled model's tables; container_fuzzer: Atheris on the container parser and the whole decode
# path. Seeds: the corpus in tests/fuzz/corpus (real files of every format version, with the
# regressions), and real streams of the bundled model made here. One summary line per harness
# (executions, coverage, findings); exit 1 on any finding, its input kept in the work folder
# (FUZZ_WORK, default a temporary one) to add to tests/fuzz/regressions.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
work=${FUZZ_WORK:-$(mktemp -d)}
py=${PYTHON:-python}
cc=${CC_FUZZ:-clang}
mkdir -p "$work/rans_corpus" "$work/container_corpus" "$work/findings"
status=0

summary() {  # name, log: executions (summed over the log's runs), coverage and findings
    local name=$1 log=$2
    local execs cov findings
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" \
        | awk '{n += $NF} END {if (NR) print n}' || true)
    [[ -z "$execs" ]] && execs=$(grep -oE '#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+' || true)
    findings=$(ls "$work/findings" | grep -c "^$name-" || true)
    echo "fuzz $name: ${execs:-0} executions, coverage ${cov:-0}, findings $findings"
    [[ "$findings" == 0 ]] || status=1
}

# -- the C decoder -----------------------------------------------------------------------------
$py tests/fuzz/rans_tables.py "$work/tables.bin" "$work/rans_corpus"
$cc -g -O1 -std=c99 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    tests/fuzz/rans_fuzzer.c -o "$work/rans_fuzzer"
LAE_FUZZ_TABLES="$work/tables.bin" "$work/rans_fuzzer" "$work/rans_corpus" \
    -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$work/findings/rans-" \
    -timeout=10 -rss_limit_mb=2048 > "$work/rans.log" 2>&1 || true
summary rans "$work/rans.log"

# -- the container and the decode path ----------------------------------------------------------
# In rounds of at most 150 000 executions, each a fresh process on the growing corpus: the
# Python harness's resident memory creeps up by a few KB per execution inside Atheris (the same
# decodes outside the fuzzer stay flat, experiments/determinism), which in one long process
# ends at the RSS limit, as OSS-Fuzz's restarts avoid.
cp tests/fuzz/corpus/* "$work/container_corpus/"
cp tests/fuzz/regressions/* "$work/container_corpus/" 2>/dev/null || true
: > "$work/container.log"
end=$((SECONDS + seconds))
while (( SECONDS < end )); do
    $py tests/fuzz/container_fuzzer.py "$work/container_corpus" -max_total_time=$((end - SECONDS)) \
        -runs=150000 -print_final_stats=1 -artifact_prefix="$work/findings/container-" \
        -timeout=10 -rss_limit_mb=4096 >> "$work/container.log" 2>&1 || true
    ls "$work/findings" | grep -q '^container-' && break
done
summary container "$work/container.log"
exit $status
