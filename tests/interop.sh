#!/usr/bin/env bash
# Any Parquet reader can use the store: DuckDB and pyarrow (from PyPI) read a store that
# `collect` wrote, with its Hive partitions and UTC timestamps, and find the same per-host
# numbers as `egresslens query`; DuckDB also over S3 (tests/s3.rs). Run by .ci/run after
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The binary the tests use (built with the same features, so nothing is built twice in CI).
cargo test --locked --quiet --no-run 2> /dev/null
bin="${CARGO_TARGET_DIR:-target}/debug/egresslens"
run() { "$bin" "$@"; }

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet duckdb==2.0.1 pyarrow==26.0.1
run gen --lines 20000 --seed 8 --bad 0.02 --rate 5 --format kubectl --out "$work/egress.log"
run collect --once --file "$work/egress.log" --store "$work/store" --commit-rows 5000 2> /dev/null
SQL="SELECT authority, count(*) AS requests, sum(bytes_sent) AS bytes_sent,
  count(*) FILTER (WHERE response_code >= 500) AS status_5xx, max(duration_ms) AS max_ms,
  min(ts) AS first_ts FROM access_log WHERE authority IS NOT NULL GROUP BY authority
  ORDER BY requests DESC, authority"
run query --store "$work/store" -o json "$SQL" > "$work/ours.json"
"$work/venv/bin/python" - "$work" "$SQL" <<'PY'
import json, sys, duckdb
work, sql = sys.argv[1], sys.argv[2]
source = f"read_parquet('{work}/store/access_log/*/*/*.parquet', hive_partitioning = true)"
con = duckdb.connect()
con.sql("SET TimeZone = 'UTC'")
theirs = con.sql(sql.replace("access_log", source)).fetchall()
ours = json.load(open(f"{work}/ours.json"))
assert len(ours) == len(theirs) > 0, (len(ours), len(theirs))
for o, t in zip(ours, theirs):
    row = [o["authority"], o["requests"], o["bytes_sent"], o["status_5xx"], o["max_ms"]]
    assert row == list(t[:5]), (row, t)
    # The same instant: egresslens prints RFC 3339 UTC, DuckDB gives an aware datetime.
    assert o["first_ts"].startswith(t[5].strftime("%Y-%m-%dT%H:%M:%S")), (o["first_ts"], t[5])
kind = con.sql(f"SELECT typeof(ts) FROM {source} LIMIT 1").fetchall()[0][0]
assert kind == "TIMESTAMPTZ_NS", kind
partitions = con.sql(f"SELECT count(DISTINCT (date, hour)) FROM {source}").fetchall()[0][0]
assert partitions >= 2, partitions
import pyarrow.dataset as ds
table = ds.dataset(f"{work}/store/access_log", format="parquet", partitioning="hive").to_table()
assert str(table.schema.field("ts").type) == "timestamp[ns, tz=UTC]", table.schema.field("ts").type
counts = table.group_by("authority").aggregate([("authority", "count"), ("bytes_sent", "sum")])
by_host = {r["authority"]: (r["authority_count"], r["bytes_sent_sum"]) for r in counts.to_pylist()}
assert all(by_host[o["authority"]] == (o["requests"], o["bytes_sent"]) for o in ours), "pyarrow differs"
print(f"interop: DuckDB and pyarrow agree on {len(ours)} hosts over {partitions} partitions; ts is {kind}")
PY

# The same from object storage: DuckDB's httpfs reads the bucket of tests/s3.rs (a real
# S3-protocol server on 127.0.0.1) as the README shows. httpfs comes from PyPI for DuckDB 1.5,
# the newest release it is published for.
python3 -m venv "$work/duckdb-s3"
"$work/duckdb-s3/bin/pip" install --quiet duckdb==1.5.5 duckdb-extensions==1.5.5 \
  duckdb-extension-httpfs==1.5.5
EGRESSLENS_DUCKDB_PYTHON="$work/duckdb-s3/bin/python" \
  cargo test --locked --quiet --test s3 -- --ignored duckdb_reads_the_bucket
