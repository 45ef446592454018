ALTER TABLE thread_participants DROP COLUMN muted_until_ms;
ALTER TABLE threads DROP COLUMN revision;
ALTER TABLE threads DROP COLUMN last_visible_seq;
ALTER TABLE messages DROP COLUMN deleted_at;
ALTER TABLE messages DROP COLUMN edited_at;
