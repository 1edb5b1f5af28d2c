-- How fast does each host answer: request duration p50/p90/p99 (exact) and max, and the upstream's own time?
SELECT coalesce(authority, requested_server_name, service_host) AS host,
       count(*) AS requests,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), 1) AS p50_ms,
       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_ms), 1) AS p90_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms), 1) AS p99_ms,
       max(duration_ms) AS max_ms,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY upstream_service_time_ms), 1)
           AS upstream_p50_ms
FROM access_log
WHERE duration_ms IS NOT NULL
GROUP BY 1
ORDER BY requests DESC, host
LIMIT 50
