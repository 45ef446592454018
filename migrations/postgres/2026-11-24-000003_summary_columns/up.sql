-- Each participant row carries what its owner's unread summary shows, kept current in
-- the same transactions as the counters, so the summary is one range scan of a covering
-- partial index (a user's unread threads, newest first): no joins, no sort, and a
-- handful of adjacent index pages instead of a random page per thread and per fact.
ALTER TABLE thread_participants
    ADD COLUMN kind                   TEXT    NOT NULL DEFAULT '',
    ADD COLUMN relation_id            BIGINT,
    ADD COLUMN inquiry_id             BIGINT,
    ADD COLUMN tutor_id               BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN student_id             BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN is_writable            BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN last_message_at        TIMESTAMPTZ,
    ADD COLUMN last_message_preview   TEXT    NOT NULL DEFAULT '',
    ADD COLUMN last_message_sender_id BIGINT  NOT NULL DEFAULT 0;

UPDATE thread_participants p
SET kind = t.kind,
    relation_id = t.relation_id,
    inquiry_id = t.inquiry_id,
    tutor_id = t.tutor_id,
    student_id = t.student_id,
    is_writable = COALESCE(r.status = 'ACTIVE', i.status IN ('OPEN', 'ACCEPTED'), FALSE),
    last_message_at = t.last_message_at,
    last_message_preview = t.last_message_preview,
    last_message_sender_id = t.last_message_sender_id
FROM threads t
LEFT JOIN relations r ON r.relation_id = t.relation_id
LEFT JOIN inquiries i ON i.inquiry_id = t.inquiry_id
WHERE t.thread_id = p.thread_id;

DROP INDEX thread_participants_unread;
CREATE INDEX thread_participants_unread
    ON thread_participants (user_id, side, last_message_at DESC, thread_id DESC)
    INCLUDE (unread_count, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable,
             last_message_preview, last_message_sender_id)
    WHERE unread_count > 0;
