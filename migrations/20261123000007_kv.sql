-- The key-value store's materialized view, written by the persister from the KV topic.
--
-- A key's version counts its changes: 1 for the first put, and one more for every put or
-- delete after it. A delete keeps the key's row with no value (a tombstone), so a later put
-- continues the count: a compare-and-set made before the delete can never match after it.
CREATE TABLE kv_entries (
    key        text PRIMARY KEY,
    value      jsonb,
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70); -- room on each page to update a key in place (a HOT update)

-- The keys that exist, with their values: what `sluice kv get` and `kv list` read.
CREATE VIEW kv AS
    SELECT key, value, version, updated_at FROM kv_entries WHERE value IS NOT NULL;

-- A process may run several stages (the persister runs its own and the KV applier's), each
-- with its heartbeat: a worker is an instance in a role.
ALTER TABLE workers DROP CONSTRAINT workers_pkey;
ALTER TABLE workers ADD PRIMARY KEY (instance_id, role);
