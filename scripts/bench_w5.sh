#!/usr/bin/env bash
# W5 locate differences: the staged 6M-row lineitem model (benches/w1)
# against its PostgreSQL table, all 11 columns, beside the plain
# count + sum + md5 query on both sides (../shared/bench/peers/reconcile_sql.sh)
# and, with RELADIFF=1, reladiff (keys order_id, line_no and 3 columns: it
# cannot compare DuckDB DATE columns with PostgreSQL ones), in one
# run:
#   1. ferry reconcile with no differences, and the plain query;
#   2. 8 changed rows (net_amount + 0.01), ferry reconcile naming each key
#      and column, and reladiff.
#
#   scripts/bench_w5.sh [RUNS]      (default 3)
#
# SIDE=pushed|pulled|auto (default auto) is passed to `ferry reconcile
# --side`; the report line names it.
#
# Needs the stage (`scripts/bench_w1.sh` or `ferry run --no-load
# --project-dir benches/w1`), PostgreSQL as in README (PGHOST/PGUSER/
# PGDATABASE; defaults are this machine's), a python with duckdb
# (PYTHON=...; with reladiff for RELADIFF=1), psql and GNU time. Appends the
# medians and ratios to benches/results/w5-<date>.md.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
python=${PYTHON:-python3}
runs=${1:-3}
side=${SIDE:-auto}
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
    pg: {type: postgres, host: $PGHOST, port: 5432, user: $PGUSER, dbname: $PGDATABASE, schema: ferry_w5, sslmode: $sslmode}
YML
f=("$ferry" --project-dir benches/w1 --profiles-dir "$work" -t pg)
"${f[@]}" load -q -s lineitem
table=ferry_w5.lineitem
# The peer reads one Parquet file: the stage's files as one view.
parquet="$PWD/$stage/*.parquet"

measure() { # name, expected exit, command...: prints "name seconds peak_kib" per run
  local name=$1 want=$2; shift 2
  for _ in $(seq "$runs"); do
    local code=0
    /usr/bin/time -f "%e %M" -o "$work/t" "$@" >"$work/out" 2>&1 || code=$?
    [ "$code" = "$want" ] || { cat "$work/out"; echo "$name exited $code, not $want" >&2; exit 1; }
    echo "$name $(tail -1 "$work/t")"
  done
}

{
  measure ferry_clean 0 "${f[@]}" reconcile -s lineitem --side "$side"
  measure plain_sql 0 bash "$shared/bench/peers/reconcile_sql.sh" "$parquet" "$table"
} | tee "$work/times"
psql -q -c "UPDATE $table SET net_amount = net_amount + 0.01 WHERE (order_id * 7919 + line_no) % 600000 = 3"
changed=$(psql -At -c "SELECT count(*) FROM $table WHERE (order_id * 7919 + line_no) % 600000 = 3")
measure ferry_changed 1 "${f[@]}" reconcile -s lineitem --side "$side" | tee -a "$work/times"
found=$(grep -c "changed order_id=" "$work/out" || true)
grep "target side:" "$work/out" | head -1
grep "changed order_id=" "$work/out" | head -3
if [ "${RELADIFF:-0}" = 1 ]; then
  "$python" -c "import duckdb; duckdb.connect('$work/stage.duckdb').execute(\"CREATE TABLE lineitem AS SELECT * FROM read_parquet('$parquet')\")"
  reladiff=$(dirname "$python")/reladiff
  measure reladiff_changed 0 "$reladiff" "postgresql://$PGUSER@$PGHOST/$PGDATABASE" "$table" \
    "duckdb://$work/stage.duckdb" lineitem -k order_id -k line_no \
    -c quantity -c gross_amount -c net_amount | tee -a "$work/times"
  # reladiff exits 0 even when it cannot connect: it must name every row.
  rfound=$(grep -c "^[-+] " "$work/out" || true)
  [ "$rfound" = $((2 * changed)) ] || { cat "$work/out"; echo "reladiff listed $rfound rows, not $((2 * changed))" >&2; exit 1; }
fi
psql -q -c "DROP SCHEMA ferry_w5 CASCADE"

median() { grep "^$1 " "$work/times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
peak() { grep "^$1 " "$work/times" | awk '{print $3}' | sort -n | tail -1; }
fc=$(median ferry_clean); ps=$(median plain_sql); fx=$(median ferry_changed)
out=benches/results/w5-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "## W5 $(date -u +%H:%MZ), median of $runs, 6M rows, 11 columns, --side $side"
  echo "| step | ferry | peer | ratio |"
  echo "|---|---|---|---|"
  echo "| no differences (peer: count + sum + md5 both sides) | ${fc} s, $(( $(peak ferry_clean) / 1024 )) MiB | ${ps} s | $(echo "scale=2; $fc / $ps" | bc) |"
  if [ "${RELADIFF:-0}" = 1 ]; then
    rd=$(median reladiff_changed)
    echo "| $changed changed rows located (ferry found $found; peer: reladiff, 5 columns) | ${fx} s | ${rd} s | $(echo "scale=2; $fx / $rd" | bc) |"
  else
    echo "| $changed changed rows located (ferry found $found) | ${fx} s | | |"
  fi
} | tee -a "$out"
