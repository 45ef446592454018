-- Retention trims the oldest positions first (the events_position index), so the log
-- needs no index of its own by time: one index entry less for every event written.
DROP INDEX events_created_at;
-- From here on SQLite's writes number their own events (steps::next_positions): the
-- rows logged before are numbered now, in id order (the one writer's commit order),
-- so none is numbered after a newer row of its thread.
UPDATE events SET position = numbered.position
FROM (
    SELECT event_id,
           (SELECT last_position FROM event_sequence WHERE id = 1)
             + row_number() OVER (ORDER BY event_id) AS position
    FROM events WHERE position IS NULL
) AS numbered
WHERE events.event_id = numbered.event_id;
UPDATE event_sequence SET last_position = (SELECT COALESCE(MAX(position), 0) FROM events)
WHERE id = 1;
