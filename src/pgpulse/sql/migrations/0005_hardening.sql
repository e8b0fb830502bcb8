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
