-- Named queries of the node registry and the console's admin API
-- (loaded with queries.sql; the same "-- name: NAME" blocks).

-- name: node_beat
-- A node's heartbeat: its row, inserted or refreshed, with its stats.
INSERT INTO pgpulse.nodes AS n
    (id, kind, host, pid, started_at, heartbeat_at, heartbeat_interval, stats)
VALUES (%(id)s, %(kind)s, %(host)s, %(pid)s, %(started_at)s, clock_timestamp(),
        %(interval)s, %(stats)s::jsonb)
ON CONFLICT (id) DO UPDATE
    SET heartbeat_at = excluded.heartbeat_at,
        heartbeat_interval = excluded.heartbeat_interval,
        stats = excluded.stats;

-- name: node_forget_dead
-- Delete the rows of nodes silent for longer than the removal horizon.
DELETE FROM pgpulse.nodes
WHERE heartbeat_at < clock_timestamp() - make_interval(secs => %(seconds)s);

-- name: node_leave
-- A node that stops cleanly removes its own row.
DELETE FROM pgpulse.nodes WHERE id = %(id)s;

-- name: events_committed
-- Events created in (after, now - lag]: the cluster's event rate, sampled by
-- each serving node. The lag leaves time for transactions to commit; the
-- upper bound comes back as the next sample's "after".
SELECT b.upper,
       (SELECT count(*) FROM pgpulse.events AS e
        WHERE e.created_at > coalesce(%(after)s, b.upper - make_interval(secs => %(window)s))
          AND e.created_at <= b.upper)
FROM (SELECT statement_timestamp() - make_interval(secs => %(lag)s) AS upper) AS b;

-- name: admin_nodes
-- Every registered node, with its age and whether it is still up.
SELECT id, kind, host, pid, started_at, heartbeat_at, stats::text,
       extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 AS age,
       heartbeat_at >= clock_timestamp()
           - make_interval(secs => heartbeat_interval * %(stale_intervals)s) AS up
FROM pgpulse.nodes
ORDER BY kind, started_at, id;

-- name: admin_jobs_running
-- The running jobs, oldest first, for the console's progress bars.
SELECT id, tenant_id, user_id, kind, progress, worker, attempts, started_at
FROM pgpulse.jobs
WHERE status = 'running'
ORDER BY started_at, id
LIMIT %(limit)s;

-- name: admin_jobs_recent
-- The jobs that ended most recently.
SELECT id, tenant_id, user_id, kind, status, progress, error, finished_at
FROM pgpulse.jobs
WHERE status IN ('succeeded', 'failed')
  AND finished_at > clock_timestamp() - make_interval(secs => %(seconds)s)
ORDER BY finished_at DESC
LIMIT %(limit)s;

-- name: admin_tenants
-- A page of tenants: those with events and those with open connections
-- (counted by live nodes), matching a substring, by connections or by name.
WITH connected AS (
    SELECT c.key AS tenant_id,
           sum((c.value ->> 0)::bigint) AS ws,
           sum((c.value ->> 1)::bigint) AS sse
    FROM pgpulse.nodes AS n
    CROSS JOIN LATERAL jsonb_each(coalesce(n.stats -> 'tenants', '{}')) AS c
    WHERE n.kind = 'server'
      AND n.heartbeat_at >= clock_timestamp()
          - make_interval(secs => n.heartbeat_interval * %(stale_intervals)s)
    GROUP BY c.key
), known AS (
    SELECT tenant_id FROM pgpulse.tenants
    UNION
    SELECT tenant_id FROM connected
), matching AS (
    SELECT k.tenant_id, coalesce(c.ws, 0) AS ws, coalesce(c.sse, 0) AS sse
    FROM known AS k LEFT JOIN connected AS c USING (tenant_id)
    WHERE strpos(lower(k.tenant_id), lower(%(search)s)) > 0
)
SELECT (SELECT count(*) FROM matching),
       coalesce(jsonb_agg(jsonb_build_array(p.tenant_id, p.ws, p.sse, p.last_id)
                          ORDER BY p.ord), '[]')::text
FROM (
    SELECT m.tenant_id, m.ws, m.sse,
           (SELECT max(e.id) FROM pgpulse.events AS e WHERE e.tenant_id = m.tenant_id) AS last_id,
           row_number() OVER (ORDER BY CASE WHEN %(by_name)s THEN 0 ELSE m.ws + m.sse END DESC,
                                       m.tenant_id) AS ord
    FROM matching AS m
    ORDER BY ord
    LIMIT %(limit)s OFFSET %(offset)s
) AS p;

-- name: admin_history
-- A page of a tenant's retained events, newest first, before an id; with a
-- user, as that user's connections see them (tenant-wide and their own).
SELECT e.tenant_id, e.id, coalesce(e.key, e.id), e.topic, e.type, e.data::text, e.user_id,
       e.created_at
FROM pgpulse.events AS e
WHERE e.tenant_id = %(tenant_id)s
  AND (%(before)s::bigint IS NULL OR e.id < %(before)s::bigint)
  AND (%(topic)s::text IS NULL OR e.topic = %(topic)s::text)
  AND (%(user_id)s::text IS NULL OR e.user_id IS NULL OR e.user_id = %(user_id)s::text)
ORDER BY e.id DESC
LIMIT %(limit)s;

-- name: admin_disconnect
-- An operator's disconnect: every node whose listener is up ends the tenant's
-- open streams (only the user's, with a user) at commit.
SELECT pgpulse.disconnect(%(tenant_id)s, %(user_id)s);
