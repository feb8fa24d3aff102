#!/usr/bin/env bash
# W1 transform + stage: the dirty 6M-row TPC-H lineitem extract shaped,
# deduplicated and split into staged rows and rejects, ferry (benches/w1:
# one model with declared rules and `dedupe`) beside the DuckDB peer, in one
# run on the same file. `RULES=0` measures the same model without its rules
# and dedup, `RULES=10` with ten rules and no dedup (the overhead goal: ten
# rules add at most 30% over none). `MASK=1` runs it masked (`--mask`,
# benches/w1/variants/masked.yml: the model's text columns masked; the
# goal: at most 15% over the unmasked run), the unmasked run beside it.
#
#   scripts/bench_w1.sh [RUNS]      (default 3)
#
# MEMORY_LIMIT=4GB runs both under that memory limit (ferry's
# --memory-limit; DuckDB's memory_limit, through scripts/duckdb_limited.py):
# the scale-factor-10 run that checks dedup spills, on data made with
# `tpchgen-cli csv -s 10` and make_dirty_lineitem.py in a directory of its
# own (W1=that/dir MEMORY_LIMIT=4GB scripts/bench_w1.sh 1).
#
# CLUSTER=N also runs the model on a Ballista cluster of N executors on
# this machine (`ferry cluster scheduler` and N `ferry cluster executor`
# processes, the cores shared out between them, and MEMORY_LIMIT too): the
# overhead of the distributed path against the local run on the same cores
# (goal: at most 1.5x), with each process's peak RSS, and the jobs of the
# last cluster run as its scheduler reported them. CLUSTER_SETTINGS is
# added to the cluster's URL (`?partitions=4`).
#
# Needs: lineitem_dirty.csv (W1=/path/to/dir holding it, default
# bench-data/), made as ../shared/bench/README.md says; a python with duckdb
# (PYTHON=..., default python3); GNU time for peak memory. Prints the
# median seconds and peak RSS of each and the ratio, and appends them to
# benches/results/w1-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
data=${W1:-bench-data}
python=${PYTHON:-python3}
runs=${1:-3}
csv=$(realpath "$data/lineitem_dirty.csv")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "${CLUSTER:-}" ]; then
  cargo build --release --quiet --features cluster
else
  cargo build --release --quiet
fi
ferry=$PWD/target/release/ferry
mkdir -p benches/w1/data
ln -sf "$csv" benches/w1/data/lineitem_dirty.csv
proj=benches/w1
if [ "${MASK:-0}" = 1 ]; then
  mkdir -p "$work/w1" && cp -r benches/w1/ferry.yml benches/w1/models benches/w1/data "$work/w1/"
  cp benches/w1/variants/masked.yml "$work/w1/models/schema.yml"
  export FERRY_MASKING_KEY=${FERRY_MASKING_KEY:-a-benchmark-key-not-a-secret}
fi
case "${RULES:-1}" in
  0|10) # the same model without its rules and dedup, or with ten rules
    mkdir -p "$work/w1" && cp -r benches/w1/ferry.yml benches/w1/models benches/w1/data "$work/w1/"
    rm "$work/w1/models/schema.yml"
    [ "$RULES" = 10 ] && cp benches/w1/variants/ten_rules.yml "$work/w1/models/schema.yml"
    proj=$work/w1 ;;
esac

measure() { # name, command...: prints "seconds peak_kib" per run
  local name=$1; shift
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %M" -o "$work/t" "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
    echo "$name $(cat "$work/t")"
  done
}

limit=()
peer=("$python" "$shared/bench/peers/duckdb_transform.py")
if [ -n "${MEMORY_LIMIT:-}" ]; then
  limit=(--memory-limit "$MEMORY_LIMIT")
  peer=("$python" scripts/duckdb_limited.py "$MEMORY_LIMIT" "$shared/bench/peers/duckdb_transform.py")
fi

pids=()
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }
if [ -n "${CLUSTER:-}" ]; then
  sched=$(free_port)
  "$ferry" cluster scheduler --bind "127.0.0.1:$sched" >"$work/scheduler.log" 2>&1 &
  pids+=($!); wait_port "$sched"
  tasks=$(( $(nproc) / CLUSTER )); [ "$tasks" -ge 1 ] || tasks=1
  exec_limit=()
  if [ -n "${MEMORY_LIMIT:-}" ]; then
    bytes=$(python3 -c "import re,sys;m=re.match(r'(\d+)\s*([KMGT]?)B?$','$MEMORY_LIMIT'.upper());print(int(m[1])*1000**' KMGT'.index(m[2] or ' ')//$CLUSTER)")
    exec_limit=(--memory-limit "$bytes")
  fi
  for i in $(seq "$CLUSTER"); do
    flight=$(free_port); grpc=$(free_port)
    "$ferry" cluster executor --scheduler "127.0.0.1:$sched" --bind "127.0.0.1:$flight" --grpc-port "$grpc" \
      --concurrent-tasks "$tasks" --work-dir "$work/executor-$i" "${exec_limit[@]}" >"$work/executor-$i.log" 2>&1 &
    pids+=($!); wait_port "$flight"
  done
fi
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
{
  if [ -n "${CLUSTER:-}" ]; then
    measure ferry-cluster "$ferry" build --project-dir "$proj" -q --no-load --cluster "df://127.0.0.1:$sched${CLUSTER_SETTINGS:-}" "${limit[@]}"
    # The last cluster run's jobs, as its scheduler reported them.
    python3 - "$(ls -t "$proj"/.ferry/runs/*/run.json | head -1)" >"$work/jobs" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
took = {r["unique_id"].split(".")[-1]: r["execution_time"] for r in record["results"]["results"]}
for j in record["cluster"]["jobs"]:
    node = f" of the node's {took[j['node']]:.2f} s" if j["node"] in took else ""
    stages = ", ".join(f"stage {s['stage_id']}: {s['tasks']} tasks, {s['rows'] or 0:,} rows" for s in j["stages"])
    result = ", ".join(f"{e['address']}: {e['tasks']} tasks, {e['rows']:,} rows, {e['bytes']:,} bytes" for e in j["executors"])
    print(f"- `{j['node'] or 'the run'}`: {j['millis'] / 1000:.2f} s on the cluster{node}; {stages}; the result from {result}")
PY
    for i in $(seq "$CLUSTER"); do
      echo "executor-$i 0 $(awk '/VmHWM/ {print $2}' "/proc/${pids[$i]}/status")"
    done
    echo "scheduler 0 $(awk '/VmHWM/ {print $2}' "/proc/${pids[0]}/status")"
  fi
  if [ "${MASK:-0}" = 1 ]; then
    measure ferry-masked "$ferry" build --project-dir "$work/w1" -q --no-load --mask "${limit[@]}"
  fi
  measure ferry "$ferry" build --project-dir "$proj" -q --no-load "${limit[@]}"
  measure duckdb "${peer[@]}" "$csv" "$work/staged.parquet" "$work/rejects.parquet"
} | tee "$work/times"

median() { grep "^$1 " "$work/times" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
peak() { grep "^$1 " "$work/times" | awk '{print $3}' | sort -n | tail -1; }
f=$(median ferry); d=$(median duckdb)
fm=$(( $(peak ferry) / 1024 )); dm=$(( $(peak duckdb) / 1024 ))
staged=$(python3 -c "import json;print(json.load(open('$proj/.ferry/stage/lineitem/_ferry_stage.json'))['row_count'])")
rejects=$(python3 -c "import json;r=json.load(open('$proj/.ferry/run_results.json'));l=[x for x in r['results'] if x['unique_id']=='model.w1.lineitem'][0].get('ledger') or {};print(l.get('quarantined', 0), 'and dropped', l.get('duplicates_dropped', 0), 'duplicates')")
out=benches/results/w1-$(date +%Y-%m-%d).md
mkdir -p benches/results
{
  echo "# W1 transform + stage, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, median of $runs, $(basename "$(dirname "$csv")")/$(basename "$csv")${MEMORY_LIMIT:+, memory limit $MEMORY_LIMIT}"
  echo
  echo "| tool | seconds | peak RSS |"
  echo "|---|---|---|"
  echo "| ferry $(git describe --always --dirty), RULES=${RULES:-1} (1: W1's rules and dedup; 0: none; 10: ten rules) | $f | ${fm} MiB |"
  if [ "${MASK:-0}" = 1 ]; then
    echo "| ferry, masked (variants/masked.yml, --mask) | $(median ferry-masked) | $(( $(peak ferry-masked) / 1024 )) MiB |"
  fi
  if [ -n "${CLUSTER:-}" ]; then
    echo "| ferry on a local Ballista cluster of $CLUSTER executors ($tasks tasks each${CLUSTER_SETTINGS:+, $CLUSTER_SETTINGS}; the client's RSS) | $(median ferry-cluster) | $(( $(peak ferry-cluster) / 1024 )) MiB |"
    for i in $(seq "$CLUSTER"); do
      echo "| - executor $i (peak RSS over all runs) | | $(( $(peak "executor-$i") / 1024 )) MiB |"
    done
    echo "| - scheduler | | $(( $(peak scheduler) / 1024 )) MiB |"
  fi
  echo "| DuckDB peer (peers/duckdb_transform.py) | $d | ${dm} MiB |"
  echo
  echo "ferry/DuckDB time ratio: $(python3 -c "print(f'{$f/$d:.2f}')"); ferry staged $staged rows, rejected $rejects."
  if [ "${MASK:-0}" = 1 ]; then
    echo "masked/unmasked time ratio: $(python3 -c "print(f'{$(median ferry-masked)/$f:.2f}')") (goal: at most 1.15)"
  fi
  if [ -n "${CLUSTER:-}" ]; then
    echo "cluster/local time ratio: $(python3 -c "print(f'{$(median ferry-cluster)/$f:.2f}')") (goal: at most 1.5)"
    echo
    echo "The last cluster run's jobs, as the scheduler reported them (the seconds are the job's on the cluster; the rest of the run is ferry's, on its host):"
    echo
    cat "$work/jobs"
  fi
  echo
} | tee -a "$out"
