-- Edit and delete (tombstones keep seq, sender and created_at), mute per participant,
-- and what writes need to keep counters and previews exact when messages go away.

ALTER TABLE messages
    ADD COLUMN edited_at  TIMESTAMPTZ,
    -- Set once: a deleted message is a tombstone, body '' (its key is kept, so a retry
    -- of the original send answers the tombstone; EraseUser wipes keys too).
    ADD COLUMN deleted_at TIMESTAMPTZ;

ALTER TABLE threads
    -- The seq of the newest message not deleted (0: none): what previews show, and what
    -- a delete falls back from.
    ADD COLUMN last_visible_seq BIGINT NOT NULL DEFAULT 0,
    -- Bumped by every write that changes the thread's messages. A one-statement write
    -- that must count messages compares the revision it locked with the one its
    -- snapshot saw, and is retried under the lock when they differ.
    ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

UPDATE threads SET last_visible_seq = last_seq WHERE last_seq > 0;

-- Unix milliseconds until which the participant muted the thread (NULL: not muted;
-- 9223372036854775807: until unmuted). Milliseconds compare the same on both backends.
ALTER TABLE thread_participants ADD COLUMN muted_until_ms BIGINT;

-- The unread summary stays one index-only range scan: the mute joins the covered columns.
DROP INDEX thread_participants_unread;
CREATE INDEX thread_participants_unread
    ON thread_participants (user_id, side, last_message_at DESC, thread_id DESC)
    INCLUDE (unread_count, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable,
             last_message_preview, last_message_sender_id, muted_until_ms)
    WHERE unread_count > 0;
