-- pgpulse schema, version 7: streamed job output, and presence (below).
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

-- Presence: who is connected to a topic of a tenant, across every node.
--
-- A connection that joins a topic's presence is a row here, written by the
-- node that holds the connection, which renews its rows' expires_at while
-- it runs. A node that dies stops renewing: any other node's sweep removes
-- its rows once expired, so its members leave within the TTL plus a sweep.
--
-- Each change (a join, a leave, an expiry) takes its topic's row in
-- presence_topics, raises its version, and sends NOTIFY 'pgpulse_presence'
-- with the version, in one transaction. The topic's row lock orders the
-- changes, so versions follow commit order; a snapshot (members and version,
-- read in one statement) and the notifications after it (version above the
-- snapshot's) fit together exactly. The payload carries the member (its
-- info is bounded by the server well under NOTIFY's 8000 bytes).

CREATE TABLE pgpulse.presence_topics (
    tenant_id text   NOT NULL,
    topic     text   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (tenant_id, topic)
);

CREATE TABLE pgpulse.presence (
    tenant_id  text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 200),
    topic      text        NOT NULL CHECK (length(topic) BETWEEN 1 AND 200),
    member_id  text        NOT NULL CHECK (length(member_id) BETWEEN 1 AND 64),
    node_id    text        NOT NULL,
    user_id    text                 CHECK (length(user_id) BETWEEN 1 AND 200),
    info       jsonb,
    joined_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, topic, member_id)
);
CREATE INDEX presence_node_idx ON pgpulse.presence (node_id);
CREATE INDEX presence_expires_idx ON pgpulse.presence (expires_at);

-- A member as clients see it.
CREATE FUNCTION pgpulse._presence_member(p pgpulse.presence) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('id', p.member_id, 'user_id', p.user_id, 'info', p.info,
                              'joined_at', p.joined_at);
$$;

-- Lock the topic's row and raise its version: the order of presence changes.
CREATE FUNCTION pgpulse._presence_next(tenant_id text, topic text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO pgpulse.presence_topics AS t (tenant_id, topic, version)
        VALUES (_presence_next.tenant_id, _presence_next.topic, 1)
        ON CONFLICT (tenant_id, topic) DO UPDATE SET version = t.version + 1
        RETURNING t.version;
$$;

CREATE FUNCTION pgpulse._presence_notify(
    tenant_id text, topic text, version bigint, kind text, member jsonb
) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('pgpulse_presence', jsonb_build_object(
        'tenant_id', tenant_id, 'topic', topic, 'version', version, 'kind', kind,
        'member', member)::text);
$$;

-- The live members of a topic and its version, in one snapshot.
CREATE FUNCTION pgpulse.presence_state(tenant_id text, topic text)
RETURNS TABLE (version bigint, members jsonb)
LANGUAGE sql AS $$
    SELECT
        coalesce((SELECT t.version FROM pgpulse.presence_topics AS t
                  WHERE t.tenant_id = presence_state.tenant_id
                    AND t.topic = presence_state.topic), 0),
        coalesce((SELECT jsonb_agg(pgpulse._presence_member(p) ORDER BY p.joined_at, p.member_id)
                  FROM pgpulse.presence AS p
                  WHERE p.tenant_id = presence_state.tenant_id
                    AND p.topic = presence_state.topic
                    AND p.expires_at > clock_timestamp()), '[]'::jsonb);
$$;

-- Join (or update one's info): returns the topic's state with the member in it.
-- A topic with max_members live members already refuses another.
CREATE FUNCTION pgpulse.presence_join(
    tenant_id text, topic text, member_id text, node_id text, user_id text, info jsonb,
    ttl_seconds double precision, max_members integer
) RETURNS TABLE (version bigint, members jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    v bigint;
    others integer;
    joined pgpulse.presence;
BEGIN
    v := pgpulse._presence_next(tenant_id, topic);
    SELECT count(*) INTO others FROM pgpulse.presence AS p
        WHERE p.tenant_id = tenant_id AND p.topic = topic AND p.member_id <> member_id
          AND p.expires_at > clock_timestamp();
    IF others >= max_members THEN
        RAISE EXCEPTION 'pgpulse: presence of topic % is full (% members)', topic, max_members
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    INSERT INTO pgpulse.presence AS p
            (tenant_id, topic, member_id, node_id, user_id, info, expires_at)
        VALUES (tenant_id, topic, member_id, node_id, user_id, info,
                clock_timestamp() + make_interval(secs => ttl_seconds))
        ON CONFLICT ON CONSTRAINT presence_pkey DO UPDATE
            SET node_id = excluded.node_id, user_id = excluded.user_id, info = excluded.info,
                expires_at = excluded.expires_at
        RETURNING p.* INTO joined;
    PERFORM pgpulse._presence_notify(tenant_id, topic, v, 'join',
                                     pgpulse._presence_member(joined));
    RETURN QUERY SELECT v, s.members FROM pgpulse.presence_state(tenant_id, topic) AS s;
END
$$;

-- Leave; with only_expired, only if the member's row has expired (the sweep).
-- True when the member was there.
CREATE FUNCTION pgpulse.presence_leave(
    tenant_id text, topic text, member_id text, only_expired boolean DEFAULT false
) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    v bigint;
    gone pgpulse.presence;
BEGIN
    v := pgpulse._presence_next(tenant_id, topic);
    DELETE FROM pgpulse.presence AS p
        WHERE p.tenant_id = tenant_id AND p.topic = topic AND p.member_id = member_id
          AND (NOT only_expired OR p.expires_at <= clock_timestamp())
        RETURNING p.* INTO gone;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pgpulse._presence_notify(tenant_id, topic, v, 'leave',
                                     pgpulse._presence_member(gone));
    RETURN true;
END
$$;
