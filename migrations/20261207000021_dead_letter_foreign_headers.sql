-- What a replay sends with a dead message besides its key and payload: the message's own
-- headers (not sluice's; a trace id, say), in its order and exactly as it carried them, as
-- `[[name, value], ...]` with each value in hex, or null for a header without one. The
-- `headers` column shows every header as text, which cannot hold every value (bytes that are
-- not UTF-8, NUL). NULL: the letter did not keep them, and replay refuses it.
ALTER TABLE dead_letters ADD COLUMN foreign_headers jsonb;

-- Letters from before kept their headers as text only: they get them back from there, in name
-- order (the message's own order, and all but the last of headers sharing a name, were not
-- kept), unless a value was not text: it reads with U+FFFD (bytes EF BF BD) for what could not
-- be shown, so such a letter keeps none. Compared as bytes, whatever the database's encoding.
UPDATE dead_letters AS d
SET foreign_headers = (
    SELECT coalesce(
        jsonb_agg(
            jsonb_build_array(
                h.key,
                CASE WHEN jsonb_typeof(h.value) = 'string'
                     THEN encode(convert_to(h.value #>> '{}', 'UTF8'), 'hex') END)
            ORDER BY h.key),
        '[]'::jsonb)
    FROM jsonb_each(d.headers) AS h
    WHERE h.key NOT LIKE 'sluice-%')
WHERE jsonb_typeof(d.headers) = 'object'
  AND NOT EXISTS (
      SELECT 1 FROM jsonb_each_text(d.headers) AS h
      WHERE h.key NOT LIKE 'sluice-%'
        AND position('\xefbfbd'::bytea IN convert_to(h.value, 'UTF8')) > 0);
