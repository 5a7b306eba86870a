-- sluice's results store. The persister applies this at start-up.

-- One row per job: pending (published through `sluice`), done (a result, which may itself be
-- an error answer such as division by zero) or dead (dead-lettered).
CREATE TABLE jobs (
    job_id       uuid PRIMARY KEY,
    kind         text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('pending', 'done', 'dead')),
    request      jsonb,
    result       jsonb,
    error        text,
    worker       text,
    attempts     integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    persisted_at timestamptz NOT NULL DEFAULT now()
);

-- Ranges of split sum_squares jobs; the job is assembled once all of its parts are here.
CREATE TABLE compute_parts (
    job_id       uuid        NOT NULL,
    part         integer     NOT NULL,
    parts        integer     NOT NULL CHECK (parts > 0),
    a            bigint      NOT NULL,
    b            bigint      NOT NULL,
    result       numeric     NOT NULL,
    worker       text        NOT NULL,
    attempts     integer     NOT NULL,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    persisted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, part)
);

-- Every message that reached the dead-letter topic, with why and where it came from.
CREATE TABLE dead_letters (
    id                 bigserial PRIMARY KEY,
    job_id             uuid,
    source_topic       text        NOT NULL,
    source_partition   integer     NOT NULL,
    source_offset      bigint      NOT NULL,
    original_topic     text,
    original_partition integer,
    original_offset    bigint,
    attempts           integer     NOT NULL,
    error_class        text        NOT NULL,
    reason             text        NOT NULL,
    first_failure_at   timestamptz,
    message_key        bytea,
    payload            bytea       NOT NULL,
    headers            jsonb       NOT NULL,
    dead_at            timestamptz NOT NULL DEFAULT now(),
    replayed_at        timestamptz,
    UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX dead_letters_job ON dead_letters (job_id);

-- The latest heartbeat of every worker instance.
CREATE TABLE workers (
    instance_id text PRIMARY KEY,
    role        text        NOT NULL,
    host        text        NOT NULL,
    state       text        NOT NULL,
    in_flight   bigint      NOT NULL,
    processed   bigint      NOT NULL,
    version     text        NOT NULL,
    last_seen   timestamptz NOT NULL
);
