#!/usr/bin/env bash
# Change detection by row hash on W1's lineitem rows (6M at scale factor 1)
# as a CSV extract with no usable timestamp, loaded into PostgreSQL. Side by
# side in one run: a full rebuild-and-reload (a `table` model over the
# extract, replaced) and the change-detected model (`change_detection` on
# (l_orderkey, l_linenumber), hard deletes): its first run, then, after 1%
# of the extract's rows were changed and 0.1% deleted, its run over the
# change. Each with its phases (model, load, reconciliation) from
# `run_results.json` and `reconcile.json` and its peak memory; the size of
# the kept hashes is reported, and after each run the change-detected table
# is checked against the full rebuild of the same extract (no row differs,
# either way).
#
#   scripts/bench_changes.sh [RUNS] [SF]      (defaults 3 and 1)
#
# Needs tpchgen-cli (TPCHGEN=..., or on PATH; the generated CSV is kept in
# DATA=/work/bench-sf1 by default), psql, and PostgreSQL as in README
# (PGHOST/PGUSER/PGDATABASE). Appends the figures to
# benches/results/changes-<date>.md.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
runs=${1:-3}
sf=${2:-1}
data=${DATA:-/work/bench-sf$sf}
tpchgen=${TPCHGEN:-tpchgen-cli}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test} PGSSLMODE=disable
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
pg() { psql -q -v ON_ERROR_STOP=1 -X "$@"; }

if [ ! -f "$data/lineitem.csv" ]; then
  mkdir -p "$data"
  "$tpchgen" csv -s "$sf" --tables lineitem --output-dir "$data"
fi

proj=$work/project
mkdir -p "$proj/models" "$proj/data"
cat > "$proj/ferry.yml" <<'YML'
name: changes
profile: changes
YML
cat > "$proj/profiles.yml" <<YML
changes:
  target: pg
  outputs:
    pg: {type: postgres, host: $PGHOST, port: 5432, user: $PGUSER, dbname: $PGDATABASE, schema: ferry_bench_changes, sslmode: disable}
YML
cat > "$proj/models/sources.yml" <<'YML'
sources:
  - name: legacy
    tables:
      - name: lineitem
        path: data/lineitem.csv
YML
cat > "$proj/models/lineitem_full.sql" <<'SQL'
{{ config(materialized='table', unique_key=['l_orderkey', 'l_linenumber']) }}
select * from {{ source('legacy', 'lineitem') }}
SQL
cat > "$proj/models/lineitem_sync.sql" <<'SQL'
{{ config(materialized='table',
          change_detection={'key': ['l_orderkey', 'l_linenumber'], 'deletes': 'hard'}) }}
select * from {{ source('legacy', 'lineitem') }}
SQL

# One build of NODE, timed: "total model load reconcile rows rss" (seconds,
# rows, MiB).
build() { # node
  /usr/bin/time -f "%e %M" -o "$work/time" "$ferry" build -q -s "$1" --project-dir "$proj" --profiles-dir "$proj" \
    >"$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }
  python3 - "$proj" "$(cat "$work/time")" "$1" <<'PY'
import json, sys
proj, (total, rss), name = sys.argv[1], sys.argv[2].split(), sys.argv[3]
results = json.load(open(f"{proj}/.ferry/run_results.json"))
node = next(r for r in results["results"] if r["unique_id"].endswith("." + name))
run_id = results["metadata"]["invocation_id"]
rec = json.load(open(f"{proj}/.ferry/runs/{run_id}/reconcile.json"))
tables = rec["tables"] if isinstance(rec, dict) and "tables" in rec else rec
seconds = sum(t.get("seconds", 0) for t in tables) if isinstance(tables, list) else 0
print(total, round(node["execution_time"], 2), round(node["load"]["seconds"], 2), round(seconds, 2),
      node["rows"], int(rss) // 1024)
PY
}
# Rows of the change-detected table, and rows that differ from the full
# rebuild's either way.
check() {
  pg -tA -c "SELECT count(*) FROM ferry_bench_changes.lineitem_sync" \
     -c "SELECT (SELECT count(*) FROM (SELECT * FROM ferry_bench_changes.lineitem_sync
                                        EXCEPT ALL SELECT * FROM ferry_bench_changes.lineitem_full) a)
              + (SELECT count(*) FROM (SELECT * FROM ferry_bench_changes.lineitem_full
                                        EXCEPT ALL SELECT * FROM ferry_bench_changes.lineitem_sync) b)" |
    tr '\n' ' '
}
# The extract with 1% of its rows changed (l_comment) and 0.1% deleted.
change() {
  awk -F, 'NR == 1 { print; next }
           (NR % 1000) == 7 { next }
           (NR % 100) == 3 { sub(/"$/, " changed\""); print; next }
           { print }' "$data/lineitem.csv" > "$proj/data/lineitem.csv"
}

full=() first=() detected=()
for round in $(seq 1 "$runs"); do
  pg -c "DROP SCHEMA IF EXISTS ferry_bench_changes CASCADE"
  rm -rf "$proj/.ferry"
  cp "$data/lineitem.csv" "$proj/data/lineitem.csv"
  rows=$(($(wc -l < "$proj/data/lineitem.csv") - 1))
  pg -c "CHECKPOINT"; sync
  c=$(build lineitem_sync)
  build lineitem_full >/dev/null
  read -r n diff <<<"$(check)"
  [ "$n" = "$rows" ] && [ "$diff" = 0 ] || { echo "first run: $n rows, $diff differ from the full rebuild" >&2; exit 1; }
  change
  changed=$(awk 'NR > 1 && (NR % 100) == 3 && (NR % 1000) != 7' "$proj/data/lineitem.csv" | wc -l)
  new_rows=$(($(wc -l < "$proj/data/lineitem.csv") - 1))
  pg -c "CHECKPOINT"; sync
  f=$(build lineitem_full)
  pg -c "CHECKPOINT"; sync
  d=$(build lineitem_sync)
  read -r n diff <<<"$(check)"
  [ "$n" = "$new_rows" ] && [ "$diff" = 0 ] || { echo "change run: $n rows, $diff differ from the full rebuild" >&2; exit 1; }
  counts=$(python3 -c "
import json; r = json.load(open('$proj/.ferry/run_results.json'))
c = next(n for n in r['results'] if n['unique_id'].endswith('.lineitem_sync'))['changes']
print(c['inserted'], c['updated'], c['unchanged'], c['deleted'])")
  hashes=$(du -sm "$proj/.ferry/state/hashes/lineitem_sync" | cut -f1)
  echo "round $round: full [$f]  first [$c]  detected [$d]  classes [$counts]  hashes ${hashes} MiB"
  full+=("$f") first+=("$c") detected+=("$d")
done

python3 - "$sf" "$rows" "$counts" "$hashes" "$(nproc)" "${full[@]}" -- "${first[@]}" -- "${detected[@]}" <<'PY' | tee -a "benches/results/changes-$(date +%F).md"
import statistics, sys, datetime
sf, rows, counts, hashes, cores, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6:]
inserted, updated, unchanged, deleted = map(int, counts)
groups, group = [], []
for arg in rest + ["--"]:
    if arg == "--":
        groups.append([r.split() for r in group])
        group = []
    else:
        group.append(arg)
full, first, detected = groups
med = lambda runs, k: statistics.median(float(r[k]) for r in runs)
print(f"\n## Change detection by row hash, lineitem SF{sf} ({rows:,} rows) as a CSV extract into PostgreSQL, {datetime.date.today()}\n")
print(f"{len(full)} rounds; medians; {cores} cores. Between the first run and the change run, {updated:,} rows "
      f"({updated / rows:.1%}) of the extract changed and {deleted:,} ({deleted / rows:.2%}) were deleted; the run "
      f"classified {inserted:,} inserted, {updated:,} updated, {unchanged:,} unchanged and {deleted:,} deleted. "
      "The full rebuild is a `table` model over the same extract, replaced; after each run the change-detected "
      "table was checked against it (same row count, no row differing either way).\n")
print("| build | total s | model s | load s | reconcile s | rows loaded | max RSS MiB |")
print("|---|---|---|---|---|---|---|")
for name, runs in (("full rebuild-and-reload", full), ("change detection, first run", first),
                   ("change detection, over the change", detected)):
    print(f"| {name} | {med(runs, 0):.2f} | {med(runs, 1):.2f} | {med(runs, 2):.2f} | {med(runs, 3):.2f} | "
          f"{int(med(runs, 4)):,} | {int(med(runs, 5)):,} |")
print(f"\nThe change-detected run took {med(detected, 0) / med(full, 0):.1%} of the full rebuild-and-reload's time "
      f"(the goal: at most 25%). The kept hashes of {rows:,} keys take {hashes} MiB on disk.")
PY
