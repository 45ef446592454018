-- SQLite twin of migrations/postgres/…_edit_delete_mute: tombstones, the newest
-- visible message, mutes (Unix milliseconds; 9223372036854775807: until unmuted).
ALTER TABLE messages ADD COLUMN edited_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_at TEXT;
ALTER TABLE threads ADD COLUMN last_visible_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE threads ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
UPDATE threads SET last_visible_seq = last_seq WHERE last_seq > 0;
ALTER TABLE thread_participants ADD COLUMN muted_until_ms BIGINT;
