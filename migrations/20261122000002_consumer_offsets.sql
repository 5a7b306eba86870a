-- Where the persister stands in each input partition, written in the same transaction as the
-- rows those messages became. This, not the offsets committed to Kafka, decides what has been
-- applied: a message below `next_offset` is skipped when it comes again (after a crash, a
-- rebalance, or lost group offsets). Kafka's committed offsets only say where to resume reading.
CREATE TABLE consumer_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
