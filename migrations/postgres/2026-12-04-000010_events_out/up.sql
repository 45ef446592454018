-- The log as an outbox for the services around chatd (EventService, NATS JetStream,
-- webhooks): every event gets a global `position` in commit order.
--
-- A sequence's value is taken at insert, not at commit, so two transactions can commit
-- their ids out of order; a consumer reading by id could see N+1 and later N. So the
-- writes leave `position` NULL and the sequencer (storage/writes/sequence_events.rs)
-- numbers committed rows afterwards, one sequencer at a time (it locks event_sequence's
-- row first, then reads with a fresh snapshot): every row it numbers is committed, and
-- a row committed later gets a later position. A thread's rows are inserted under its
-- lock, so their ids, and so their positions, follow the thread's versions.
ALTER TABLE events ADD COLUMN position BIGINT;
-- Events that are no change of a thread's window (created, muted, unmuted, erased,
-- reminders) take no version: NULL, which the window's reads never match.
ALTER TABLE events ALTER COLUMN thread_version DROP NOT NULL;
-- Whose (muted, unmuted, erased, reminder).
ALTER TABLE events ADD COLUMN user_id BIGINT;
-- A number the kind gives meaning to: unread after a read moved; messages erased;
-- unread at a reminder; the end of a mute (Unix ms; NULL: until unmuted).
ALTER TABLE events ADD COLUMN amount BIGINT;
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_unsequenced ON events (event_id) WHERE position IS NULL;
-- Retention trims by time.
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE event_sequence (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    -- The newest position given.
    last_position   BIGINT NOT NULL DEFAULT 0,
    -- Positions up to this one were trimmed by retention: resuming before is
    -- EVENTS_EXPIRED.
    trimmed_through BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_sequence (id) VALUES (1);

-- Where each sink (NATS, a webhook endpoint) is: the last position it acknowledged.
CREATE TABLE event_cursors (
    sink       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- Which replica relays events (sinks, reminders, retention) until when: one at a time.
CREATE TABLE event_relay_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);
INSERT INTO event_relay_lease (id, holder, expires_ms) VALUES (1, '', 0);

-- The horizon at which the participant was last reminded of unread messages: one
-- reminder per unread spell, a new spell when the horizon moves.
ALTER TABLE thread_participants ADD COLUMN reminded_read_seq BIGINT;
