#!/usr/bin/env bash
# W1 load phase: the staged 6M-row lineitem model (benches/w1) loaded by
# ferry into PostgreSQL (primary key (order_id, line_no)), MariaDB and
# SQLite, each beside the server's own bulk path on the same rows, in one
# run:
#   PostgreSQL: (a) plain COPY FROM a server-side binary file into the keyed
#     table, (b) one transaction: CREATE without the key, COPY (FORMAT binary,
#     FREEZE), ADD PRIMARY KEY; and the DuckDB -> CSV -> psql COPY peer.
#   MariaDB: server-side LOAD DATA INFILE of the same rows into the keyed table.
#   SQLite: the sqlite3 shell's .import of the same rows as CSV.
#
#   scripts/bench_load.sh [RUNS]      (default 3)
#
# Needs the stage: `scripts/bench_w1.sh` (or `ferry run --no-load
# --project-dir benches/w1`) first; PostgreSQL and MariaDB as in README
# (PGHOST/PGUSER/PGDATABASE, MYSQL_HOST/MYSQL_USER; defaults are this
# machine's); a python with duckdb (PYTHON=...); sqlite3. Appends the
# medians and ratios to benches/results/load-<date>.md.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
python=${PYTHON:-python3}
runs=${1:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
# TLS on loopback costs both sides CPU; every pipeline of the run gets the
# same mode (SSLMODE=prefer measures with TLS, as libpq's default would).
sslmode=${SSLMODE:-disable}
export PGSSLMODE=$sslmode
myhost=${MYSQL_HOST:-127.0.0.1} myuser=${MYSQL_USER:-root}
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work" /tmp/ferry_bench_lineitem.bin /tmp/ferry_bench_lineitem.tsv /tmp/ferry_bench_stage_order.tsv' EXIT

cargo build --release --quiet
ferry=$PWD/target/release/ferry
stage=benches/w1/.ferry/stage/lineitem
test -f "$stage/_ferry_stage.json" || { echo "no stage: run scripts/bench_w1.sh first" >&2; exit 1; }
rows=$(python3 -c "import json;print(json.load(open('$stage/_ferry_stage.json'))['row_count'])")

cat > "$work/profiles.yml" <<YML
w1:
  target: pg
  outputs:
    pg: {type: postgres, host: $PGHOST, port: 5432, user: $PGUSER, dbname: $PGDATABASE, schema: ferry_bench, sslmode: $sslmode}
    my: {type: mysql, host: $myhost, port: 3306, user: $myuser, schema: ferry_bench, sslmode: $sslmode}
    lite: {type: sqlite, path: $work/bench.db}
YML
ferry_load=("$ferry" load -q -s lineitem --project-dir benches/w1 --profiles-dir "$work" -t)
load() { "${ferry_load[@]}" "$1"; }
pg() { psql -q -v ON_ERROR_STOP=1 "$@"; }
my() { mysql -h "$myhost" -u "$myuser" "$@"; }

once() { # name, command...: prints "name seconds"
  local name=$1; shift
  /usr/bin/time -f "%e" -o "$work/t" "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
  echo "$name $(cat "$work/t")"
}
settle() { # let earlier writes reach the disk, so runs do not pay for each other
  pg -c "CHECKPOINT" >/dev/null; sync; sleep 2
}

# The rows, once, in each server's own format (written by the server).
pg -c "DROP SCHEMA IF EXISTS ferry_bench CASCADE"
my -e "DROP DATABASE IF EXISTS ferry_bench"
load pg
pg -c "COPY ferry_bench.lineitem TO '/tmp/ferry_bench_lineitem.bin' (FORMAT binary)"
load my
my -e "SELECT * FROM ferry_bench.lineitem INTO OUTFILE '/tmp/ferry_bench_lineitem.tsv'"
# The same rows in the stage's order, as LOAD DATA reads them (lineitem's
# text has no tab, newline or backslash to escape).
"$python" - "$stage" <<'PY'
import sys, duckdb
c = duckdb.connect()
c.execute("SET enable_progress_bar = false")
c.execute(f"""COPY (SELECT * FROM read_parquet('{sys.argv[1]}/*.parquet'))
  TO '/tmp/ferry_bench_stage_order.tsv' (FORMAT csv, DELIMITER '\t', HEADER false, QUOTE '', ESCAPE '', NULLSTR '\\N')""")
PY
"$python" -c "import duckdb,sys; c = duckdb.connect(); c.execute('SET enable_progress_bar = false'); c.execute(\"COPY (SELECT * FROM read_parquet('$stage/*.parquet')) TO '$work/rows.csv' (FORMAT csv, HEADER false)\")"

pg_ceiling_a() {
  pg -c "DROP TABLE IF EXISTS ferry_bench.ceiling; CREATE TABLE ferry_bench.ceiling (LIKE ferry_bench.lineitem INCLUDING ALL)"
  /usr/bin/time -f "%e" -o "$work/c" psql -q -v ON_ERROR_STOP=1 -c "COPY ferry_bench.ceiling FROM '/tmp/ferry_bench_lineitem.bin' (FORMAT binary)"
  cat "$work/c" >&2
}
pg_ceiling_b() {
  pg -c "DROP TABLE IF EXISTS ferry_bench.ceiling"
  /usr/bin/time -f "%e" -o "$work/c" psql -q -v ON_ERROR_STOP=1 -1 \
    -c "CREATE TABLE ferry_bench.ceiling (LIKE ferry_bench.lineitem)" \
    -c "COPY ferry_bench.ceiling FROM '/tmp/ferry_bench_lineitem.bin' (FORMAT binary, FREEZE)" \
    -c "ALTER TABLE ferry_bench.ceiling ADD PRIMARY KEY (order_id, line_no)"
  cat "$work/c" >&2
}
my_ceiling() { # FILE
  my -e "DROP TABLE IF EXISTS ferry_bench.ceiling; CREATE TABLE ferry_bench.ceiling LIKE ferry_bench.lineitem"
  /usr/bin/time -f "%e" -o "$work/c" mysql -h "$myhost" -u "$myuser" -e "LOAD DATA INFILE '$1' INTO TABLE ferry_bench.ceiling"
  test "$(my -N -e "SELECT COUNT(*) FROM ferry_bench.ceiling")" = "$rows"
  cat "$work/c" >&2
}
my_ceiling_key_order() { my_ceiling /tmp/ferry_bench_lineitem.tsv; }
my_ceiling_stage_order() { my_ceiling /tmp/ferry_bench_stage_order.tsv; }
lite_ceiling() {
  rm -f "$work/ceiling.db"
  sqlite3 "$work/bench.db" ".schema lineitem" | sed 's/"lineitem"/ceiling/' | sqlite3 "$work/ceiling.db"
  /usr/bin/time -f "%e" -o "$work/c" sqlite3 "$work/ceiling.db" ".mode csv" ".import $work/rows.csv ceiling"
  cat "$work/c" >&2
}
ceiling() { # name, function: prints "name seconds" (only the bulk step is timed)
  local out
  out=$("$2" 2>&1 >/dev/null) || { echo "$1 failed: $out" >&2; exit 1; }
  echo "$1 $(tail -1 <<<"$out")"
}

# Runs interleave ferry and the references, each after a checkpoint.
for _ in $(seq "$runs"); do
  settle; once ferry_pg "${ferry_load[@]}" pg
  settle; ceiling pg_a pg_ceiling_a
  settle; ceiling pg_b pg_ceiling_b
  settle; once duckdb_psql bash "$shared/bench/peers/duckdb_psql_load.sh" "$stage/*.parquet" ferry_bench.peer
  settle; once ferry_my "${ferry_load[@]}" my
  settle; ceiling my_infile my_ceiling_key_order
  settle; ceiling my_infile_stage_order my_ceiling_stage_order
  settle; once ferry_lite "${ferry_load[@]}" lite
  settle; ceiling lite_import lite_ceiling
done | tee "$work/times"

median() { grep "^$1 " "$work/times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
out=benches/results/load-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "# W1 load phase, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $rows rows, median of $runs"
  echo
  echo "| target | ferry (s) | reference | reference (s) | ferry / reference |"
  echo "|---|---|---|---|---|"
  echo "| PostgreSQL | $(median ferry_pg) | (b) create + COPY FREEZE + add key | $(median pg_b) | $(ratio "$(median ferry_pg)" "$(median pg_b)") |"
  echo "| PostgreSQL | $(median ferry_pg) | (a) plain COPY into the keyed table | $(median pg_a) | $(ratio "$(median ferry_pg)" "$(median pg_a)") |"
  echo "| PostgreSQL | $(median ferry_pg) | DuckDB -> CSV -> psql COPY | $(median duckdb_psql) | $(ratio "$(median ferry_pg)" "$(median duckdb_psql)") |"
  echo "| MariaDB | $(median ferry_my) | server-side LOAD DATA INFILE, rows in key order (as OUTFILE writes them) | $(median my_infile) | $(ratio "$(median ferry_my)" "$(median my_infile)") |"
  echo "| MariaDB | $(median ferry_my) | server-side LOAD DATA INFILE, rows in the stage's order (as ferry sends them) | $(median my_infile_stage_order) | $(ratio "$(median ferry_my)" "$(median my_infile_stage_order)") |"
  echo "| SQLite | $(median ferry_lite) | sqlite3 .import (CSV) | $(median lite_import) | $(ratio "$(median ferry_lite)" "$(median lite_import)") |"
  echo
  echo "ferry's times are whole \`ferry load\` runs (stage check, preflight, shadow table, key, swap); references time the bulk statement only. Runs interleave, each after a CHECKPOINT."
  echo
} | tee -a "$out"
pg -c "DROP SCHEMA IF EXISTS ferry_bench CASCADE"
my -e "DROP DATABASE IF EXISTS ferry_bench"
