-- pgpulse schema, version 4: a tenant's ids are taken at commit, not at publish.
--
-- Until version 3, pgpulse.publish() took the next id from its tenant's
-- counter row at once, and the row lock was held until the publishing
-- transaction ended: every other publisher of that tenant waited for it, and
-- two transactions that published to two tenants in opposite orders (or that
-- published and then locked the application's own rows) could deadlock.
--
-- Now publish() only stages the event (pgpulse.pending) and returns its key,
-- a number unique across the database. A deferred constraint trigger, fired
-- once per transaction as it commits, moves the transaction's staged events
-- into pgpulse.events: it takes every tenant's counter row in tenant order,
-- numbers the events, and sends one NOTIFY per tenant. So:
--
-- * a publisher never waits for another open transaction, only (at most) for
--   another's commit, and only when both publish to a tenant in common;
-- * the counter locks are taken in one order, by statements that run after
--   all of the application's own work: pgpulse can be part of no deadlock;
-- * ids stay per tenant, gap-free and in commit order (the counter row is
--   held from numbering to the end of the commit), so "id > last" readers and
--   resume points work exactly as before;
-- * an open transaction holds nothing back: it has no id yet, so readers
--   deliver everything committed after it without waiting.
--
-- The server's own batch path (publish_batch, below) is a transaction of its
-- own, which takes the counters directly and returns the delivered ids.
-- publish_many (version 1), which this replaces, stays for servers of an
-- earlier version while a rolling upgrade runs beside them.

-- Keys: what publish() returns, and what every frame of the event carries.
CREATE SEQUENCE pgpulse.event_keys;

-- Rows written before version 4 have no key: their id is what publish returned.
ALTER TABLE pgpulse.events ADD COLUMN key bigint;

-- Events staged by open transactions. Unlogged: a row lives only inside its
-- transaction (the commit trigger deletes it), so there is nothing to recover.
CREATE UNLOGGED TABLE pgpulse.pending (
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    key        bigint      NOT NULL DEFAULT nextval('pgpulse.event_keys'),
    tenant_id  text        NOT NULL,
    topic      text        NOT NULL,
    type       text        NOT NULL,
    data       jsonb       NOT NULL,
    user_id    text,
    -- true on the first row of a transaction (and after each flush): only
    -- that row queues the commit trigger, so a transaction flushes once.
    flush      boolean     NOT NULL DEFAULT false
);
CREATE INDEX pending_xid_idx ON pgpulse.pending (xid);

-- Move the committing transaction's staged events into pgpulse.events.
--
-- The tenant's counter row is the critical section: from its update to the
-- end of the commit, every other committer of that tenant waits. So all the
-- work that needs no id is done before it: the staged rows are read and
-- deleted, and the wake-ups are queued (NOTIFY is sent at commit anyway);
-- under the lock, only the counter update and the insert remain.
CREATE FUNCTION pgpulse._commit_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    staged pgpulse.pending[];
    tenant text;
    n bigint;
    top bigint;
BEGIN
    -- A publish after this point (another deferred trigger of the
    -- application's) stages a new flush, which PostgreSQL fires in turn.
    PERFORM set_config('pgpulse.staged', '', true);
    WITH moved AS (
        DELETE FROM pgpulse.pending AS p WHERE p.xid = pg_current_xact_id() RETURNING p.*
    )
    SELECT array_agg(m ORDER BY m.tenant_id, m.key) INTO staged FROM moved AS m;
    -- In tenant order: every committer locks counters in the same order.
    FOR tenant, n IN
        SELECT s.tenant_id, count(*) FROM unnest(staged) AS s
        GROUP BY s.tenant_id ORDER BY s.tenant_id
    LOOP
        PERFORM pg_notify('pgpulse', tenant);
        UPDATE pgpulse.tenants AS t SET last_id = t.last_id + n
            WHERE t.tenant_id = tenant RETURNING t.last_id INTO top;
        IF NOT FOUND THEN
            INSERT INTO pgpulse.tenants AS t (tenant_id, last_id) VALUES (tenant, n)
                ON CONFLICT ON CONSTRAINT tenants_pkey
                    DO UPDATE SET last_id = t.last_id + excluded.last_id
                RETURNING t.last_id INTO top;
        END IF;
        INSERT INTO pgpulse.events (tenant_id, id, key, topic, type, data, user_id)
            SELECT tenant, top - n + row_number() OVER (ORDER BY s.key), s.key, s.topic,
                   s.type, s.data, s.user_id
            FROM unnest(staged) AS s WHERE s.tenant_id = tenant;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER commit_events AFTER INSERT ON pgpulse.pending
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.flush)
    EXECUTE FUNCTION pgpulse._commit_events();

-- Publish one event inside the caller's transaction; returns its key. The
-- event gets its id, and is delivered, when (and only if) the caller commits.
CREATE OR REPLACE FUNCTION pgpulse.publish(
    tenant_id text, topic text, type text, data jsonb, user_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    event_key bigint;
    first boolean;
BEGIN
    -- One expression on the common path; the helper names the culprit otherwise.
    IF (length(tenant_id) BETWEEN 1 AND 200 AND length(topic) BETWEEN 1 AND 200
        AND length(type) BETWEEN 1 AND 200
        AND (user_id IS NULL OR length(user_id) BETWEEN 1 AND 200)) IS NOT TRUE THEN
        PERFORM pgpulse._check_name('tenant_id', tenant_id);
        PERFORM pgpulse._check_name('topic', topic);
        PERFORM pgpulse._check_name('type', type);
        PERFORM pgpulse._check_name('user_id', user_id);
    END IF;
    IF data IS NULL THEN
        RAISE EXCEPTION 'pgpulse: data must not be NULL (use ''{}''::jsonb)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Transaction-local, and undone with a rolled-back savepoint together with
    -- the row that set it: exactly one live staged row of a transaction flushes.
    first := coalesce(current_setting('pgpulse.staged', true), '') <> 'on';
    IF first THEN
        PERFORM set_config('pgpulse.staged', 'on', true);
    END IF;
    INSERT INTO pgpulse.pending (tenant_id, topic, type, data, user_id, flush)
        VALUES (tenant_id, topic, type, data, user_id, first)
        RETURNING key INTO event_key;
    RETURN event_key;
END
$$;

-- The server's group commit: a batch of events, and of the seed's
-- notifications (an item with "message" stores a notifications row and
-- publishes its event), in one statement of a transaction of its own.
-- Returns, in input order, each item's event id and key, and its
-- notification id (NULL for plain events). A JSON null "data" is stored as
-- JSON null.
CREATE FUNCTION pgpulse.publish_batch(batch jsonb)
RETURNS TABLE (event_id bigint, event_key bigint, notification_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT b.ord,
               b.item ->> 'tenant_id' AS tenant_id,
               coalesce(b.item ->> 'topic', 'notifications') AS topic,
               coalesce(b.item ->> 'type', 'notification') AS type,
               b.item -> 'data' AS data,
               b.item ->> 'user_id' AS user_id,
               b.item ->> 'message' AS message,
               nextval('pgpulse.event_keys') AS key,
               CASE WHEN b.item ? 'message'
                    THEN nextval(pg_get_serial_sequence('pgpulse.notifications', 'id'))
               END AS notification_id
        FROM jsonb_array_elements(batch) WITH ORDINALITY AS b(item, ord)
    ), stored AS (
        INSERT INTO pgpulse.notifications (id, tenant_id, message)
            OVERRIDING SYSTEM VALUE
            SELECT i.notification_id, i.tenant_id, i.message FROM input AS i
            WHERE i.notification_id IS NOT NULL
    ), counts AS (
        SELECT i.tenant_id, count(*)::bigint AS n FROM input AS i GROUP BY i.tenant_id
    ), bumped AS (
        -- In tenant order, as the commit trigger does: no deadlock between the two.
        INSERT INTO pgpulse.tenants AS tn (tenant_id, last_id)
            SELECT c.tenant_id, c.n FROM counts AS c ORDER BY c.tenant_id
            ON CONFLICT ON CONSTRAINT tenants_pkey
                DO UPDATE SET last_id = tn.last_id + excluded.last_id
            RETURNING tn.tenant_id, tn.last_id
    ), numbered AS MATERIALIZED (
        SELECT i.*,
               b.last_id - c.n + row_number() OVER (PARTITION BY i.tenant_id ORDER BY i.ord)
                   AS id
        FROM input AS i JOIN counts AS c USING (tenant_id) JOIN bumped AS b USING (tenant_id)
    ), inserted AS (
        INSERT INTO pgpulse.events (tenant_id, id, key, topic, type, data, user_id)
            SELECT n.tenant_id, n.id, n.key, n.topic, n.type,
                   CASE WHEN n.notification_id IS NULL THEN coalesce(n.data, 'null')
                        ELSE jsonb_build_object('message', n.message,
                                                'notification_id', n.notification_id)
                   END,
                   n.user_id
            FROM numbered AS n
    )
    SELECT n.id, n.key, n.notification_id FROM numbered AS n ORDER BY n.ord;

    PERFORM pg_notify('pgpulse', t.tenant_id)
    FROM (SELECT DISTINCT b.item ->> 'tenant_id' AS tenant_id
          FROM jsonb_array_elements(batch) AS b(item)) AS t;
END
$$;
