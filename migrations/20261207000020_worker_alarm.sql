-- What a heartbeat says of a stage's dead letters: how many so far, and, while more than
-- DEAD_LETTER_MAX_SHARE of its recent messages were dead-lettered, why (`sluice health` fails).
ALTER TABLE workers
    ADD COLUMN dead_lettered bigint NOT NULL DEFAULT 0,
    ADD COLUMN alarm         text;
