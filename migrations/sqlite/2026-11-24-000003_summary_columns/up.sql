-- SQLite twin of migrations/postgres/…_summary_columns (SQLite has no INCLUDE: the
-- index orders the scan; the row holds the rest).
ALTER TABLE thread_participants ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_participants ADD COLUMN relation_id INTEGER;
ALTER TABLE thread_participants ADD COLUMN inquiry_id INTEGER;
ALTER TABLE thread_participants ADD COLUMN tutor_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE thread_participants ADD COLUMN student_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE thread_participants ADD COLUMN is_writable BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE thread_participants ADD COLUMN last_message_at TEXT;
ALTER TABLE thread_participants ADD COLUMN last_message_preview TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_participants ADD COLUMN last_message_sender_id INTEGER NOT NULL DEFAULT 0;

UPDATE thread_participants
SET kind = t.kind,
    relation_id = t.relation_id,
    inquiry_id = t.inquiry_id,
    tutor_id = t.tutor_id,
    student_id = t.student_id,
    is_writable = COALESCE(
        (SELECT r.status = 'ACTIVE' FROM relations r WHERE r.relation_id = t.relation_id),
        (SELECT i.status IN ('OPEN', 'ACCEPTED') FROM inquiries i WHERE i.inquiry_id = t.inquiry_id),
        FALSE),
    last_message_at = t.last_message_at,
    last_message_preview = t.last_message_preview,
    last_message_sender_id = t.last_message_sender_id
FROM threads t
WHERE t.thread_id = thread_participants.thread_id;

DROP INDEX thread_participants_unread;
CREATE INDEX thread_participants_unread
    ON thread_participants (user_id, side, last_message_at DESC, thread_id DESC)
    WHERE unread_count > 0;
