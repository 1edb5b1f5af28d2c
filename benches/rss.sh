#!/usr/bin/env bash
# Runs a command and samples its resident memory every half second: prints the peak and the
# curve (one value per tenth of the run) on stderr, to see whether memory stays flat after
# warm-up.
# Usage: benches/rss.sh COMMAND [ARGS…]
set -euo pipefail
"$@" &
pid=$!
samples=()
while kill -0 "$pid" 2> /dev/null; do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2> /dev/null || true)
  [ -n "$rss" ] && samples+=("$rss")
  sleep 0.5
done
wait "$pid"
n=${#samples[@]}
if [ "$n" -eq 0 ]; then echo "no samples: the command ended at once" >&2; exit 0; fi
peak=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
curve=""
for i in $(seq 0 9); do curve+="$((samples[i * n / 10] / 1024)) "; done
echo "samples: $n over $((n / 2)) s; peak RSS $((peak / 1024)) MiB; curve (MiB, by tenth): $curve" >&2
