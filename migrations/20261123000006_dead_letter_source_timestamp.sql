-- A dead letter is stored once per message of the dead-letter topic. Its offset alone does not
-- name the message once the log has started over (a memory broker restarted, a topic created
-- again): a new message at an old offset would be taken for a redelivery and dropped. The
-- message's timestamp (-1 when it has none) tells the two apart.
ALTER TABLE dead_letters ADD COLUMN source_timestamp_ms bigint NOT NULL DEFAULT -1;
ALTER TABLE dead_letters
    DROP CONSTRAINT dead_letters_source_topic_source_partition_source_offset_key;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_source
    UNIQUE (source_topic, source_partition, source_offset, source_timestamp_ms);
