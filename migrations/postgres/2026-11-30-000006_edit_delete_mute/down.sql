DROP INDEX thread_participants_unread;
CREATE INDEX thread_participants_unread
    ON thread_participants (user_id, side, last_message_at DESC, thread_id DESC)
    INCLUDE (unread_count, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable,
             last_message_preview, last_message_sender_id)
    WHERE unread_count > 0;
ALTER TABLE thread_participants DROP COLUMN muted_until_ms;
ALTER TABLE threads DROP COLUMN last_visible_seq, DROP COLUMN revision;
ALTER TABLE messages DROP COLUMN edited_at, DROP COLUMN deleted_at;
