-- Named queries of pgpulse. Each starts with "-- name: NAME" and a line on
-- what it is for; sql.py loads them once.

-- name: publish
-- Publish one event inside the caller's transaction.
SELECT pgpulse.publish(%(tenant_id)s, %(topic)s, %(type)s, %(data)s::jsonb, %(user_id)s);

-- name: publish_many
-- Publish a batch of events in one statement; ids come back in input order.
-- The batch travels as one JSON array of {tenant_id, topic, type, data,
-- user_id} objects: encoding it is one C call on the client, where five
-- arrays of quoted literals cost several microseconds an event to build.
SELECT pgpulse.publish_many(
    coalesce(array_agg(b.tenant_id ORDER BY b.ord), '{}'),
    coalesce(array_agg(b.topic ORDER BY b.ord), '{}'),
    coalesce(array_agg(b.type ORDER BY b.ord), '{}'),
    coalesce(array_agg(b.data ORDER BY b.ord), '{}'),
    coalesce(array_agg(b.user_id ORDER BY b.ord), '{}'))
FROM ROWS FROM (
    jsonb_to_recordset(%(batch)s::jsonb)
        AS (tenant_id text, topic text, type text, data jsonb, user_id text)
) WITH ORDINALITY AS b(tenant_id, topic, type, data, user_id, ord);

-- name: fetch_after
-- The listener's read: each tenant's events after its cursor, in id order.
SELECT e.tenant_id, e.id, e.topic, e.type, e.data::text, e.user_id, e.created_at
FROM unnest(%(tenants)s::text[], %(after)s::bigint[]) AS c(tenant_id, after_id)
CROSS JOIN LATERAL (
    SELECT * FROM pgpulse.events AS ev
    WHERE ev.tenant_id = c.tenant_id AND ev.id > c.after_id
    ORDER BY ev.id
    LIMIT %(limit)s
) AS e
ORDER BY e.tenant_id, e.id;

-- name: position
-- Where a tenant's stream stands: its newest id and the first retained id after a point.
SELECT
    coalesce((SELECT t.last_id FROM pgpulse.tenants AS t WHERE t.tenant_id = %(tenant_id)s), 0),
    (SELECT min(e.id) FROM pgpulse.events AS e
     WHERE e.tenant_id = %(tenant_id)s AND e.id > %(after)s);

-- name: replay
-- A page of a tenant's retained events after a point, as one connection may see them.
SELECT e.tenant_id, e.id, e.topic, e.type, e.data::text, e.user_id, e.created_at
FROM pgpulse.events AS e
WHERE e.tenant_id = %(tenant_id)s AND e.id > %(after)s AND e.id <= %(until)s
  AND (%(topics)s::text[] IS NULL OR e.topic = ANY(%(topics)s::text[]))
  AND (e.user_id IS NULL OR e.user_id = %(user_id)s)
ORDER BY e.id
LIMIT %(limit)s;

-- name: prune_by_age
-- Delete up to a batch of events older than the retention horizon.
DELETE FROM pgpulse.events AS e
USING (
    SELECT tenant_id, id FROM pgpulse.events
    WHERE created_at < clock_timestamp() - make_interval(secs => %(seconds)s)
    LIMIT %(batch)s
) AS old
WHERE e.tenant_id = old.tenant_id AND e.id = old.id;

-- name: prune_by_count
-- Delete up to a batch of events past each tenant's newest N.
DELETE FROM pgpulse.events AS e
USING (
    SELECT ev.tenant_id, ev.id FROM pgpulse.events AS ev
    JOIN pgpulse.tenants AS t ON t.tenant_id = ev.tenant_id
    WHERE ev.id <= t.last_id - %(keep)s
    LIMIT %(batch)s
) AS old
WHERE e.tenant_id = old.tenant_id AND e.id = old.id;

-- name: job_backlog
-- For /metrics: jobs waiting and running, and how long the oldest has waited (seconds).
SELECT
    (SELECT count(*) FROM pgpulse.jobs WHERE status = 'queued'),
    (SELECT count(*) FROM pgpulse.jobs WHERE status = 'running'),
    (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
     FROM pgpulse.jobs WHERE status = 'queued');

-- name: prune_jobs
-- Delete up to a batch of jobs that ended before the retention horizon.
DELETE FROM pgpulse.jobs AS j
USING (
    SELECT id FROM pgpulse.jobs
    WHERE status IN ('succeeded', 'failed')
      AND finished_at < clock_timestamp() - make_interval(secs => %(seconds)s)
    LIMIT %(batch)s
) AS old
WHERE j.id = old.id;

-- name: insert_notification
-- The seed's notification row; its event is published in the same transaction.
INSERT INTO pgpulse.notifications (tenant_id, message) VALUES (%(tenant_id)s, %(message)s)
RETURNING id;

-- name: list_notifications
-- A tenant's notifications, newest first, before an id.
SELECT id, message, created_at FROM pgpulse.notifications
WHERE tenant_id = %(tenant_id)s AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: submit_job
-- Queue a job inside the caller's transaction; workers wake at commit.
SELECT pgpulse.submit_job(%(tenant_id)s, %(kind)s, %(input)s::jsonb, %(user_id)s);

-- name: get_job
-- One job as its tenant (and, for a user's job, that user) may see it.
SELECT id, kind, status, progress, input::text, result::text, error, attempts,
       created_at, started_at, finished_at
FROM pgpulse.jobs
WHERE id = %(job_id)s AND tenant_id = %(tenant_id)s
  AND (user_id IS NULL OR user_id = %(user_id)s);

-- name: claim_jobs
-- A worker's claim: up to n queued jobs of its kinds, each with its ai_job.started event.
SELECT id, tenant_id, user_id, kind, input::text, attempts
FROM pgpulse.claim_jobs(%(worker)s, %(kinds)s, %(n)s, %(lease)s);

-- name: job_progress
-- Record and publish a running job's progress; false if the worker lost the job.
SELECT pgpulse.job_progress(%(job_id)s, %(worker)s, %(progress)s, %(message)s);

-- name: finish_job
-- A running job's end, succeeded (error NULL) or failed; false if the worker lost the job.
SELECT pgpulse.finish_job(%(job_id)s, %(worker)s, %(result)s::jsonb, %(error)s);

-- name: extend_leases
-- Keep a worker's jobs leased to it; returns the ids it still holds.
SELECT pgpulse.extend_leases(%(worker)s, %(job_ids)s::uuid[], %(lease)s);

-- name: release_jobs
-- A stopping worker's unfinished jobs, queued again for another worker.
SELECT pgpulse.release_jobs(%(worker)s, %(job_ids)s::uuid[]);

-- name: recover_jobs
-- Jobs whose worker stopped renewing its lease: queued again, or failed.
SELECT pgpulse.recover_jobs();

-- name: prune_notifications
-- Delete up to a batch of notifications older than the retention horizon.
DELETE FROM pgpulse.notifications AS n
USING (
    SELECT id FROM pgpulse.notifications
    WHERE created_at < clock_timestamp() - make_interval(secs => %(seconds)s)
    LIMIT %(batch)s
) AS old
WHERE n.id = old.id;

-- name: expire_queued_jobs
-- Fail up to a batch of jobs queued for longer than the horizon (no worker claims them).
SELECT pgpulse.expire_queued_jobs(%(seconds)s, %(batch)s);
