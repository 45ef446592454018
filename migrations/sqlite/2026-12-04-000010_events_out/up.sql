-- The log as an outbox (see the PostgreSQL migration of the same name). SQLite cannot
-- drop a NOT NULL, so the table is rebuilt with its new columns; rows written before
-- keep their ids.
CREATE TABLE events_new (
    event_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL,
    thread_id      BIGINT  NOT NULL,
    thread_version BIGINT,
    side           TEXT    CHECK (side IN ('tutor', 'student')),
    seq            BIGINT  NOT NULL DEFAULT 0,
    flag           BOOLEAN NOT NULL DEFAULT FALSE,
    contact_access TEXT,
    created_at     TEXT    NOT NULL,
    position       BIGINT,
    user_id        BIGINT,
    amount         BIGINT
);
INSERT INTO events_new (event_id, kind, thread_id, thread_version, side, seq, flag, contact_access, created_at)
SELECT event_id, kind, thread_id, thread_version, side, seq, flag, contact_access, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE UNIQUE INDEX events_thread_version ON events (thread_id, thread_version);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_unsequenced ON events (event_id) WHERE position IS NULL;
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE event_sequence (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_position   BIGINT NOT NULL DEFAULT 0,
    trimmed_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_sequence (id) VALUES (1);

CREATE TABLE event_cursors (
    sink       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE event_relay_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);
INSERT INTO event_relay_lease (id, holder, expires_ms) VALUES (1, '', 0);

ALTER TABLE thread_participants ADD COLUMN reminded_read_seq BIGINT;
