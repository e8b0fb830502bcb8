-- pgpulse schema, version 7: streamed job output.
--
-- A job handler streams text (an AI model's tokens) with job.stream(). The
-- worker folds the chunks of each ~75 ms into one write: the job row keeps
-- the text so far (output), and each write publishes one 'ai_job.output'
-- event {job_id, offset, text}, where offset is where the chunk starts in the
-- text, in characters. So the event log gets a row per fold, not per token,
-- and a client that joins mid-stream reads the text so far from the job and
-- takes from each later event only what lies past it: no gap, no duplicate.

ALTER TABLE pgpulse.jobs ADD COLUMN output text NOT NULL DEFAULT '';

-- Append a chunk of a running job's streamed text and publish it. False when
-- this worker no longer holds the job. at = 0 is a run's first write, which
-- replaces any text an earlier attempt left. A write retried after its
-- commit went unacknowledged is recognised by its offset and not applied
-- twice; an offset that leaves a hole is refused.
CREATE FUNCTION pgpulse.job_output(job_id uuid, worker text, at integer, chunk text)
RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    job pgpulse.jobs;
    have integer;
BEGIN
    IF chunk IS NULL OR chunk = '' OR at IS NULL OR at < 0 THEN
        RAISE EXCEPTION 'pgpulse: job output needs a non-empty chunk at an offset of 0 or more'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT j.* INTO job FROM pgpulse.jobs AS j
        WHERE j.id = job_id AND j.status = 'running' AND j.worker = job_output.worker
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    have := length(job.output);
    IF at > 0 AND have >= at + length(chunk) THEN
        RETURN true;  -- a retried write that had landed
    END IF;
    IF at > 0 AND have <> at THEN
        RAISE EXCEPTION 'pgpulse: job % output at % does not follow its % characters',
            job_id, at, have USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF at + length(chunk) > 1000000 THEN
        RAISE EXCEPTION 'pgpulse: job % output would pass 1000000 characters', job_id
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    UPDATE pgpulse.jobs AS j
        SET output = CASE WHEN at = 0 THEN chunk ELSE j.output || chunk END
        WHERE j.id = job.id;
    PERFORM pgpulse._job_event(job, 'ai_job.output',
                               jsonb_build_object('offset', at, 'text', chunk));
    RETURN true;
END
$$;
