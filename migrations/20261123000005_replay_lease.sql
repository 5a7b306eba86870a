-- A replay claims a dead letter before publishing it and marks it replayed only once the broker
-- acknowledged, so a run that dies in between loses nothing: its claim, older than the lease,
-- is taken over by the next replay. NULL: not claimed (or the claim ended).
ALTER TABLE dead_letters ADD COLUMN replay_claimed_at timestamptz;
-- Finding the other letters of the same message (every claim does) without reading them all.
CREATE INDEX dead_letters_original
    ON dead_letters (original_topic, original_partition, original_offset);
