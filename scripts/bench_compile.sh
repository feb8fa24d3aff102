#!/usr/bin/env bash
# W6: compile a large synthetic project, ferry beside dbt-core, in one run.
#
#   scripts/bench_compile.sh [N...]        (default: 1000 10000)
#
# Needs: a release build of ferry (built here), hyperfine, python3, and for
# the peer a dbt-core 1.10 + dbt-duckdb 1.10 install (DBT=/path/to/dbt; the
# dbt rows are skipped without it). The project generator is
# shared/bench/gen_synth_project.py (SHARED=path/to/shared). Results are
# appended to benches/results/compile-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
dbt=${DBT:-$(command -v dbt || true)}
sizes=("${@:-1000 10000}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
out=benches/results/compile-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "# ferry compile vs dbt-core, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
  echo
} >>"$out"

for n in ${sizes[*]}; do
  proj=$work/synth$n
  python3 "$shared/bench/gen_synth_project.py" "$proj" "$n"
  # dbt needs a profile; ferry reads the same project with no profile at all.
  mkdir -p "$work/profiles"
  printf 'synth:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: %s/synth.duckdb\n' "$work" >"$work/profiles/profiles.yml"
  # ferry is fast enough for many runs; dbt gets three. Same machine, same run.
  hyperfine --warmup 2 --runs 15 --export-markdown "$work/ferry.md" \
    -n "ferry compile ($n models)" "$ferry compile --project-dir $proj"
  cat "$work/ferry.md" >>"$out"
  if [ -n "$dbt" ] && [ "$n" -le 1000 ]; then
    hyperfine --warmup 1 --runs 3 --export-markdown "$work/dbt.md" \
      -n "dbt parse ($n models)" "$dbt parse --project-dir $proj --profiles-dir $work/profiles --no-partial-parse" \
      -n "dbt compile ($n models)" "$dbt compile --project-dir $proj --profiles-dir $work/profiles --no-partial-parse"
    cat "$work/dbt.md" >>"$out"
  fi
  echo >>"$out"
done
echo "results appended to $out"
