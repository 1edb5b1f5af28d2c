-- Which source IPs (pods) call each host the most?
WITH calls AS (
    SELECT coalesce(authority, requested_server_name, service_host) AS host,
           source_ip, count(*) AS requests
    FROM access_log
    GROUP BY 1, 2
),
ranked AS (
    SELECT host, source_ip, requests,
           row_number() OVER (PARTITION BY host ORDER BY requests DESC, source_ip) AS rank
    FROM calls
)
SELECT host, rank, source_ip, requests
FROM ranked
WHERE rank <= 3
ORDER BY host, rank
