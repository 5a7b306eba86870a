-- Machine learning: the model registry, and a view of the prediction requests' answers.

-- Every trained model version. A training job stores one version (its job id is unique), so a
-- job delivered twice gets the version it got the first time; versions of a name count up from
-- 1 under an advisory lock on the name.
CREATE TABLE ml_models (
    name         text        NOT NULL,
    version      integer     NOT NULL CHECK (version > 0),
    job_id       uuid        NOT NULL UNIQUE,
    algorithm    text        NOT NULL,
    task         text        NOT NULL CHECK (task IN ('classification', 'regression')),
    -- The feature schema as a user reads it; the artifact holds the fitted preprocessing.
    features     jsonb       NOT NULL,
    params       jsonb       NOT NULL,
    metric       jsonb       NOT NULL,
    leaderboard  jsonb,
    rows         bigint      NOT NULL,
    training_ms  bigint      NOT NULL,
    artifact     bytea       NOT NULL,
    worker       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- Prediction requests and their answers (a failed one has its error).
CREATE VIEW ml_predictions AS
SELECT job_id,
       status,
       result->>'model'                AS model,
       (result->>'version')::integer    AS version,
       result->'predictions'           AS predictions,
       error,
       worker,
       created_at,
       finished_at,
       persisted_at
FROM jobs
WHERE kind = 'ml.predict';
