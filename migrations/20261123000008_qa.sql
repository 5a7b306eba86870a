-- Question answering: a question's outcome is its job's result (kind 'qa'); this view names
-- its fields. Dead-lettered questions appear with status 'dead' and the reason in `error`;
-- those asked through `sluice qa ask` keep their question (the job's request) meanwhile.
CREATE VIEW qa_results AS
SELECT job_id                                         AS question_id,
       CASE WHEN status = 'done' THEN result->>'status' ELSE status END AS status,
       COALESCE(result->>'question', request->>'question') AS question,
       result->'reply'->>'answer'                     AS answer,
       COALESCE(result->>'expected', request->>'expected') AS expected,
       (result->>'score')::double precision           AS score,
       (result->>'asks')::integer                     AS asks,
       attempts,
       result->'reply'->>'provider'                   AS provider,
       result->'reply'->>'model'                      AS model,
       (result->'reply'->>'latency_ms')::bigint       AS latency_ms,
       (result->'reply'->>'prompt_tokens')::bigint    AS prompt_tokens,
       (result->'reply'->>'answer_tokens')::bigint    AS answer_tokens,
       (result->'reply'->>'reused')::boolean          AS reused,
       result->'reply'->>'worker'                     AS worker,
       COALESCE(result->>'run_id', request->>'run_id') AS run_id,
       error,
       created_at,
       finished_at,
       persisted_at
FROM jobs
WHERE kind = 'qa';

-- `sluice qa results --run-id`, and the traffic generator's progress.
CREATE INDEX jobs_qa_run ON jobs ((COALESCE(result->>'run_id', request->>'run_id')))
    WHERE kind = 'qa';
-- "Has this question a validated answer already?", asked by the LLM workers before calling
-- a provider and by `sluice traffic --skip-answered`. Hashed: a question may be long.
CREATE INDEX jobs_qa_validated ON jobs (md5(result->>'question'))
    WHERE kind = 'qa' AND result->>'status' = 'validated';
