-- The log of every committed change of a thread (see the PostgreSQL migration of the
-- same name). AUTOINCREMENT: an event's id is never reused, even after the newest
-- events were deleted.
ALTER TABLE threads ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE events (
    event_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL,
    thread_id      BIGINT  NOT NULL,
    thread_version BIGINT  NOT NULL,
    side           TEXT    CHECK (side IN ('tutor', 'student')),
    seq            BIGINT  NOT NULL DEFAULT 0,
    flag           BOOLEAN NOT NULL DEFAULT FALSE,
    contact_access TEXT,
    created_at     TEXT    NOT NULL
);
CREATE UNIQUE INDEX events_thread_version ON events (thread_id, thread_version);
