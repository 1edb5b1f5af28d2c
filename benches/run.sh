#!/usr/bin/env bash
# Throughput and memory of `egresslens stats` and of the full parse, each against a peer
# measured in the same run on the same file:
#   (a) `egresslens stats` vs DuckDB's read_ndjson + GROUP BY computing the same per-host numbers
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

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bytes=$(stat -c %s "$FILE")
echo "file: $FILE, $LINES lines, $((bytes / 1000000)) MB, $(nproc) cores, median of $RUNS runs"

stats_run() { # threads -> "seconds peak_kib" per run
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f '%e %M' -o "$DATA/time.txt" "$BIN" stats --threads "$1" -o json "$FILE" > "$DATA/egresslens.json"
    cat "$DATA/time.txt"
  done
}
a2=$(stats_run "$THREADS")
a1=$(stats_run 1)
a2_s=$(echo "$a2" | cut -d' ' -f1 | median); a2_rss=$(echo "$a2" | cut -d' ' -f2 | sort -n | tail -1)
a1_s=$(echo "$a1" | cut -d' ' -f1 | median)
/usr/bin/time -f '%M' -o "$DATA/time.txt" "$DATA/venv/bin/python" benches/duckdb_stats.py "$FILE" "$RUNS" "$THREADS" "$DATA/duckdb.json" > "$DATA/duckdb-times.txt"
b_s=$(median < "$DATA/duckdb-times.txt"); b_rss=$(cat "$DATA/time.txt")

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
print(f"cross-check: {len(ours)} hosts, requests, bytes, status classes and max agree with DuckDB")
PY

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "(a) per-host stats"
echo "  A egresslens stats, $THREADS threads  ${a2_s} s  peak RSS $((a2_rss / 1024)) MiB"
echo "  A egresslens stats, 1 thread    ${a1_s} s"
echo "  B DuckDB read_ndjson, $THREADS threads  ${b_s} s (query only)  peak RSS $((b_rss / 1024)) MiB (python process)"
echo "  A/B = $(ratio "$a2_s" "$b_s") ($THREADS threads), $(ratio "$a1_s" "$b_s") (1 thread vs DuckDB's $THREADS)"
echo
echo "(b) $(cargo bench --quiet --bench ingest -- "$FILE" "$RUNS")"
