#!/usr/bin/env bash
# W6 with a package: the synthetic N-model project rewritten so that every
# model calls dbt_utils.star and dbt_utils.generate_surrogate_key
# (scripts/synth_dbt_utils.py, dbt-utils from shared/dbt/dbt-utils as a
# local package), compiled and built by ferry beside dbt-core in one run.
# Goal (issue 25): ferry compiles 1,000 models in under 1 s and builds them
# (1,000 views, 2,000 tests) in under 15 s.
#
#   scripts/bench_packages.sh [N]          (default 1000)
#
# Needs: hyperfine, python3, and for the peer dbt-core 1.10 + dbt-duckdb
# 1.10 (DBT=/path/to/dbt; the dbt rows are skipped without it). dbt's build
# is given DBT_BUILD_LIMIT seconds (default 300) and reported as the nodes
# it finished. Results are appended to benches/results/packages-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
dbt=${DBT:-$(command -v dbt || true)}
n=${1:-1000}
limit=${DBT_BUILD_LIMIT:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
proj=$work/synth
python3 "$shared/bench/gen_synth_project.py" "$proj" "$n"
python3 scripts/synth_dbt_utils.py "$proj" "$shared/dbt/dbt-utils"
# ferry loads into its embedded SQLite target; dbt into DuckDB. Neither
# build loads rows anywhere that matters: ferry is run with --no-load.
mkdir -p "$work/ferry" "$work/dbt"
printf 'synth:\n  target: t\n  outputs:\n    t:\n      type: sqlite\n      path: .ferry/ferry.db\n' >"$work/ferry/profiles.yml"
printf 'synth:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: %s/synth.duckdb\n' "$work" >"$work/dbt/profiles.yml"
"$ferry" deps --project-dir "$proj" >/dev/null

out=benches/results/packages-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "# $n models calling dbt_utils.star + generate_surrogate_key, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ferry $(git describe --always --dirty)"
  echo
} >>"$out"
hyperfine --warmup 2 --runs 10 --export-markdown "$work/compile.md" \
  -n "ferry compile ($n models)" "$ferry compile --project-dir $proj --profiles-dir $work/ferry"
cat "$work/compile.md" >>"$out"
hyperfine --runs 3 --prepare "rm -rf $proj/.ferry" --export-markdown "$work/build.md" \
  -n "ferry build --no-load ($n models, $((2 * n)) tests)" \
  "$ferry build --project-dir $proj --profiles-dir $work/ferry --no-load -q"
cat "$work/build.md" >>"$out"
python3 -c "
import json, collections
r = json.load(open('$proj/.ferry/run_results.json'))
c = collections.Counter(x['status'] for x in r['results'])
print('ferry build nodes:', ', '.join(f'{k} {v}' for k, v in sorted(c.items())))" | tee -a "$out"

if [ -n "$dbt" ]; then
  (cd "$proj" && "$dbt" deps --profiles-dir "$work/dbt" >/dev/null)
  hyperfine --warmup 1 --runs 3 --export-markdown "$work/dbt.md" \
    -n "dbt parse ($n models)" "$dbt parse --project-dir $proj --profiles-dir $work/dbt --no-partial-parse" \
    -n "dbt compile ($n models)" "$dbt compile --project-dir $proj --profiles-dir $work/dbt --no-partial-parse"
  cat "$work/dbt.md" >>"$out"
  start=$(date +%s.%N)
  timeout "$limit" "$dbt" build --project-dir "$proj" --profiles-dir "$work/dbt" >"$work/dbt-build.log" 2>&1 || true
  secs=$(python3 -c "import time; print(round(time.time() - $start, 1))")
  done_nodes=$(grep -cE ' (OK|PASS|ERROR|FAIL|WARN|SKIP) ' "$work/dbt-build.log" || true)
  echo "dbt build: $done_nodes of $((1 + 3 * n)) nodes finished in $secs s (limit $limit s)" | tee -a "$out"
fi
echo >>"$out"
echo "results appended to $out"
