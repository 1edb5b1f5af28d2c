-- Which external hosts were first seen in the last hour of the log?
WITH hosts AS (
    SELECT coalesce(authority, requested_server_name, service_host) AS host,
           min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS requests
    FROM access_log
    GROUP BY 1
)
SELECT host, first_seen, last_seen, requests
FROM hosts
WHERE first_seen > (SELECT max(ts) FROM access_log) - INTERVAL '1 hour'
ORDER BY first_seen DESC, host
