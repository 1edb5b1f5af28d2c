-- Which external hosts get the most requests and the most bytes?
SELECT coalesce(authority, requested_server_name, service_host) AS host,
       count(*) AS requests,
       sum(bytes_sent) AS bytes_sent,
       sum(bytes_received) AS bytes_received,
       sum(bytes_sent) + sum(bytes_received) AS bytes_total
FROM access_log
GROUP BY 1
ORDER BY requests DESC, bytes_total DESC, host
LIMIT 50
