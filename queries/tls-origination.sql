-- Is TLS originated at the waypoint: what share of each host's port-80 service traffic left on :443?
SELECT coalesce(authority, requested_server_name, service_host) AS host,
       count(*) AS port_80_requests,
       count(*) FILTER (WHERE upstream_port = 443) AS upstream_443,
       count(*) FILTER (WHERE upstream_port = 80) AS upstream_80,
       round(100.0 * count(*) FILTER (WHERE upstream_port = 443) / count(*), 2) AS tls_originated_pct
FROM access_log
WHERE service_port = 80
GROUP BY 1
ORDER BY tls_originated_pct ASC, port_80_requests DESC, host
