-- pgpulse schema, version 6: the node registry the console reads.
--
-- Every serving process (`pgpulse serve`, each of its workers) and every job
-- worker (`pgpulse worker`) keeps one row here: it inserts it at start,
-- rewrites heartbeat_at and stats every heartbeat_interval seconds, and
-- deletes it when it stops cleanly. A process that dies leaves its row: the
-- console shows it as down once its heartbeat is five intervals old, and any
-- live process deletes it after ten minutes. Nothing here is on the path of
-- an event; losing the table loses only the console's view.

CREATE TABLE pgpulse.nodes (
    id                 text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    kind               text        NOT NULL CHECK (kind IN ('server', 'worker')),
    host               text        NOT NULL,
    pid                integer     NOT NULL,
    started_at         timestamptz NOT NULL,
    heartbeat_at       timestamptz NOT NULL,
    heartbeat_interval double precision NOT NULL CHECK (heartbeat_interval > 0),
    stats              jsonb       NOT NULL DEFAULT '{}'
) WITH (fillfactor = 50);  -- rewritten every heartbeat: leave room for HOT updates
