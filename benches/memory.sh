#!/usr/bin/env bash
# Resident memory over many lines and hosts (default 10 M generated lines, 10 000 hosts, 9 GB):
# peak and curve (benches/rss.sh) of `collect --once` with the live view off and on, `stats`,
# and `top FILE` without a terminal (the collector's pipeline in-process, then one table);
# and the peak of `top --attach` taking one snapshot of a collector that holds every host.
# Usage: benches/memory.sh  (env: LINES=10000000 HOSTS=10000 BENCH_DATA=bench-data)
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${LINES:-10000000}
HOSTS=${HOSTS:-10000}
DATA=${BENCH_DATA:-bench-data}
FILE="$DATA/egress-$LINES-$HOSTS.ndjson"
BIN=target/release/egresslens

cargo build --release --quiet
mkdir -p "$DATA"
[ -s "$FILE" ] || "$BIN" gen --lines "$LINES" --hosts "$HOSTS" --seed 8 --out "$FILE"
work=$(mktemp -d)
trap 'kill "${collector:-}" 2> /dev/null || true; rm -rf "$work"' EXIT
echo "file: $FILE, $LINES lines over $HOSTS hosts, $(($(stat -c %s "$FILE") / 1000000)) MB"

measure() {
  local name=$1
  shift
  printf '%-44s' "$name"
  benches/rss.sh "$@" 2>&1 > /dev/null | grep -o 'peak RSS.*'
}
measure "collect --once, live view off" \
  "$BIN" collect --once --listen off --file "$FILE" --store "$work/a" 2> /dev/null
measure "collect --once, live view on" \
  "$BIN" collect --once --listen 127.0.0.1:0 --file "$FILE" --store "$work/b"
measure "stats" "$BIN" stats -o json "$FILE"
measure "stats --window 5m" "$BIN" stats --window 5m -o json "$FILE"
measure "top FILE (no terminal: reads, then prints)" "$BIN" top "$FILE"

# A following collector with every host in its live view, and top taking one snapshot of it.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" collect --file "$FILE" --store "$work/c" --listen "127.0.0.1:$port" 2> /dev/null &
collector=$!
until curl -sf "http://127.0.0.1:$port/api/v1/snapshot" |
  python3 -c "import json, sys; sys.exit(json.load(sys.stdin)['lines'] < $LINES)"; do
  sleep 2
done
/usr/bin/time -f '%M' -o "$work/top.txt" "$BIN" top --attach "http://127.0.0.1:$port" > /dev/null
printf '%-44s%s\n' "top --attach (one snapshot of $HOSTS hosts)" "peak RSS $(($(cat "$work/top.txt") / 1024)) MiB"
