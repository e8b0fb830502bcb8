-- pgpulse schema, version 2: the trigger behind `pgpulse track`.
--
-- One generic trigger function; each tracked table passes its tenant column
-- and topic as trigger arguments. It publishes in the writer's transaction,
-- so a rolled-back write emits nothing.

CREATE FUNCTION pgpulse.track_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant_column text := TG_ARGV[0];
    topic text := TG_ARGV[1];
    new_row jsonb;
    old_row jsonb;
    tenant text;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_row := to_jsonb(NEW);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_row := to_jsonb(OLD);
    END IF;
    tenant := coalesce(new_row, old_row) ->> tenant_column;
    IF tenant IS NULL OR tenant = '' THEN
        RETURN NULL;  -- rows without a tenant belong to nobody: nothing to publish
    END IF;
    PERFORM pgpulse.publish(
        tenant, topic, TG_TABLE_NAME || '.' || lower(TG_OP),
        jsonb_build_object('table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA,
                           'op', lower(TG_OP), 'new', new_row, 'old', old_row));
    -- An UPDATE that moves a row to another tenant tells the old tenant too.
    IF TG_OP = 'UPDATE' AND old_row ->> tenant_column IS DISTINCT FROM tenant
       AND coalesce(old_row ->> tenant_column, '') <> '' THEN
        PERFORM pgpulse.publish(
            old_row ->> tenant_column, topic, TG_TABLE_NAME || '.delete',
            jsonb_build_object('table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA,
                               'op', 'delete', 'new', NULL, 'old', old_row));
    END IF;
    RETURN NULL;
END
$$;
