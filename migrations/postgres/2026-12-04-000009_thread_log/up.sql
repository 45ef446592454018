-- The log of every committed change of a thread, written in the same transaction as
-- the change: what an open chat window (WatchThread) replays and follows, and what the
-- services around chatd will read. Each thread counts its own changes: `version` is the
-- thread's newest, taken under the thread row's lock (the first lock of every write,
-- storage.rs), so a thread's versions commit in order, with no gaps.
--
-- A message event names its message by seq and carries no text: a reader joins the
-- message as it is now, so an edit, a deletion or an erasure never leaves an older body
-- behind in the log. A writability event keeps the facts the rules decide it from (the
-- thread's own writability and the tutor's contact access), so a reader tells each
-- side what the rules say for it at that version.
ALTER TABLE threads ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE events (
    event_id       BIGSERIAL PRIMARY KEY,
    kind           TEXT    NOT NULL,
    thread_id      BIGINT  NOT NULL,
    -- The thread's version after this change.
    thread_version BIGINT  NOT NULL,
    -- chat.thread.read and chat.thread.marked_unread: whose horizon moved.
    side           TEXT    CHECK (side IN ('tutor', 'student')),
    -- Message events: the message's seq; horizon events: the horizon.
    seq            BIGINT  NOT NULL DEFAULT 0,
    -- chat.message.deleted: removed by moderation; writability events: the thread's.
    flag           BOOLEAN NOT NULL DEFAULT FALSE,
    -- Writability events: the tutor's contact access then (NULL: none stored).
    contact_access TEXT,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX events_thread_version ON events (thread_id, thread_version);
