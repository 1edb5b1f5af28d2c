-- How often does each host fail (5xx, or no response where one was due), and with which Envoy response flags?
SELECT coalesce(authority, requested_server_name, service_host) AS host,
       count(*) AS requests,
       count(*) FILTER (WHERE response_code >= 500) AS status_5xx,
       count(*) FILTER (WHERE response_code >= 500
                           OR (coalesce(response_code, 0) = 0
                               AND (method IS NOT NULL OR response_flags IS NOT NULL))) AS errors,
       round(100.0 * count(*) FILTER (WHERE response_code >= 500
                           OR (coalesce(response_code, 0) = 0
                               AND (method IS NOT NULL OR response_flags IS NOT NULL))) / count(*), 2) AS error_pct,
       string_agg(DISTINCT response_flags, ' ' ORDER BY response_flags) AS response_flags
FROM access_log
GROUP BY 1
ORDER BY errors DESC, host
LIMIT 50
