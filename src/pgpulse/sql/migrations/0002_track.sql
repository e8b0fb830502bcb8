-- pgpulse schema, version 2: the trigger behind `pgpulse track`.
--
-- One generic trigger function; each tracked table passes its tenant column
-- and topic as trigger arguments. It publishes in the writer's transaction,
-- so a rolled-back write emits nothing.
--
-- A row that moves between tenants is a delete for the old tenant (old row)
-- and an insert for the new one (new row): each tenant sees only its own
-- side. The two counters are taken in tenant order, so two moves in opposite
-- directions cannot deadlock on them.

-- The event of one tracked write, as one tenant sees it.
CREATE FUNCTION pgpulse._track_publish(
    tenant text, topic text, table_schema text, table_name text, op text,
    new_row jsonb, old_row jsonb
) RETURNS bigint
LANGUAGE sql AS $$
    SELECT pgpulse.publish(
        tenant, topic, table_name || '.' || op,
        jsonb_build_object('table', table_name, 'schema', table_schema, 'op', op,
                           'new', new_row, 'old', old_row));
$$;

CREATE FUNCTION pgpulse.track_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_column text := TG_ARGV[0];
    topic text := TG_ARGV[1];
    new_row jsonb;
    old_row jsonb;
    new_tenant text;
    old_tenant text;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_row := to_jsonb(NEW);
        new_tenant := nullif(new_row ->> tenant_column, '');
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_row := to_jsonb(OLD);
        old_tenant := nullif(old_row ->> tenant_column, '');
    END IF;

    IF TG_OP = 'UPDATE' AND new_tenant IS DISTINCT FROM old_tenant THEN
        IF old_tenant IS NOT NULL AND (new_tenant IS NULL OR old_tenant < new_tenant) THEN
            PERFORM pgpulse._track_publish(
                old_tenant, topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', NULL, old_row);
            old_tenant := NULL;
        END IF;
        IF new_tenant IS NOT NULL THEN
            PERFORM pgpulse._track_publish(
                new_tenant, topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'insert', new_row, NULL);
        END IF;
        IF old_tenant IS NOT NULL THEN
            PERFORM pgpulse._track_publish(
                old_tenant, topic, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'delete', NULL, old_row);
        END IF;
        RETURN NULL;
    END IF;

    -- Rows without a tenant belong to nobody: nothing to publish.
    IF coalesce(new_tenant, old_tenant) IS NOT NULL THEN
        PERFORM pgpulse._track_publish(
            coalesce(new_tenant, old_tenant), topic, TG_TABLE_SCHEMA, TG_TABLE_NAME,
            lower(TG_OP), new_row, old_row);
    END IF;
    RETURN NULL;
END
$$;
