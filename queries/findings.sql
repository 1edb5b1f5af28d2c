-- What must an operator act on: bypass, unregistered or blocked egress, TLS not originated or failing, per kind, host and source?
-- tls_not_originated: a request for service port 80 sent upstream on port 80, for a host whose
-- TLS the waypoint originates (some of its requests had TLS originated, or a mesh snapshot
-- says so). Once the collector snapshots the mesh, a request the waypoint routed to a host
-- that no snapshot registers (nor a Kubernetes service, *.svc.*) is unregistered egress too.
WITH records AS (
    SELECT *, coalesce(authority, requested_server_name, service_host) AS host,
           CASE WHEN source_workload IS NOT NULL THEN concat(source_namespace, '/', source_workload)
                ELSE coalesce(source_ip, '-') END AS source,
           concat(method, ' ', path, ' -> ', upstream_host, ' (', upstream_cluster, ')') AS evidence,
           CASE WHEN pod IS NOT NULL THEN concat(namespace, '/', pod) ELSE 'access_log' END AS origin
    FROM access_log
),
tls_hosts AS (
    SELECT host FROM records WHERE tls_originated
    UNION
    SELECT host FROM mesh_hosts WHERE tls_origination
),
evidence AS (
    SELECT kind, severity, host, source, count, ts, last_seen, detail, evidence, origin
    FROM findings
    UNION ALL
    SELECT 'tls_not_originated', 'critical', host, source, arrow_cast(1, 'UInt64'), ts,
           ts AS last_seen,
           'sent upstream in plaintext on port 80, while the waypoint originates TLS (:443) for this host',
           evidence, origin
    FROM records
    WHERE service_port = 80 AND upstream_port = 80 AND host IN (SELECT host FROM tls_hosts)
    UNION ALL
    SELECT 'unregistered_egress', 'warning', service_host, source, arrow_cast(1, 'UInt64'), ts,
           ts AS last_seen,
           'the waypoint routed it, but no mesh snapshot has a ServiceEntry for this host',
           evidence, origin
    FROM records
    WHERE cluster_kind IN ('inbound-vip', 'outbound')
      AND service_host NOT LIKE '%.svc.%'
      AND ts >= (SELECT min(ts) FROM mesh_hosts)
      AND service_host NOT IN (SELECT host FROM mesh_hosts)
      AND NOT EXISTS (SELECT 1 FROM mesh_hosts m
                      WHERE m.host LIKE '*.%' AND records.service_host LIKE concat('%', substr(m.host, 2)))
)
SELECT kind, severity, host, source,
       sum(count) AS count,
       min(ts) AS first_seen,
       max(last_seen) AS last_seen,
       first_value(detail ORDER BY ts) AS detail,
       first_value(evidence ORDER BY ts) AS evidence,
       first_value(origin ORDER BY ts) AS origin
FROM evidence
GROUP BY kind, severity, host, source
ORDER BY severity, count DESC, kind, host, source
