#!/usr/bin/env bash
# `top` as a person uses it, in a real terminal (tmux): on a generated file it shows the hosts
# and findings; `/` with a filter narrows the view and says so in the title; `:` with SQL
# shows the result table; `q` quits and gives the terminal back. Run by .ci/run after
# `cargo test` (which builds the binary); skipped, saying so, where tmux is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tmux > /dev/null; then
  echo "top-tmux: tmux is not installed; skipped" >&2
  exit 0
fi
work=$(mktemp -d)
session="egresslens-top-$$"
trap 'tmux kill-session -t "$session" 2> /dev/null || true; rm -rf "$work"' EXIT
cargo test --locked --quiet --no-run 2> /dev/null
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac
bin="$target_dir/debug/egresslens"
"$bin" gen --lines 5000 --seed 4 --incidents --out "$work/egress.log"

tmux new-session -d -s "$session" -x 120 -y 36 \
  "$bin top $work/egress.log --store $work/store; echo top-exited-\$?; sleep 30"
pane() { tmux capture-pane -p -t "$session"; }
# Waits until the pane shows $1 (a fixed string), for up to 30 s.
wait_for() {
  for _ in $(seq 300); do
    if pane | grep -qF -- "$1"; then return 0; fi
    sleep 0.1
  done
  echo "top-tmux: never saw '$1'; the pane was:" >&2
  pane >&2
  exit 1
}
keys() { tmux send-keys -t "$session" "$@"; }

wait_for " records"
wait_for "Findings: "
wait_for "aliyun.com"
keys "/"
wait_for "/▏"
keys "status:5xx" Enter
wait_for "filter: status:5xx"
keys ":" "SELECT authority, count(*) AS n FROM access_log GROUP BY 1 ORDER BY 2 DESC LIMIT 3" Enter
# The store commits every second: until then the table is empty, and the query is run again
# from the history (: ↑ Enter), as a person would.
for _ in $(seq 20); do
  sleep 0.5
  if pane | grep -qF "SQL: 3 rows"; then break; fi
  keys ":" Up Enter
done
wait_for "SQL: 3 rows"
wait_for "aliyun.com"
keys "q"
wait_for "top-exited-0"
echo "top-tmux: hosts, findings, a filter and a SQL result seen; top quit cleanly"
