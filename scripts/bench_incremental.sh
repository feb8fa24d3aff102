#!/usr/bin/env bash
# Incremental runs on W1's lineitem rows (6M at scale factor 1) as a
# PostgreSQL source table with an added `updated_at` (indexed, as a source
# with a cursor would be): a full `ferry build` of an incremental model
# (merge on (l_orderkey, l_linenumber), cursor `updated_at`), then 1% of the
# rows updated with a newer `updated_at`, then the incremental `ferry build`,
# side by side in one run, each with its phases (the model, the load, the
# reconciliation) from `run_results.json` and `reconcile.json`, and the
# target checked against the source after each. A snapshot of the same
# table (`strategy: timestamp` on `updated_at`, with `cursor: updated_at` so
# that a later run reads only the rows after the mark) is run beside it: its
# first run, and its run over the same change. A second change of another
# 1% follows, with both run again over it (versions layered on layered
# ones).
#
#   scripts/bench_incremental.sh [RUNS] [SF]      (defaults 3 and 1)
#
# Each of RUNS rounds is a full build and a first snapshot, then the
# change, then an incremental build and a snapshot, then the second change
# and both again; the medians are reported. Needs tpchgen-cli (TPCHGEN=..., or on PATH; the
# generated CSV is kept in DATA=/work/bench-sf1 by default), psql, and
# PostgreSQL as in README (PGHOST/PGUSER/PGDATABASE). Appends the figures
# to benches/results/incremental-<date>.md.
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

# The source: lineitem with a key and an indexed cursor.
pg -c "DROP SCHEMA IF EXISTS ferry_bench_src CASCADE" -c "CREATE SCHEMA ferry_bench_src" -c "
CREATE TABLE ferry_bench_src.lineitem (
  l_orderkey bigint, l_partkey bigint, l_suppkey bigint, l_linenumber int,
  l_quantity numeric(15,2), l_extendedprice numeric(15,2), l_discount numeric(15,2), l_tax numeric(15,2),
  l_returnflag text, l_linestatus text, l_shipdate date, l_commitdate date, l_receiptdate date,
  l_shipinstruct text, l_shipmode text, l_comment text)"
pg -c "\copy ferry_bench_src.lineitem FROM '$data/lineitem.csv' (FORMAT csv, HEADER true)"
# Rows were last changed at various times of a day (a source where every
# row has the same `updated_at` would have the whole table at the mark).
base="timestamp '2024-01-01 00:00:00' + make_interval(secs => l_orderkey % 86400)"
pg -c "ALTER TABLE ferry_bench_src.lineitem ADD COLUMN updated_at timestamp" \
   -c "UPDATE ferry_bench_src.lineitem SET updated_at = $base" \
   -c "ALTER TABLE ferry_bench_src.lineitem ADD PRIMARY KEY (l_orderkey, l_linenumber)" \
   -c "CREATE INDEX ON ferry_bench_src.lineitem (updated_at)" -c "VACUUM ANALYZE ferry_bench_src.lineitem"
source_rows=$(pg -tA -c "SELECT count(*) FROM ferry_bench_src.lineitem")

proj=$work/project
mkdir -p "$proj/models"
cat > "$proj/ferry.yml" <<'YML'
name: incr
profile: incr
YML
cat > "$proj/profiles.yml" <<YML
incr:
  target: pg
  outputs:
    pg: {type: postgres, host: $PGHOST, port: 5432, user: $PGUSER, dbname: $PGDATABASE, schema: ferry_bench_incr, sslmode: disable}
YML
cat > "$proj/models/sources.yml" <<'YML'
sources:
  - name: src
    tables:
      - name: lineitem
        connection: pg
        table: ferry_bench_src.lineitem
YML
cat > "$proj/models/lineitem_sync.sql" <<'SQL'
{{ config(materialized='incremental', incremental_strategy='merge',
          unique_key=['l_orderkey', 'l_linenumber'], cursor='updated_at') }}
select * from {{ source('src', 'lineitem') }}
SQL
mkdir -p "$proj/snapshots"
cat > "$proj/snapshots/lineitem_history.sql" <<'SQL'
{% snapshot lineitem_history %}
{{ config(unique_key=['l_orderkey', 'l_linenumber'], strategy='timestamp', updated_at='updated_at',
          cursor='updated_at') }}
select * from {{ source('src', 'lineitem') }}
{% endsnapshot %}
SQL

# One build of NODE, timed: "total model load reconcile rows_read rss run
# stage" (seconds, rows, MiB; full or incremental; its stage written or
# layered).
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
# How the next version was made: written whole, or layered on the current
# one (deletion files beside its files).
stage = json.load(open(f"{proj}/.ferry/stage/{name}/_ferry_stage.json"))
layered = any(f.get("deleted") for f in stage["files"])
print(total, round(node["execution_time"], 2), round(node["load"]["seconds"], 2), round(seconds, 2),
      node["rows"], int(rss) // 1024, node["incremental"]["run"], "layered" if layered else "written")
PY
}
# The target against the source: rows, and rows whose values differ.
check() {
  pg -tA -c "SELECT count(*) FROM ferry_bench_incr.lineitem_sync" \
     -c "SELECT count(*) FROM ferry_bench_src.lineitem s JOIN ferry_bench_incr.lineitem_sync t
           USING (l_orderkey, l_linenumber)
         WHERE (s.l_quantity, s.updated_at, s.l_comment) IS DISTINCT FROM (t.l_quantity, t.updated_at, t.l_comment)" |
    tr '\n' ' '
}

# The snapshot against the source: a version per row and per change, and
# the current versions equal to the source rows.
check_history() { # changed
  read -r rows current diff <<<"$(pg -tA -c "SELECT count(*) FROM ferry_bench_incr.lineitem_history" \
     -c "SELECT count(*) FROM ferry_bench_incr.lineitem_history WHERE dbt_valid_to IS NULL" \
     -c "SELECT count(*) FROM ferry_bench_src.lineitem s FULL JOIN
           (SELECT * FROM ferry_bench_incr.lineitem_history WHERE dbt_valid_to IS NULL) t USING (l_orderkey, l_linenumber)
         WHERE (s.l_quantity, s.updated_at, s.l_comment) IS DISTINCT FROM (t.l_quantity, t.updated_at, t.l_comment)" |
    tr '\n' ' ')"
  [ "$rows" = $((source_rows + $1)) ] && [ "$current" = "$source_rows" ] && [ "$diff" = 0 ] ||
    { echo "snapshot: $rows versions, $current current, $diff differ from the source" >&2; exit 1; }
}

# The target against the source after WHAT; exits when they differ.
check_sync() { # what
  read -r rows diff <<<"$(check)"
  [ "$rows" = "$source_rows" ] && [ "$diff" = 0 ] || { echo "$1: target $rows rows, $diff differ" >&2; exit 1; }
}

# 1% of the rows (l_orderkey % 100 = REMAINDER) updated, with a newer
# `updated_at` from AT; prints how many.
change() { # remainder at
  pg -tA -c "WITH u AS (UPDATE ferry_bench_src.lineitem SET l_quantity = l_quantity + 1,
      updated_at = timestamp '$2' + make_interval(secs => l_orderkey % 3600)
      WHERE l_orderkey % 100 = $1 RETURNING 1) SELECT count(*) FROM u"
  pg -c "CHECKPOINT"; sync
}

full=() incr=() snap_first=() snap=() incr2=() snap2=()
for round in $(seq 1 "$runs"); do
  pg -c "DROP SCHEMA IF EXISTS ferry_bench_incr CASCADE" \
     -c "UPDATE ferry_bench_src.lineitem SET updated_at = $base WHERE updated_at >= '2024-06-01'"
  rm -rf "$proj/.ferry"
  pg -c "CHECKPOINT"; sync
  f=$(build lineitem_sync)
  sf_=$(build lineitem_history)
  check_history 0
  check_sync "full build"
  changed=$(change 7 '2024-06-01 00:00:00')
  i=$(build lineitem_sync)
  check_sync "incremental build"
  si=$(build lineitem_history)
  check_history "$changed"
  # Another 1%, over the versions the first change layered.
  changed2=$(change 13 '2024-07-01 00:00:00')
  i2=$(build lineitem_sync)
  check_sync "second incremental build"
  si2=$(build lineitem_history)
  check_history $((changed + changed2))
  echo "round $round: full [$f]  incremental [$i]  snapshot first [$sf_]  snapshot [$si]  ($changed rows changed)" \
    " incremental 2 [$i2]  snapshot 2 [$si2]  ($changed2 rows changed)"
  full+=("$f") incr+=("$i") snap_first+=("$sf_") snap+=("$si") incr2+=("$i2") snap2+=("$si2")
done

python3 - "$sf" "$source_rows" "$changed" "$(nproc)" "${full[@]}" -- "${incr[@]}" -- "${snap_first[@]}" -- "${snap[@]}" -- "${incr2[@]}" -- "${snap2[@]}" <<'PY' | tee -a "benches/results/incremental-$(date +%F).md"
import statistics, sys, datetime
sf, rows, changed, cores, rest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
groups, group = [], []
for arg in rest + ["--"]:
    if arg == "--":
        groups.append([r.split() for r in group])
        group = []
    else:
        group.append(arg)
full, incr, snap_first, snap, incr2, snap2 = groups
med = lambda runs, k: statistics.median(float(r[k]) for r in runs)
print(f"\n## Incremental build, lineitem SF{sf} ({rows:,} rows) in PostgreSQL, {datetime.date.today()}\n")
print(f"{len(full)} rounds of a full `ferry build` then, after {changed:,} rows ({changed / rows:.1%}) were updated "
      f"with a newer `updated_at`, an incremental one (merge, cursor `updated_at`); beside them a snapshot of the "
      f"same table (timestamp strategy, cursor `updated_at`), its first run and its run over the change; medians; {cores} cores. "
      "The target was checked against the source after each build (row count, and no row differing; "
      "for the snapshot, a version per row and per change, and its current versions equal to the source).\n")
print("| build | total s | model s | load s | reconcile s | rows moved | max RSS MiB | stage |")
print("|---|---|---|---|---|---|---|---|")
for name, runs in (("full", full), ("incremental", incr), ("snapshot, first run", snap_first), ("snapshot", snap),
                   ("incremental, second change", incr2), ("snapshot, second change", snap2)):
    print(f"| {name} | {med(runs, 0):.2f} | {med(runs, 1):.2f} | {med(runs, 2):.2f} | {med(runs, 3):.2f} | "
          f"{int(med(runs, 4)):,} | {int(med(runs, 5)):,} | {', '.join(sorted({r[7] for r in runs}))} |")
print(f"\nThe incremental build took {med(incr, 0) / med(full, 0):.1%} of the full build's time "
      f"(the goal: at most 20%); the snapshot run over the change {med(snap, 0) / med(full, 0):.1%} "
      f"(the goal: at most a third), {med(snap, 0) / med(snap_first, 0):.1%} of the snapshot's first run. "
      f"Over a second change of about as many rows: the incremental build {med(incr2, 0) / med(full, 0):.1%}, "
      f"the snapshot {med(snap2, 0) / med(full, 0):.1%}.")
PY
