-- The inbox (ListThreads): every thread of a participant, newest last message first,
-- a thread with no message by when it was created. The participant row keeps its
-- thread's creation time so that order is one expression over one row, and a page is
-- one backward range scan of this index from the page token's position.
ALTER TABLE thread_participants ADD COLUMN thread_created_at TIMESTAMPTZ;
UPDATE thread_participants p SET thread_created_at = t.created_at
    FROM threads t WHERE t.thread_id = p.thread_id;
ALTER TABLE thread_participants ALTER COLUMN thread_created_at SET NOT NULL;
CREATE INDEX thread_participants_inbox
    ON thread_participants (user_id, side, (COALESCE(last_message_at, thread_created_at)) DESC,
                            thread_id DESC);
