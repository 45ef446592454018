DROP INDEX thread_participants_inbox;
ALTER TABLE thread_participants DROP COLUMN thread_created_at;
