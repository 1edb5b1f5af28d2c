-- How many requests per minute went to one host (--param host=aliyun.com), and how many failed?
SELECT date_trunc('minute', ts) AS minute,
       count(*) AS requests,
       count(*) FILTER (WHERE response_code >= 500) AS status_5xx,
       round(avg(duration_ms), 1) AS avg_ms
FROM access_log
WHERE coalesce(authority, requested_server_name, service_host) = {{host}}
GROUP BY 1
ORDER BY 1
