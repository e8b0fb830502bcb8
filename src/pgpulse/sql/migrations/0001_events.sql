-- pgpulse schema, version 1: tenants, events, notifications and publish().
--
-- Ordering: each tenant has one counter row. pgpulse.publish() takes the next
-- id from it with an UPDATE, which holds the row lock until the publishing
-- transaction ends. A second publisher of the same tenant waits for that lock,
-- so ids are handed out in commit order, per tenant, with no gaps: an aborted
-- transaction rolls its increment back. Readers can therefore hand out
-- "id > last" safely, and a missing id can only mean "pruned". Publishers of
-- other tenants never touch this row and never wait.

CREATE TABLE pgpulse.tenants (
    tenant_id text PRIMARY KEY,
    last_id   bigint NOT NULL CHECK (last_id >= 0)
) WITH (fillfactor = 50);

CREATE TABLE pgpulse.events (
    tenant_id  text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 200),
    id         bigint      NOT NULL,
    topic      text        NOT NULL CHECK (length(topic) BETWEEN 1 AND 200),
    type       text        NOT NULL CHECK (length(type) BETWEEN 1 AND 200),
    data       jsonb       NOT NULL,
    user_id    text                 CHECK (length(user_id) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, id)
);

-- Retention by age scans this index; it is in id order per tenant as well,
-- because created_at is taken under the tenant's counter lock.
CREATE INDEX events_created_at_idx ON pgpulse.events (created_at);

-- The seed's notifications: a message per row, and an event per message.
CREATE TABLE pgpulse.notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 200),
    message    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_tenant_id_idx ON pgpulse.notifications (tenant_id, id DESC);

-- Refuse a name clearly, before any constraint names a column.
CREATE FUNCTION pgpulse._check_name(what text, value text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR length(value) = 0 OR length(value) > 200 THEN
        RAISE EXCEPTION 'pgpulse: % must be 1 to 200 characters, got %',
            what, coalesce(length(value)::text || ' characters', 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Publish one event inside the caller's transaction; returns its id.
-- NOTIFY carries only the tenant id: listeners read the event from the table,
-- so data is not limited by NOTIFY's 8000 bytes, and a transaction that
-- publishes many events of one tenant sends one wake-up (NOTIFY folds
-- identical payloads of a transaction into one).
CREATE FUNCTION pgpulse.publish(
    tenant_id text, topic text, type text, data jsonb, user_id text DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    event_id bigint;
BEGIN
    PERFORM pgpulse._check_name('tenant_id', tenant_id);
    PERFORM pgpulse._check_name('topic', topic);
    PERFORM pgpulse._check_name('type', type);
    IF user_id IS NOT NULL THEN
        PERFORM pgpulse._check_name('user_id', user_id);
    END IF;
    IF data IS NULL THEN
        RAISE EXCEPTION 'pgpulse: data must not be NULL (use ''{}''::jsonb)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    UPDATE pgpulse.tenants AS t SET last_id = t.last_id + 1
        WHERE t.tenant_id = publish.tenant_id
        RETURNING t.last_id INTO event_id;
    IF NOT FOUND THEN
        INSERT INTO pgpulse.tenants AS t (tenant_id, last_id) VALUES (publish.tenant_id, 1)
            ON CONFLICT ON CONSTRAINT tenants_pkey DO UPDATE SET last_id = t.last_id + 1
            RETURNING t.last_id INTO event_id;
    END IF;

    INSERT INTO pgpulse.events (tenant_id, id, topic, type, data, user_id)
        VALUES (publish.tenant_id, event_id, publish.topic, publish.type, publish.data,
                publish.user_id);
    PERFORM pg_notify('pgpulse', publish.tenant_id);
    RETURN event_id;
END
$$;

-- Publish many events in one statement; returns their ids in input order.
-- The server groups HTTP publishes through this: one transaction, one counter
-- update per tenant (taken in tenant order, so two batches cannot deadlock)
-- and one NOTIFY per tenant, because NOTIFY serialises commits cluster-wide.
CREATE FUNCTION pgpulse.publish_many(
    tenant_ids text[], topics text[], types text[], datas jsonb[], user_ids text[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    t text;
BEGIN
    IF cardinality(tenant_ids) IS DISTINCT FROM cardinality(topics)
       OR cardinality(tenant_ids) IS DISTINCT FROM cardinality(types)
       OR cardinality(tenant_ids) IS DISTINCT FROM cardinality(datas)
       OR cardinality(tenant_ids) IS DISTINCT FROM cardinality(user_ids) THEN
        RAISE EXCEPTION 'pgpulse: publish_many arrays must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    WITH input AS (
        SELECT u.* FROM unnest(tenant_ids, topics, types, datas, user_ids)
            WITH ORDINALITY AS u(tenant_id, topic, type, data, user_id, ord)
    ), counts AS (
        SELECT i.tenant_id, count(*)::bigint AS n FROM input i GROUP BY i.tenant_id
    ), bumped AS (
        INSERT INTO pgpulse.tenants AS tn (tenant_id, last_id)
            SELECT c.tenant_id, c.n FROM counts c ORDER BY c.tenant_id
            ON CONFLICT ON CONSTRAINT tenants_pkey
                DO UPDATE SET last_id = tn.last_id + excluded.last_id
            RETURNING tn.tenant_id, tn.last_id
    ), numbered AS (
        SELECT i.*, b.last_id - c.n
               + row_number() OVER (PARTITION BY i.tenant_id ORDER BY i.ord) AS id
        FROM input i JOIN counts c USING (tenant_id) JOIN bumped b USING (tenant_id)
    ), inserted AS (
        INSERT INTO pgpulse.events (tenant_id, id, topic, type, data, user_id)
            SELECT n.tenant_id, n.id, n.topic, n.type, n.data, n.user_id FROM numbered n
            RETURNING 1
    )
    SELECT array_agg(n.id ORDER BY n.ord) INTO ids FROM numbered n;

    FOR t IN SELECT DISTINCT u.tenant_id FROM unnest(tenant_ids) AS u(tenant_id) LOOP
        PERFORM pg_notify('pgpulse', t);
    END LOOP;
    RETURN coalesce(ids, '{}');
END
$$;
