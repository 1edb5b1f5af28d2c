#!/usr/bin/env bash
# The store against DuckDB, in one run on the same generated file:
#   (a) `collect --once` file -> Parquet (all columns) vs DuckDB COPY (SELECT * FROM read_ndjson(...))
#   (b) per-host stats SQL over the store (1M rows, and 10M rows: the file imported ten times)
#       `egresslens query` vs DuckDB read_parquet over the same files
# and an interoperability check: DuckDB reads the store (Hive partitions, UTC timestamps) and
# finds the same per-host numbers as `egresslens query`.
# Usage: benches/store.sh  (env: LINES=1000000 RUNS=3 BENCH_DATA=bench-data)
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${LINES:-1000000}
RUNS=${RUNS:-3}
DATA=${BENCH_DATA:-bench-data}
FILE="$DATA/egress-$LINES.ndjson"
BIN=target/release/egresslens
PY="$DATA/venv/bin/python"

cargo build --release --quiet
mkdir -p "$DATA"
[ -s "$FILE" ] || "$BIN" gen --lines "$LINES" --seed 42 --untyped 0 --out "$FILE"
if [ ! -x "$PY" ]; then
  python3 -m venv "$DATA/venv"
  "$DATA/venv/bin/pip" install --quiet duckdb==2.0.1
fi
cat "$FILE" > /dev/null

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
STORE="$DATA/store"
: > "$DATA/store-runs.txt"
for _ in $(seq "$RUNS"); do
  rm -rf "$STORE" "$DATA/duck.parquet"
  /usr/bin/time -f '%e %M' -o "$DATA/a.txt" "$BIN" collect --once --file "$FILE" --store "$STORE" 2> /dev/null
  /usr/bin/time -f '%e %M' -o "$DATA/b.txt" "$PY" -c "
import duckdb, sys
duckdb.sql('SET enable_progress_bar = false')
duckdb.sql(\"COPY (SELECT * FROM read_ndjson('$FILE')) TO '$DATA/duck.parquet' (FORMAT parquet, COMPRESSION zstd)\")"
  read -r a_s a_kib < "$DATA/a.txt"
  read -r b_s b_kib < "$DATA/b.txt"
  echo "$a_s $a_kib $b_s $b_kib $(ratio "$a_s" "$b_s")" >> "$DATA/store-runs.txt"
done
col() { cut -d' ' -f"$1" "$DATA/store-runs.txt" | median; }
peak() { cut -d' ' -f"$1" "$DATA/store-runs.txt" | sort -n | tail -1; }

SQL="SELECT authority, count(*) AS requests, sum(bytes_sent) AS bytes_sent,
  count(*) FILTER (WHERE response_code >= 500) AS status_5xx, max(duration_ms) AS max_ms
  FROM access_log GROUP BY authority ORDER BY requests DESC, authority"
# The 10M-row store: the same file imported ten times through stdin (never resumed).
STORE10="$DATA/store10"
if [ ! -d "$STORE10/access_log" ]; then
  for _ in $(seq 10); do "$BIN" collect --once --stdin --store "$STORE10" < "$FILE" 2> /dev/null; done
fi

# Runs (b) over store $1 into runs file $2: process times of both, and DuckDB's query alone.
query_runs() {
  local from="read_parquet('$1/access_log/*/*/*.parquet', hive_partitioning = true)"
  : > "$2"
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f '%e' -o "$DATA/a.txt" "$BIN" query --store "$1" -o json "$SQL" > "$DATA/ours.json"
    /usr/bin/time -f '%e' -o "$DATA/b.txt" "$PY" -c "
import duckdb, json, time
start = time.perf_counter()
rows = duckdb.sql(\"\"\"${SQL//access_log/$from}\"\"\").fetchall()
open('$DATA/b-query.txt', 'w').write(f'{time.perf_counter() - start:.3f}')
json.dump(rows, open('$DATA/theirs.json', 'w'))"
    echo "$(cat "$DATA/a.txt") $(cat "$DATA/b.txt") $(ratio "$(cat "$DATA/a.txt")" "$(cat "$DATA/b.txt")") $(cat "$DATA/b-query.txt")" >> "$2"
  done
}
query_runs "$STORE10" "$DATA/query10-runs.txt"
query_runs "$STORE" "$DATA/query-runs.txt"
qcol() { cut -d' ' -f"$1" "$2" | median; }

"$PY" - "$DATA/ours.json" "$DATA/theirs.json" "$STORE" <<'PY'
import json, sys, duckdb
ours = [[r["authority"], r["requests"], r["bytes_sent"], r["status_5xx"], r["max_ms"]] for r in json.load(open(sys.argv[1]))]
theirs = [list(r) for r in json.load(open(sys.argv[2]))]
assert ours == theirs, (ours[:3], theirs[:3])
kind = duckdb.sql(f"SELECT typeof(ts) FROM read_parquet('{sys.argv[3]}/access_log/*/*/*.parquet') LIMIT 1").fetchall()[0][0]
# DuckDB names a UTC-adjusted nanosecond timestamp TIMESTAMPTZ_NS (a plain one TIMESTAMP_NS).
assert kind.startswith("TIMESTAMP") and ("TZ" in kind or "TIME ZONE" in kind), kind
print(f"interop: DuckDB reads the store ({kind}), {len(theirs)} hosts agree with egresslens query")
PY

echo
echo "(a) collect --once, $LINES lines -> Parquet, all columns (medians of $RUNS)"
echo "  A egresslens collect --once  $(col 1) s  peak RSS $(($(peak 2) / 1024)) MiB"
echo "  B DuckDB COPY ... TO parquet  $(col 3) s  peak RSS $(($(peak 4) / 1024)) MiB (python + duckdb)"
echo "  A/B = $(col 5)"
for n in 1 10; do
  runs="$DATA/query-runs.txt"; [ "$n" = 10 ] && runs="$DATA/query10-runs.txt"
  echo "(b) per-host stats over the ${n}M-row store: egresslens query $(qcol 1 "$runs") s," \
    "DuckDB $(qcol 2 "$runs") s (query alone $(qcol 4 "$runs") s), A/B = $(qcol 3 "$runs")"
done
