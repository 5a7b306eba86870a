-- The timestamp of the last message applied in each partition. On assignment the persister
-- reads the message just below its position again: a different timestamp (or none, the log
-- being shorter) means the log was replaced — a broker that lost its data, a topic deleted and
-- created again, another cluster — and the position no longer means anything there.
ALTER TABLE consumer_offsets ADD COLUMN last_timestamp_ms bigint;
