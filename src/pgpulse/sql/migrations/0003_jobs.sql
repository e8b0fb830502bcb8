-- pgpulse schema, version 3: jobs (`POST /api/jobs`, `pgpulse worker`).
--
-- A job is a row; its life is four states: queued -> running -> succeeded or
-- failed. Every change of state that users see is made by one function
-- below, which publishes the matching event (topic 'ai_jobs') in the same
-- transaction, so the row and the event never disagree.
--
-- Workers claim queued jobs with FOR UPDATE SKIP LOCKED, so any number of
-- them share one queue without waiting on each other. A claim is a lease:
-- a worker extends it while it works; a job whose lease ran out (its worker
-- died or lost the database) is queued again, or failed once it has used
-- max_attempts. A job therefore runs at least once; its state and events
-- change exactly once per transition.
--
-- Functions that publish for several jobs walk them in tenant order: each
-- publish locks its tenant's counter row, and one order means no deadlock.

CREATE TABLE pgpulse.jobs (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 200),
    user_id      text                 CHECK (length(user_id) BETWEEN 1 AND 200),
    kind         text        NOT NULL CHECK (length(kind) BETWEEN 1 AND 200),
    input        jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'queued'
                             CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress     double precision NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    result       jsonb,
    error        text,
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    worker       text,
    lease_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at   timestamptz,
    finished_at  timestamptz
);

CREATE INDEX jobs_queued_idx ON pgpulse.jobs (created_at) WHERE status = 'queued';
CREATE INDEX jobs_lease_idx ON pgpulse.jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_tenant_idx ON pgpulse.jobs (tenant_id, created_at DESC);
-- Retention deletes ended jobs by age, as it does events.
CREATE INDEX jobs_finished_idx ON pgpulse.jobs (finished_at)
    WHERE status IN ('succeeded', 'failed');

-- The event of a job's transition, for the job's tenant (and its user, if any).
CREATE FUNCTION pgpulse._job_event(job pgpulse.jobs, type text, data jsonb) RETURNS bigint
LANGUAGE sql AS $$
    SELECT pgpulse.publish(job.tenant_id, 'ai_jobs', type,
                           jsonb_build_object('job_id', job.id) || data, job.user_id);
$$;

-- Queue a job inside the caller's transaction; returns its id. Workers are
-- woken at commit (channel 'pgpulse_jobs'); a job rolled back never runs.
CREATE FUNCTION pgpulse.submit_job(
    tenant_id text, kind text, input jsonb DEFAULT '{}', user_id text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    job_id uuid;
BEGIN
    PERFORM pgpulse._check_name('tenant_id', tenant_id);
    PERFORM pgpulse._check_name('kind', kind);
    IF user_id IS NOT NULL THEN
        PERFORM pgpulse._check_name('user_id', user_id);
    END IF;
    INSERT INTO pgpulse.jobs (tenant_id, user_id, kind, input)
        VALUES (tenant_id, user_id, kind, coalesce(input, '{}'))
        RETURNING id INTO job_id;
    PERFORM pg_notify('pgpulse_jobs', kind);
    RETURN job_id;
END
$$;

-- Claim up to n queued jobs of the given kinds, oldest first, for a lease.
CREATE FUNCTION pgpulse.claim_jobs(
    worker text, kinds text[], n integer, lease_seconds double precision
) RETURNS SETOF pgpulse.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    claimed pgpulse.jobs[];
    job pgpulse.jobs;
BEGIN
    WITH picked AS (
        SELECT j.id FROM pgpulse.jobs AS j
        WHERE j.status = 'queued' AND j.kind = ANY(kinds)
        ORDER BY j.created_at
        LIMIT n
        FOR UPDATE SKIP LOCKED
    ), updated AS (
        UPDATE pgpulse.jobs AS j
        SET status = 'running', attempts = j.attempts + 1, worker = claim_jobs.worker,
            lease_until = clock_timestamp() + make_interval(secs => lease_seconds),
            started_at = coalesce(j.started_at, clock_timestamp())
        FROM picked WHERE j.id = picked.id
        RETURNING j AS job
    )
    SELECT coalesce(array_agg(u.job ORDER BY (u.job).tenant_id, (u.job).created_at), '{}')
        INTO claimed FROM updated AS u;
    FOREACH job IN ARRAY claimed LOOP
        PERFORM pgpulse._job_event(job, 'ai_job.started',
                                   jsonb_build_object('kind', job.kind, 'attempt', job.attempts));
        RETURN NEXT job;
    END LOOP;
END
$$;

-- Record a running job's progress (0 to 1) and publish it. False when this
-- worker no longer holds the job (its lease ran out and it was taken back).
CREATE FUNCTION pgpulse.job_progress(
    job_id uuid, worker text, progress double precision, message text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    job pgpulse.jobs;
BEGIN
    UPDATE pgpulse.jobs AS j SET progress = job_progress.progress
        WHERE j.id = job_id AND j.status = 'running' AND j.worker = job_progress.worker
        RETURNING j.* INTO job;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pgpulse._job_event(job, 'ai_job.progress',
        jsonb_strip_nulls(jsonb_build_object('progress', progress, 'message', message)));
    RETURN true;
END
$$;

-- End a running job: succeeded with its result, or failed with its error
-- (when error is not NULL). False when this worker no longer holds the job.
CREATE FUNCTION pgpulse.finish_job(
    job_id uuid, worker text, result jsonb, error text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    job pgpulse.jobs;
BEGIN
    UPDATE pgpulse.jobs AS j
        SET status = CASE WHEN error IS NULL THEN 'succeeded' ELSE 'failed' END,
            progress = CASE WHEN error IS NULL THEN 1 ELSE j.progress END,
            result = CASE WHEN error IS NULL THEN coalesce(result, 'null') END,
            error = finish_job.error,
            lease_until = NULL,
            finished_at = clock_timestamp()
        WHERE j.id = job_id AND j.status = 'running' AND j.worker = finish_job.worker
        RETURNING j.* INTO job;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF error IS NULL THEN
        -- 'ai_job_complete', not 'ai_job.complete': the seed's name, kept by the contract.
        PERFORM pgpulse._job_event(job, 'ai_job_complete', jsonb_build_object('result', job.result));
    ELSE
        PERFORM pgpulse._job_event(job, 'ai_job.failed', jsonb_build_object('error', error));
    END IF;
    RETURN true;
END
$$;

-- Extend the leases of the jobs a worker is running; returns those it still holds.
CREATE FUNCTION pgpulse.extend_leases(
    worker text, job_ids uuid[], lease_seconds double precision
) RETURNS SETOF uuid
LANGUAGE sql AS $$
    UPDATE pgpulse.jobs AS j
        SET lease_until = clock_timestamp() + make_interval(secs => lease_seconds)
        WHERE j.id = ANY(job_ids) AND j.status = 'running' AND j.worker = extend_leases.worker
        RETURNING j.id;
$$;

-- Give back jobs a worker stops before finishing them (it is shutting down):
-- queued again at once, and the interrupted attempt does not count.
CREATE FUNCTION pgpulse.release_jobs(worker text, job_ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    released integer;
    kinds text[];
BEGIN
    WITH r AS (
        UPDATE pgpulse.jobs AS j
            SET status = 'queued', attempts = greatest(j.attempts - 1, 0), worker = NULL,
                lease_until = NULL, progress = 0
            WHERE j.id = ANY(job_ids) AND j.status = 'running' AND j.worker = release_jobs.worker
            RETURNING j.kind
    )
    SELECT count(*), array_agg(DISTINCT r.kind) INTO released, kinds FROM r;
    PERFORM pg_notify('pgpulse_jobs', k) FROM unnest(kinds) AS k;
    RETURN released;
END
$$;

-- Take back running jobs whose lease ran out: queued again while attempts
-- remain, else failed (with their ai_job.failed event). Returns how many.
CREATE FUNCTION pgpulse.recover_jobs() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    job pgpulse.jobs;
    n integer := 0;
BEGIN
    FOR job IN
        SELECT j.* FROM pgpulse.jobs AS j
        WHERE j.status = 'running' AND j.lease_until < clock_timestamp()
        ORDER BY j.tenant_id, j.created_at
        FOR UPDATE SKIP LOCKED
    LOOP
        n := n + 1;
        IF job.attempts < job.max_attempts THEN
            UPDATE pgpulse.jobs AS j
                SET status = 'queued', worker = NULL, lease_until = NULL, progress = 0
                WHERE j.id = job.id;
            PERFORM pg_notify('pgpulse_jobs', job.kind);
        ELSE
            UPDATE pgpulse.jobs AS j
                SET status = 'failed', lease_until = NULL, finished_at = clock_timestamp(),
                    error = format('its worker stopped answering, %s times', job.attempts)
                WHERE j.id = job.id
                RETURNING j.* INTO job;
            PERFORM pgpulse._job_event(job, 'ai_job.failed', jsonb_build_object('error', job.error));
        END IF;
    END LOOP;
    RETURN n;
END
$$;
