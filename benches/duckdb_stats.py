"""The peer for `egresslens stats`: DuckDB computing the same per-host numbers straight from the
NDJSON file (requests, bytes, status classes, errors, duration percentiles and max), with only
the columns it needs declared so it can skip the rest.

usage: duckdb_stats.py FILE RUNS THREADS OUT_JSON  -> prints one query time per line (seconds)
"""

import json
import sys
import time

import duckdb

QUERY = """
SELECT coalesce(authority_for, authority) AS host,
       count(*) AS requests,
       sum(bytes_sent) AS bytes_sent,
       sum(bytes_received) AS bytes_received,
       count(*) FILTER (WHERE coalesce(response_code, 0) < 100) AS s0,
       count(*) FILTER (WHERE response_code BETWEEN 100 AND 199) AS s1xx,
       count(*) FILTER (WHERE response_code BETWEEN 200 AND 299) AS s2xx,
       count(*) FILTER (WHERE response_code BETWEEN 300 AND 399) AS s3xx,
       count(*) FILTER (WHERE response_code BETWEEN 400 AND 499) AS s4xx,
       count(*) FILTER (WHERE response_code >= 500) AS s5xx,
       approx_quantile(duration, 0.5) AS p50,
       approx_quantile(duration, 0.9) AS p90,
       approx_quantile(duration, 0.99) AS p99,
       max(duration) AS max
FROM read_ndjson(?, columns = {
       authority_for: 'VARCHAR', authority: 'VARCHAR', response_code: 'INTEGER',
       bytes_sent: 'BIGINT', bytes_received: 'BIGINT', duration: 'DOUBLE'})
GROUP BY ALL
"""


def main():
    path, runs, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    rows = None
    for _ in range(runs):
        start = time.perf_counter()
        rows = con.execute(QUERY, [path]).fetchall()
        print(f"{time.perf_counter() - start:.4f}", flush=True)
    cols = ["host", "requests", "bytes_sent", "bytes_received", "0", "1xx", "2xx", "3xx",
            "4xx", "5xx", "p50", "p90", "p99", "max"]
    with open(out, "w") as f:
        json.dump([dict(zip(cols, r)) for r in rows], f)


main()
