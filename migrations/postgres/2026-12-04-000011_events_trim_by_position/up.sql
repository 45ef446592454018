-- Retention trims the oldest positions first (the events_position index), so the log
-- needs no index of its own by time: one index entry less for every event written.
DROP INDEX events_created_at;
