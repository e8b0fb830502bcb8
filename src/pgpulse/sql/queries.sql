-- Named queries of pgpulse. Each starts with "-- name: NAME" and a line on
-- what it is for; sql.py loads them once.

-- name: publish
-- Publish one event inside the caller's transaction.
SELECT pgpulse.publish(%(tenant_id)s, %(topic)s, %(type)s, %(data)s::jsonb, %(user_id)s);

-- name: publish_batch
-- The server's group commit: a JSON array of events ({tenant_id, topic, type,
-- data, user_id}) and notifications ({tenant_id, message}) in one statement;
-- (event id, key, notification id) come back in input order. One JSON
-- document is one C call to encode on the client.
SELECT event_id, event_key, notification_id FROM pgpulse.publish_batch(%(batch)s::jsonb);

-- name: fetch_after
-- The listener's read: each tenant's events after its cursor, in id order.
SELECT e.tenant_id, e.id, coalesce(e.key, e.id), e.topic, e.type, e.data::text, e.user_id,
       e.created_at
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
SELECT e.tenant_id, e.id, coalesce(e.key, e.id), e.topic, e.type, e.data::text, e.user_id,
       e.created_at
FROM pgpulse.events AS e
WHERE e.tenant_id = %(tenant_id)s AND e.id > %(after)s AND e.id <= %(until)s
  AND (%(topics)s::text[] IS NULL OR e.topic = ANY(%(topics)s::text[]))
  AND (e.user_id IS NULL OR e.user_id = %(user_id)s)
ORDER BY e.id
LIMIT %(limit)s;

-- name: history_before
-- A page of a tenant's retained events up to a point, newest first, as one token may read them.
SELECT e.tenant_id, e.id, coalesce(e.key, e.id), e.topic, e.type, e.data::text, e.user_id,
       e.created_at
FROM pgpulse.events AS e
WHERE e.tenant_id = %(tenant_id)s AND e.id <= %(until)s
  AND (%(topics)s::text[] IS NULL OR e.topic = ANY(%(topics)s::text[]))
  AND (e.user_id IS NULL OR e.user_id = %(user_id)s)
ORDER BY e.id DESC
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
       created_at, started_at, finished_at, output
FROM pgpulse.jobs
WHERE id = %(job_id)s AND tenant_id = %(tenant_id)s
  AND (user_id IS NULL OR user_id = %(user_id)s);

-- name: list_jobs
-- A page of the jobs a token may read (its tenant's shared ones and its user's), newest
-- first, below a job given as the cursor.
SELECT j.id, j.kind, j.status, j.progress, j.input::text, j.result::text, j.error, j.attempts,
       j.created_at, j.started_at, j.finished_at, j.output
FROM pgpulse.jobs AS j
WHERE j.tenant_id = %(tenant_id)s
  AND (j.user_id IS NULL OR j.user_id = %(user_id)s)
  AND (%(before)s::uuid IS NULL OR (j.created_at, j.id) < (
      SELECT b.created_at, b.id FROM pgpulse.jobs AS b
      WHERE b.id = %(before)s::uuid AND b.tenant_id = %(tenant_id)s))
ORDER BY j.created_at DESC, j.id DESC
LIMIT %(limit)s;

-- name: claim_jobs
-- A worker's claim: up to n queued jobs of its kinds, each with its ai_job.started event.
SELECT id, tenant_id, user_id, kind, input::text, attempts
FROM pgpulse.claim_jobs(%(worker)s, %(kinds)s, %(n)s, %(lease)s);

-- name: job_progress
-- Record and publish a running job's progress; false if the worker lost the job.
SELECT pgpulse.job_progress(%(job_id)s, %(worker)s, %(progress)s, %(message)s);

-- name: job_output
-- Append a chunk of a running job's streamed text (ai_job.output); false if the worker lost it.
SELECT pgpulse.job_output(%(job_id)s, %(worker)s, %(at)s, %(chunk)s);

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

-- name: presence_join
-- A connection joins a topic's presence (or updates its info); the topic's state after it.
SELECT version, members::text
FROM pgpulse.presence_join(%(tenant_id)s, %(topic)s, %(member_id)s, %(node_id)s, %(user_id)s,
                           %(info)s::jsonb, %(ttl)s, %(max_members)s);

-- name: presence_leave
-- A member leaves (only_expired: only if its row expired); true if it was there.
SELECT pgpulse.presence_leave(%(tenant_id)s, %(topic)s, %(member_id)s, %(only_expired)s);

-- name: presence_state
-- A topic's live members and its version, in one snapshot.
SELECT version, members::text FROM pgpulse.presence_state(%(tenant_id)s, %(topic)s);

-- name: presence_renew
-- A node keeps its members present; returns those it still has rows for.
UPDATE pgpulse.presence
SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s)
WHERE node_id = %(node_id)s
RETURNING tenant_id, topic, member_id;

-- name: presence_expired
-- Members whose node stopped renewing them, for the sweep to remove one by one.
SELECT tenant_id, topic, member_id FROM pgpulse.presence
WHERE expires_at <= clock_timestamp()
ORDER BY tenant_id, topic, member_id
LIMIT %(limit)s;
