-- Facts pushed by upstream services, the threads built on them, messages, and each
-- participant's read horizon with its unread counter.

CREATE TABLE relations (
    relation_id BIGINT PRIMARY KEY,
    tutor_id    BIGINT NOT NULL,
    student_id  BIGINT NOT NULL,
    status      TEXT   NOT NULL CHECK (status IN ('PENDING', 'ACTIVE', 'ARCHIVED')),
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE contact_access (
    tutor_id   BIGINT NOT NULL,
    student_id BIGINT NOT NULL,
    state      TEXT   NOT NULL CHECK (state IN ('LOCKED', 'UNLOCKED', 'REVOKED')),
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tutor_id, student_id)
);

CREATE TABLE inquiries (
    inquiry_id BIGINT PRIMARY KEY,
    tutor_id   BIGINT NOT NULL,
    student_id BIGINT NOT NULL,
    status     TEXT   NOT NULL CHECK (status IN ('OPEN', 'ACCEPTED', 'DECLINED', 'CLOSED')),
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE threads (
    thread_id              BIGSERIAL PRIMARY KEY,
    kind                   TEXT   NOT NULL,
    -- One thread per relation and per inquiry: unique keys, so concurrency cannot break it.
    relation_id            BIGINT UNIQUE REFERENCES relations (relation_id),
    inquiry_id             BIGINT UNIQUE REFERENCES inquiries (inquiry_id),
    tutor_id               BIGINT NOT NULL,
    student_id             BIGINT NOT NULL,
    -- The seq of the newest message; the next message takes last_seq + 1 under this row's lock.
    last_seq               BIGINT NOT NULL DEFAULT 0,
    last_message_at        TIMESTAMPTZ,
    last_message_preview   TEXT   NOT NULL DEFAULT '',
    last_message_sender_id BIGINT NOT NULL DEFAULT 0,
    created_at             TIMESTAMPTZ NOT NULL,
    CONSTRAINT threads_kind_target CHECK (
        (kind = 'negotiation' AND inquiry_id IS NOT NULL AND relation_id IS NULL)
        OR (kind = 'contact' AND relation_id IS NOT NULL AND inquiry_id IS NULL)
    )
);
CREATE INDEX threads_tutor_id ON threads (tutor_id);
CREATE INDEX threads_student_id ON threads (student_id);

CREATE TABLE messages (
    message_id        BIGSERIAL PRIMARY KEY,
    thread_id         BIGINT NOT NULL REFERENCES threads (thread_id),
    seq               BIGINT NOT NULL,
    sender_id         BIGINT NOT NULL,
    body              TEXT   NOT NULL,
    -- NULL when the client sent no idempotency key (NULLs never collide).
    client_message_id TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    CONSTRAINT messages_thread_seq UNIQUE (thread_id, seq),
    CONSTRAINT messages_idempotency UNIQUE (thread_id, sender_id, client_message_id)
);

-- One row per side of a thread. unread_count is kept equal to
-- count(messages with seq > last_read_seq and sender <> user_id), in the same
-- transaction as every message insert and mark-read.
CREATE TABLE thread_participants (
    thread_id     BIGINT NOT NULL REFERENCES threads (thread_id),
    side          TEXT   NOT NULL CHECK (side IN ('tutor', 'student')),
    user_id       BIGINT NOT NULL,
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    unread_count  BIGINT NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    PRIMARY KEY (thread_id, side)
);
-- The unread summary reads only this partial index: a user's threads with unread > 0.
CREATE INDEX thread_participants_unread
    ON thread_participants (user_id, side) INCLUDE (unread_count)
    WHERE unread_count > 0;
