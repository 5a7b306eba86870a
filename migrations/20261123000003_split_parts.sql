-- A sum_squares job split without a part count is split across the live workers when it is
-- handled, so a redelivered job may come back split differently. Parts are kept per split
-- (n, parts), and a job is assembled from exactly one split whose ranges cover 1..n once:
-- parts of two splits never mix into one answer.
ALTER TABLE compute_parts ADD COLUMN n bigint;
UPDATE compute_parts p SET n = m.n
FROM (SELECT job_id, parts, max(b) AS n FROM compute_parts GROUP BY job_id, parts) m
WHERE p.job_id = m.job_id AND p.parts = m.parts;
ALTER TABLE compute_parts ALTER COLUMN n SET NOT NULL;
ALTER TABLE compute_parts DROP CONSTRAINT compute_parts_pkey;
ALTER TABLE compute_parts ADD PRIMARY KEY (job_id, n, parts, part);
