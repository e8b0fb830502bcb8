-- pgpulse schema, version 5: hardening.
--
-- pgpulse.disconnect: an operator ends a tenant's (or one user's) open
-- connections on every node. It travels the listeners' own LISTEN
-- connection, on channel 'pgpulse_control' beside the wake-ups of channel
-- 'pgpulse' (whose payload stays a bare tenant id), and takes effect at
-- commit like any NOTIFY. Nodes whose LISTEN connection is down at that
-- moment miss it: pair it with revoking the user's tokens (short lifetimes).
CREATE FUNCTION pgpulse.disconnect(tenant_id text, user_id text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    PERFORM pgpulse._check_name('tenant_id', tenant_id);
    IF user_id IS NOT NULL THEN
        PERFORM pgpulse._check_name('user_id', user_id);
    END IF;
    PERFORM pg_notify('pgpulse_control', json_build_object(
        'op', 'disconnect', 'tenant_id', tenant_id, 'user_id', user_id)::text);
END
$$;

-- Retention of what the server stores besides events. Notifications are
-- pruned by age like events (index on created_at). A job still queued past
-- the horizon is of a kind no worker claims: it fails, visibly to its
-- submitter (ai_job.failed), and is pruned with the other ended jobs later.
CREATE INDEX notifications_created_at_idx ON pgpulse.notifications (created_at);

CREATE FUNCTION pgpulse.expire_queued_jobs(max_age_seconds double precision, batch integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    job pgpulse.jobs;
    n integer := 0;
BEGIN
    FOR job IN
        SELECT j.* FROM pgpulse.jobs AS j
        WHERE j.status = 'queued'
          AND j.created_at < clock_timestamp() - make_interval(secs => max_age_seconds)
        ORDER BY j.tenant_id, j.created_at
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    LOOP
        UPDATE pgpulse.jobs AS j
            SET status = 'failed', finished_at = clock_timestamp(),
                error = 'no worker took this job in time'
            WHERE j.id = job.id
            RETURNING j.* INTO job;
        PERFORM pgpulse._job_event(job, 'ai_job.failed', jsonb_build_object('error', job.error));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
