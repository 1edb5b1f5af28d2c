#!/usr/bin/env bash
# Throughput and memory of `egresslens stats` and of the full parse, each against a peer
# measured in the same run on the same file:
#   (a) `egresslens stats` vs DuckDB's read_ndjson + GROUP BY computing the same per-host numbers,
#       run in turn (A B A B ...) so that drift of the machine's speed hits both alike
#   (b) full parse into all-column Arrow batches vs arrow-json's ReaderBuilder (cargo bench)
# Usage: benches/run.sh  (env: LINES=1000000 RUNS=5 BENCH_DATA=bench-data THREADS=2)
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${LINES:-1000000}
RUNS=${RUNS:-5}
DATA=${BENCH_DATA:-bench-data}
THREADS=${THREADS:-2}
FILE="$DATA/egress-$LINES.ndjson"
BIN=target/release/egresslens

cargo build --release --quiet
mkdir -p "$DATA"
if [ ! -s "$FILE" ]; then
  # Clean, consistently typed lines so that both peers can read every one of them.
  "$BIN" gen --lines "$LINES" --seed 42 --untyped 0 --out "$FILE"
fi
if [ ! -x "$DATA/venv/bin/python" ]; then
  python3 -m venv "$DATA/venv"
  "$DATA/venv/bin/pip" install --quiet duckdb==2.0.1
fi
cat "$FILE" > /dev/null # page cache: measure parsing, not the disk

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
echo "file: $FILE, $LINES lines, $(($(stat -c %s "$FILE") / 1000000)) MB, $(nproc) cores, median of $RUNS runs"

: > "$DATA/runs.txt"
for _ in $(seq "$RUNS"); do
  /usr/bin/time -f '%e %M' -o "$DATA/a.txt" \
    "$BIN" stats --threads "$THREADS" -o json "$FILE" > "$DATA/egresslens.json"
  /usr/bin/time -f '%e %M' -o "$DATA/b.txt" "$DATA/venv/bin/python" benches/duckdb_stats.py \
    "$FILE" 1 "$THREADS" "$DATA/duckdb.json" > "$DATA/b-query.txt"
  read -r a_s a_kib < "$DATA/a.txt"
  read -r b_s b_kib < "$DATA/b.txt"
  b_query=$(cat "$DATA/b-query.txt")
  echo "$a_s $a_kib $b_s $b_kib $b_query $(ratio "$a_s" "$b_s") $(ratio "$a_s" "$b_query")" >> "$DATA/runs.txt"
done
col() { cut -d' ' -f"$1" "$DATA/runs.txt" | median; }
peak() { cut -d' ' -f"$1" "$DATA/runs.txt" | sort -n | tail -1; }
single=$(for _ in $(seq "$RUNS"); do
  /usr/bin/time -f '%e' "$BIN" stats --threads 1 -o json "$FILE" 2>&1 > /dev/null | tail -1
done | median)

"$DATA/venv/bin/python" - "$DATA/egresslens.json" "$DATA/duckdb.json" <<'PY'
import json, sys
ours = {h["host"]: h for h in json.load(open(sys.argv[1]))["hosts"]}
theirs = {h["host"]: h for h in json.load(open(sys.argv[2]))}
assert ours.keys() == theirs.keys(), "host sets differ"
for host, t in theirs.items():
    o = ours[host]
    for k in ["requests", "bytes_sent", "bytes_received"]:
        assert o[k] == t[k], (host, k, o[k], t[k])
    for c in ["0", "1xx", "2xx", "3xx", "4xx", "5xx"]:
        assert o["status"][c] == t[c], (host, c)
    assert o["duration_ms"]["max"] == t["max"], (host, "max")
print(f"cross-check: {len(ours)} hosts; requests, bytes, status classes and max agree with DuckDB")
PY

echo
echo "(a) per-host stats, $THREADS threads each"
echo "  A egresslens stats             $(col 1) s  peak RSS $(($(peak 2) / 1024)) MiB   (1 thread: $single s)"
echo "  B DuckDB, whole process        $(col 3) s  peak RSS $(($(peak 4) / 1024)) MiB (python + duckdb)"
echo "  B DuckDB, query alone          $(col 5) s"
echo "  A/B = $(col 6) against the whole process, $(col 7) against the query alone (medians of pairs)"
echo
echo "(b) $(cargo bench --quiet --bench ingest -- "$FILE" "$RUNS")"
