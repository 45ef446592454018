DROP INDEX thread_participants_unread;
ALTER TABLE thread_participants
    DROP COLUMN kind,
    DROP COLUMN relation_id,
    DROP COLUMN inquiry_id,
    DROP COLUMN tutor_id,
    DROP COLUMN student_id,
    DROP COLUMN is_writable,
    DROP COLUMN last_message_at,
    DROP COLUMN last_message_preview,
    DROP COLUMN last_message_sender_id;
CREATE INDEX thread_participants_unread
    ON thread_participants (user_id, side) INCLUDE (unread_count)
    WHERE unread_count > 0;
