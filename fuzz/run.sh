#!/usr/bin/env bash
# Fuzzes every parser and framer for SECONDS each (default 600), seeded from tests/fixtures,
# and prints each target's executions. Needs the nightly toolchain and cargo-fuzz
# (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).
#   fuzz/run.sh [SECONDS] [TARGET…]
# A crash leaves its input in fuzz/artifacts/TARGET/ and stops with libFuzzer's exit status.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(access_line envoy_text ztunnel http_headers line_framing)
fixtures=../tests/fixtures/real

# One seed per fixture line for the line parsers; whole files for the block and line readers.
seed_lines() {
  local dir=corpus/$1
  shift
  mkdir -p "$dir"
  local n=0
  for file in "$@"; do
    while IFS= read -r line || [ -n "$line" ]; do
      n=$((n + 1))
      printf '%s' "$line" > "$dir/seed-$n"
    done < "$file"
  done
}
seed_lines access_line "$fixtures"/envoy-json.log "$fixtures"/envoy-text.log "$fixtures"/ztunnel.log
seed_lines envoy_text "$fixtures"/envoy-text.log
seed_lines ztunnel "$fixtures"/ztunnel.log
mkdir -p corpus/http_headers corpus/line_framing
cp "$fixtures"/curl-headers.txt corpus/http_headers/seed-curl-headers
# line_framing reads three control bytes (line cap, read size, growth steps), then the input.
for file in "$fixtures"/envoy-json.log "$fixtures"/ztunnel.log; do
  { printf '\x10\x07\x03'; head -c 4000 "$file"; } > "corpus/line_framing/seed-$(basename "$file")"
done
ts=2025-08-18T09:36:30.001392687Z
{ printf '\x02\x05\x02'; printf '%s\n' "$ts stdout P {\"authority\":\"aliyun" "$ts stderr F warn" \
  "$ts stdout P .com\",\"path\":" "$ts stdout F \"/\"}" "$ts stdout F {}"; } > corpus/line_framing/seed-cri

for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s"
  # The fuzzer's status, whatever the filter of its output finds (a failed build prints none
  # of those lines).
  set +e
  cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256 \
    -print_final_stats=1 2>&1 |
    tee "fuzz-$target.log" | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|INFO: Seed|.*(ERROR|error|crash|Test unit written))'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" != 0 ]; then
    echo "$target failed (exit $status): see fuzz/fuzz-$target.log and fuzz/artifacts/$target/" >&2
    exit "$status"
  fi
done
