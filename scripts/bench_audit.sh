#!/usr/bin/env bash
# Issue 26: `ferry audit` of the 6M-row dirty TPC-H lineitem CSV (every
# column read as text, so every type inference runs) beside DuckDB's
# SUMMARIZE of the same file read all as VARCHAR, in one run, with each
# one's peak memory. Goal: at most 1.0x DuckDB's time, peak RSS under 1 GiB.
#
#   scripts/bench_audit.sh [SCALE]         (default 1: 6,001,215 rows)
#
# Needs: hyperfine, GNU time, tpchgen-cli (pip install tpchgen-cli) and a
# python with duckdb (PYTHON=/path/to/python; pip install duckdb). The data
# is made once under BENCH_DATA (default target/bench-data). Results are
# appended to benches/results/audit-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
py=${PYTHON:-python3}
scale=${1:-1}
data=${BENCH_DATA:-$PWD/target/bench-data}/sf$scale
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
mkdir -p "$data"
if [ ! -f "$data/lineitem_dirty.csv" ]; then
  tpchgen-cli csv -s "$scale" --tables lineitem --output-dir "$data"
  python3 "$shared/bench/make_dirty_lineitem.py" "$data/lineitem.csv" "$data/lineitem_dirty.csv" >"$data/dirty_manifest.json"
fi
csv=$data/lineitem_dirty.csv
rows=$(($(wc -l <"$csv") - 1))

proj=$work/audit
mkdir -p "$proj/models"
printf 'name: audit\n' >"$proj/ferry.yml"
printf 'sources:\n  - name: tpch\n    tables:\n      - name: lineitem\n        path: %s\n' "$csv" >"$proj/models/sources.yml"
cat >"$work/summarize.py" <<PY
import duckdb
duckdb.sql("SUMMARIZE SELECT * FROM read_csv('$csv', all_varchar = true)").fetchall()
PY

out=benches/results/audit-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "# audit of lineitem_dirty.csv ($rows rows, $(du -hL "$csv" | cut -f1)), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ferry $(git describe --always --dirty), duckdb $("$py" -c 'import duckdb; print(duckdb.__version__)')"
  echo
} >>"$out"
hyperfine --warmup 1 --runs 3 --export-markdown "$work/time.md" \
  -n "ferry audit" "$ferry audit --project-dir $proj -q" \
  -n "duckdb SUMMARIZE (all_varchar)" "$py $work/summarize.py"
cat "$work/time.md" >>"$out"
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n 1; }
echo "peak RSS: ferry audit $(($(rss "$ferry" audit --project-dir "$proj" -q) / 1024)) MiB, duckdb SUMMARIZE $(($(rss "$py" "$work/summarize.py") / 1024)) MiB" | tee -a "$out"
echo >>"$out"
echo "results appended to $out"
