#!/usr/bin/env bash
# W6 build: `ferry build` of the synthetic N-model project (N views, 2N
# not_null/unique tests; shared/bench/gen_synth_project.py), against the
# goal of 60 s for N = 1,000. dbt-duckdb 1.10 had finished 1,277 of 3,001
# nodes after 4 minutes on this machine (shared/bench/README.md).
#
#   scripts/bench_build.sh [N] [RUNS]      (default 1000 3)
#
# Needs python3 and GNU time. Prints the median seconds and peak RSS and
# appends them to benches/results/build-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
n=${1:-1000}
runs=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
python3 "$shared/bench/gen_synth_project.py" "$work/synth" "$n"
for _ in $(seq "$runs"); do
  rm -rf "$work/synth/.ferry"
  /usr/bin/time -f "%e %M" -o "$work/t" "$ferry" build --project-dir "$work/synth" -q --no-load \
    >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
  cat "$work/t" >>"$work/times"
done
median=$(awk '{print $1}' "$work/times" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
peak=$(( $(awk '{print $2}' "$work/times" | sort -n | tail -1) / 1024 ))
counts=$(python3 -c "
import json, collections
r = json.load(open('$work/synth/.ferry/run_results.json'))
c = collections.Counter(x['status'] for x in r['results'])
print(', '.join(f'{k} {v}' for k, v in sorted(c.items())))")
out=benches/results/build-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "# ferry build, synthetic $n models + $((2 * n)) tests, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, median of $runs"
  echo
  echo "| ferry | seconds | peak RSS | nodes |"
  echo "|---|---|---|---|"
  echo "| $(git describe --always --dirty) | $median | ${peak} MiB | $counts |"
  echo
} | tee -a "$out"
