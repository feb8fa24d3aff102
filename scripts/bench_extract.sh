#!/usr/bin/env bash
# Extraction: the W1 lineitem table as loaded in PostgreSQL (5,983,209 rows,
# 11 columns, from the benches/w1 stage) read back into staged Parquet, in
# one run beside the peers:
#   - ../shared/bench/peers/pg_extract.sh (psql COPY CSV -> DuckDB -> Parquet)
#   - ../shared/bench/peers/cx_extract.py (connectorx's Python package, 2
#     partitions, then pyarrow writes Parquet)
#   - ferry: a database source (partition_on order_id, partitions 2)
#     staged by a `table` model selecting every column, read with binary
#     COPY decoded by ferry (its default) and, for comparison, through
#     connectorx (`cxprotocol=cursor` in the source's URL).
#
#   scripts/bench_extract.sh [RUNS]      (default 3)
#
# Needs the stage (`scripts/bench_w1.sh` or `ferry run --no-load
# --project-dir benches/w1`), PostgreSQL as in README (PGHOST/PGUSER/
# PGDATABASE; defaults are this machine's), a python with duckdb,
# connectorx and pyarrow first on PATH (the peers call `python3`), psql and
# GNU time. Appends the medians and ratios to
# benches/results/extract-<date>.md.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
runs=${1:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
# TLS on loopback costs both sides CPU; every pipeline of the run gets the
# same mode (SSLMODE=prefer measures with TLS, as libpq's default would).
sslmode=${SSLMODE:-disable}
export PGSSLMODE=$sslmode
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
stage=benches/w1/.ferry/stage/lineitem
test -f "$stage/_ferry_stage.json" || { echo "no stage: run scripts/bench_w1.sh first" >&2; exit 1; }
cat > "$work/profiles.yml" <<YML
w1:
  target: pg
  outputs:
    pg: {type: postgres, host: $PGHOST, port: 5432, user: $PGUSER, dbname: $PGDATABASE, schema: ferry_extract, sslmode: $sslmode}
x:
  target: pg
  outputs:
    pg: {type: postgres, host: $PGHOST, port: 5432, user: $PGUSER, dbname: $PGDATABASE, schema: ferry_extract_out, sslmode: $sslmode}
YML
"$ferry" --project-dir benches/w1 --profiles-dir "$work" -t pg load -q -s lineitem
table=ferry_extract.lineitem
rows=$(psql -At -c "SELECT count(*) FROM $table")

# The ferry project: one database source, one staged model.
mkdir -p "$work/x/models"
printf 'name: x\nprofile: x\n' > "$work/x/ferry.yml"
cat > "$work/x/models/sources.yml" <<YML
sources:
  - name: w1
    tables:
      - name: lineitem
        connection: pg
        table: $table
        partition_on: order_id
        partitions: 2
YML
printf "{{ config(materialized='table', load=false) }}\nselect * from {{ source('w1', 'lineitem') }}\n" \
  > "$work/x/models/extracted.sql"
# The same through connectorx: a URL naming its protocol.
cp -r "$work/x" "$work/cx"
sed -i "s|connection: pg|connection: \"postgresql://$PGUSER@$PGHOST:5432/$PGDATABASE?sslmode=$sslmode\&cxprotocol=cursor\"|" \
  "$work/cx/models/sources.yml"

measure() { # name, command...: prints "name seconds peak_kib" per run
  local name=$1; shift
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %M" -o "$work/t" "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    echo "$name $(tail -1 "$work/t")"
  done
}

{
  measure ferry "$ferry" --project-dir "$work/x" --profiles-dir "$work" run -q --no-load
  measure ferry_cx "$ferry" --project-dir "$work/cx" --profiles-dir "$work" run -q --no-load
  measure pg_extract bash "$shared/bench/peers/pg_extract.sh" "$table" "$work/peer.parquet"
  measure cx_python python3 "$shared/bench/peers/cx_extract.py" \
    "postgresql://$PGUSER@$PGHOST:5432/$PGDATABASE?sslmode=$sslmode" "SELECT * FROM $table" "$work/cx.parquet" order_id 2
} | tee "$work/times"
for d in x cx; do
  staged=$(python3 -c "import json;print(json.load(open('$work/$d/.ferry/stage/extracted/_ferry_stage.json'))['row_count'])")
  [ "$staged" = "$rows" ] || { echo "ferry ($d) staged $staged rows, the table has $rows" >&2; exit 1; }
done
psql -q -c "DROP SCHEMA ferry_extract CASCADE"

median() { grep "^$1 " "$work/times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
peak() { echo $(( $(grep "^$1 " "$work/times" | awk '{print $3}' | sort -n | tail -1) / 1024 )); }
fe=$(median ferry); fc=$(median ferry_cx); pe=$(median pg_extract); cx=$(median cx_python)
best=$(printf '%s\n%s\n' "$pe" "$cx" | sort -n | head -1)
out=benches/results/extract-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "## Extract $(date -u +%H:%MZ), median of $runs, $rows rows, 11 columns, PostgreSQL -> staged Parquet"
  echo "| pipeline | time | peak RSS |"
  echo "|---|---|---|"
  echo "| ferry, binary COPY decoded by ferry, 2 partitions | ${fe} s | $(peak ferry) MiB |"
  echo "| ferry, connectorx (cursor), 2 partitions | ${fc} s | $(peak ferry_cx) MiB |"
  echo "| pg_extract.sh (psql COPY CSV -> DuckDB) | ${pe} s | $(peak pg_extract) MiB (DuckDB side) |"
  echo "| connectorx Python, 2 partitions, + pyarrow | ${cx} s | $(peak cx_python) MiB |"
  echo "| best peer / ferry | $(echo "scale=2; $best / $fe" | bc)x | |"
} | tee -a "$out"
