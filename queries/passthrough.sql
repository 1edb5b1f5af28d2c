-- What traffic did not go to a registered service: passthrough, blackhole, or no upstream cluster at all?
SELECT coalesce(cluster_kind, 'no cluster') AS cluster_kind,
       coalesce(authority, requested_server_name, downstream_local_address) AS destination,
       count(*) AS requests,
       sum(bytes_sent) + sum(bytes_received) AS bytes_total,
       string_agg(DISTINCT response_flags, ' ' ORDER BY response_flags) AS response_flags
FROM access_log
WHERE cluster_kind IS NULL OR cluster_kind IN ('passthrough', 'blackhole')
GROUP BY 1, 2
ORDER BY requests DESC, destination
LIMIT 100
