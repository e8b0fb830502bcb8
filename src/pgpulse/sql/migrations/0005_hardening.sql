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

-- The payload limit, in the database: every event, whatever publishes it
-- (SQL, a trigger, the server), is refused past pgpulse.max_payload_bytes
-- of stored jsonb (a database setting: ALTER DATABASE ... SET
-- pgpulse.max_payload_bytes = ...). jsonb can take up to about six times
-- the bytes of compact JSON (arrays of small numbers), so the default of
-- 8 MiB lets through whatever the server's HTTP limit (1 MiB) accepted; a
-- server whose PGPULSE_MAX_PAYLOAD_BYTES is raised needs this raised too.
-- A BEFORE INSERT trigger rather than a change to publish(): every way
-- into pgpulse.events passes it, and pg_column_size costs nothing.
CREATE FUNCTION pgpulse.max_payload_bytes() RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('pgpulse.max_payload_bytes', true), '')::integer,
                    8388608);
$$;

CREATE FUNCTION pgpulse._check_event_size() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    size integer := pg_column_size(NEW.data);
    lim integer := pgpulse.max_payload_bytes();
BEGIN
    IF size > lim THEN
        RAISE EXCEPTION 'pgpulse: event data is % bytes; the limit is % bytes', size, lim
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'raise the database setting pgpulse.max_payload_bytes, or publish less';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_data_size BEFORE INSERT ON pgpulse.events
    FOR EACH ROW EXECUTE FUNCTION pgpulse._check_event_size();
-- publish() stages an event (version 4) and stores it at commit: checked
-- where it is staged too, so that the publish that is too big fails, not
-- the commit of its whole transaction.
CREATE TRIGGER pending_data_size BEFORE INSERT ON pgpulse.pending
    FOR EACH ROW EXECUTE FUNCTION pgpulse._check_event_size();

-- `pgpulse track` with options (a third trigger argument, JSON):
--   columns      only these columns of a row leave the database (allow-list)
--   exclude      these columns never do
--   user_column  the row's user: its events reach only that user's connections
--                (a row whose user is NULL or empty publishes nothing)
--   when         a condition on the row's columns; rows that fail it publish
--                nothing (evaluated on the new row for INSERT, the old row for
--                DELETE, both for UPDATE)
-- Without them every column of every row goes to the whole tenant.
--
-- An UPDATE whose row changes tenant, user, or passes/fails the condition
-- is a delete for the side that loses it and an insert for the side that
-- gains it, so nobody keeps seeing a row they should no longer see. A row
-- whose event would pass the payload limit publishes a compact marker
-- instead: {"table", "schema", "op", "too_large": true, "size", "key"}.

CREATE FUNCTION pgpulse._track_when(condition text, r anyelement) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    ok boolean;
BEGIN
    EXECUTE format('SELECT (%s) FROM (SELECT ($1).*) AS row', condition) INTO ok USING r;
    RETURN coalesce(ok, false);
END
$$;

CREATE FUNCTION pgpulse._track_columns(row_data jsonb, options jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN row_data IS NULL THEN NULL
        WHEN options ? 'columns' THEN
            coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(row_data) AS e
                      WHERE e.key IN (SELECT jsonb_array_elements_text(options -> 'columns'))),
                     '{}') - ARRAY(SELECT jsonb_array_elements_text(coalesce(options -> 'exclude', '[]')))
        ELSE row_data - ARRAY(SELECT jsonb_array_elements_text(coalesce(options -> 'exclude', '[]')))
    END;
$$;

CREATE FUNCTION pgpulse._track_event(
    relid oid, tenant text, user_id text, topic text, table_schema text, table_name text,
    op text, new_row jsonb, old_row jsonb, options jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    data jsonb;
    size integer;
    key jsonb;
BEGIN
    data := jsonb_build_object('table', table_name, 'schema', table_schema, 'op', op,
                               'new', pgpulse._track_columns(new_row, options),
                               'old', pgpulse._track_columns(old_row, options));
    size := pg_column_size(data);
    IF size > pgpulse.max_payload_bytes() THEN
        -- The primary key's allowed columns, so that a client can fetch the row itself.
        SELECT jsonb_object_agg(a.attname, coalesce(new_row, old_row) -> a.attname) INTO key
        FROM pg_index AS i
        JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = relid AND i.indisprimary;
        key := pgpulse._track_columns(key, options);
        IF pg_column_size(key) > 1024 THEN
            key := NULL;
        END IF;
        data := jsonb_build_object('table', table_name, 'schema', table_schema, 'op', op,
                                   'too_large', true, 'size', size, 'key', key);
    END IF;
    RETURN pgpulse.publish(tenant, topic, table_name || '.' || op, data, user_id);
END
$$;

CREATE OR REPLACE FUNCTION pgpulse.track_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_column text := TG_ARGV[0];
    topic text := TG_ARGV[1];
    options jsonb := CASE WHEN TG_NARGS > 2 THEN TG_ARGV[2]::jsonb ELSE '{}' END;
    user_column text := options ->> 'user_column';
    condition text := options ->> 'when';
    new_row jsonb;
    old_row jsonb;
    new_tenant text;
    old_tenant text;
    new_user text;
    old_user text;
    new_seen boolean := false;
    old_seen boolean := false;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_row := to_jsonb(NEW);
        new_tenant := nullif(new_row ->> tenant_column, '');
        new_user := CASE WHEN user_column IS NOT NULL THEN nullif(new_row ->> user_column, '') END;
        new_seen := new_tenant IS NOT NULL AND (user_column IS NULL OR new_user IS NOT NULL)
                    AND (condition IS NULL OR pgpulse._track_when(condition, NEW));
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_row := to_jsonb(OLD);
        old_tenant := nullif(old_row ->> tenant_column, '');
        old_user := CASE WHEN user_column IS NOT NULL THEN nullif(old_row ->> user_column, '') END;
        old_seen := old_tenant IS NOT NULL AND (user_column IS NULL OR old_user IS NOT NULL)
                    AND (condition IS NULL OR pgpulse._track_when(condition, OLD));
    END IF;

    IF TG_OP = 'UPDATE' AND new_seen AND old_seen
       AND new_tenant = old_tenant AND new_user IS NOT DISTINCT FROM old_user THEN
        PERFORM pgpulse._track_event(TG_RELID, new_tenant, new_user, topic, TG_TABLE_SCHEMA,
                                     TG_TABLE_NAME, 'update', new_row, old_row, options);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- The row leaves one audience and joins another: a delete and an insert,
        -- the two tenants' counters taken in tenant order (no deadlock).
        IF old_seen AND (NOT new_seen OR old_tenant <= new_tenant) THEN
            PERFORM pgpulse._track_event(TG_RELID, old_tenant, old_user, topic, TG_TABLE_SCHEMA,
                                         TG_TABLE_NAME, 'delete', NULL, old_row, options);
            old_seen := false;
        END IF;
        IF new_seen THEN
            PERFORM pgpulse._track_event(TG_RELID, new_tenant, new_user, topic, TG_TABLE_SCHEMA,
                                         TG_TABLE_NAME, 'insert', new_row, NULL, options);
        END IF;
        IF old_seen THEN
            PERFORM pgpulse._track_event(TG_RELID, old_tenant, old_user, topic, TG_TABLE_SCHEMA,
                                         TG_TABLE_NAME, 'delete', NULL, old_row, options);
        END IF;
        RETURN NULL;
    END IF;
    IF new_seen THEN
        PERFORM pgpulse._track_event(TG_RELID, new_tenant, new_user, topic, TG_TABLE_SCHEMA,
                                     TG_TABLE_NAME, 'insert', new_row, NULL, options);
    ELSIF old_seen THEN
        PERFORM pgpulse._track_event(TG_RELID, old_tenant, old_user, topic, TG_TABLE_SCHEMA,
                                     TG_TABLE_NAME, 'delete', NULL, old_row, options);
    END IF;
    RETURN NULL;
END
$$;

-- Privileges. Nothing of schema pgpulse is anyone's by default: functions
-- lose PostgreSQL's default EXECUTE for PUBLIC. A role that publishes (an
-- app's backend, the writers of tracked tables) is made a member of
-- pgpulse_publisher, which may call publish() and submit_job() and fire the
-- tracking trigger, and nothing else: those two (and the commit trigger) run as their owner
-- (SECURITY DEFINER, with a fixed search_path, so a caller's objects can
-- never stand in for pgpulse's), so publishers need no privilege on the
-- tables. pgpulse.disconnect stays the owner's (an operator's).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgpulse FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgpulse REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

ALTER FUNCTION pgpulse.publish(text, text, text, jsonb, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
-- publish() only stages the event (pgpulse.pending, version 4); the commit
-- trigger that numbers and stores it runs as whoever commits, so it runs as
-- its owner too: a publisher has no privilege on pgpulse.events or
-- pgpulse.tenants. Every name in both is schema-qualified, as the fixed
-- search_path needs.
ALTER FUNCTION pgpulse._commit_events()
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
-- The server's own group commit: not a publisher's (no EXECUTE for PUBLIC),
-- and, like the rest, blind to objects a caller's search_path would add.
ALTER FUNCTION pgpulse.publish_batch(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION pgpulse.submit_job(text, text, jsonb, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgpulse_publisher') THEN
        CREATE ROLE pgpulse_publisher NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by another database's migration
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'pgpulse: role pgpulse_publisher not created (this role lacks CREATEROLE); '
                     'publishers need EXECUTE on pgpulse.publish and USAGE on schema pgpulse';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgpulse_publisher') THEN
        GRANT USAGE ON SCHEMA pgpulse TO pgpulse_publisher;
        GRANT EXECUTE ON FUNCTION
            pgpulse.publish(text, text, text, jsonb, text),
            pgpulse.submit_job(text, text, jsonb, text),
            pgpulse.track_trigger(),
            pgpulse._track_when(text, anyelement),
            pgpulse._track_columns(jsonb, jsonb),
            pgpulse._track_event(oid, text, text, text, text, text, text, jsonb, jsonb, jsonb),
            pgpulse._track_publish(text, text, text, text, text, jsonb, jsonb),
            pgpulse.max_payload_bytes(),
            pgpulse._check_event_size()
            TO pgpulse_publisher;
    END IF;
END
$$;
