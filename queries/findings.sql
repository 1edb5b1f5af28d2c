-- What must an operator act on: bypass, unregistered or blocked egress, TLS not originated or failing, per kind, host and source?
-- A plaintext upstream request counts as tls_not_originated only for a host whose TLS the
-- waypoint originates: some of its requests had TLS originated, or a mesh snapshot says so.
WITH tls_hosts AS (
    SELECT coalesce(authority, requested_server_name, service_host) AS host
    FROM access_log
    WHERE tls_originated
    UNION
    SELECT host FROM mesh_hosts WHERE tls_origination
)
SELECT kind, severity, host, source,
       sum(count) AS count,
       min(ts) AS first_seen,
       max(last_seen) AS last_seen,
       first_value(detail ORDER BY ts) AS detail,
       first_value(evidence ORDER BY ts) AS evidence,
       first_value(origin ORDER BY ts) AS origin
FROM findings
WHERE kind <> 'tls_not_originated' OR host IN (SELECT host FROM tls_hosts)
GROUP BY kind, severity, host, source
ORDER BY severity, count DESC, kind, host, source
