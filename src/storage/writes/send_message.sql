-- SendMessage, as ONE statement (one round trip). chatd runs this file as it is
-- (send_message.rs binds its named parameters); tests/bench/pgbench.sh runs it with
-- pgbench, the write's ceiling.
--
-- Locks the thread row (which orders every write of the thread), reads the tutor's
-- contact access under a share lock when the rules need it, and appends only when the
-- caller is the thread's participant on params.side, the thread is writable and contact
-- access allows it (rules::contact_allowed; params.unlocking lists the states
-- ContactAccessState::lets_tutor_contact allows).
-- A key seen before returns the first message (rules::send_decision: the replay comes
-- before writability); a concurrent retry that commits first makes the insert do
-- nothing (the unique key), and chatd reads the winner's message. The message answered
-- is returned as `messages.*`, so a new column of messages needs no change here.
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:side AS text) AS side,
           CAST(:sender_id AS bigint) AS sender_id,
           CAST(:body AS text) AS body,
           CAST(:preview AS text) AS preview,
           CAST(:client_message_id AS text) AS client_message_id,
           CAST(:unlocking AS text[]) AS unlocking
),
t AS MATERIALIZED (
    SELECT thread_id, last_seq, kind, tutor_id, student_id, is_writable FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR NO KEY UPDATE
),
access AS MATERIALIZED (
    SELECT ca.state FROM contact_access ca, params
    WHERE ca.tutor_id = (SELECT tutor_id FROM t) AND ca.student_id = (SELECT student_id FROM t)
      AND params.side = 'tutor' AND (SELECT kind FROM t) = 'contact'
    FOR SHARE OF ca
),
prior AS MATERIALIZED (
    -- A retry of this key: the first message, as it is now (edited, or a tombstone).
    SELECT m.* FROM messages m, params
    WHERE m.thread_id = params.thread_id AND m.sender_id = params.sender_id
      AND m.client_message_id = params.client_message_id
),
allowed AS MATERIALIZED (
    SELECT t.thread_id, t.last_seq FROM t, params
    -- rules::thread_for: the sender is the thread's participant on their side.
    WHERE (CASE WHEN params.side = 'tutor' THEN t.tutor_id ELSE t.student_id END) = params.sender_id
      -- A key seen before answers the first message instead (the domain reads prior).
      AND NOT EXISTS (SELECT 1 FROM prior)
      -- rules::may_write: writable, and a tutor of a contact thread has contact access
      -- (rules::needs_contact_access, rules::contact_allowed).
      AND t.is_writable
      AND (params.side <> 'tutor' OR t.kind <> 'contact'
           OR EXISTS (SELECT 1 FROM access WHERE access.state = ANY(params.unlocking)))
),
parts AS MATERIALIZED (
    -- The lock order (storage.rs): both participant rows, in side order, before any
    -- summary version. `changed` reads this, so it runs before `bumped`; `counted`
    -- (which PostgreSQL runs last) then updates rows already locked.
    SELECT p.side, p.unread_count FROM thread_participants p
    WHERE p.thread_id = (SELECT thread_id FROM allowed)
    ORDER BY p.side
    FOR NO KEY UPDATE
),
sender AS (
    SELECT parts.unread_count FROM parts, params WHERE parts.side = params.side
),
m AS (
    INSERT INTO messages (thread_id, seq, sender_id, body, client_message_id, created_at)
    SELECT allowed.thread_id, allowed.last_seq + 1, params.sender_id, params.body,
           params.client_message_id, now()
    FROM allowed, params
    ON CONFLICT (thread_id, sender_id, client_message_id) DO NOTHING
    RETURNING *
),
moved AS (
    -- The new message is the newest not deleted (rules::last_visible). The thread's log
    -- takes two versions (rules::SEND_LOGS).
    UPDATE threads SET last_seq = m.seq, last_visible_seq = m.seq, revision = threads.revision + 1,
        last_message_at = m.created_at,
        last_message_preview = params.preview, last_message_sender_id = params.sender_id,
        version = threads.version + 2
    FROM m, params
    WHERE threads.thread_id = m.thread_id
    RETURNING threads.version
),
logged AS (
    -- rules::SEND_LOGS: the message, then its sender's horizon moving to it.
    INSERT INTO events (kind, thread_id, thread_version, side, seq, amount, created_at)
    SELECT 'chat.message.created', m.thread_id, moved.version - 1, NULL, m.seq, NULL, m.created_at
    FROM m, moved
    UNION ALL
    SELECT 'chat.thread.read', m.thread_id, moved.version, params.side, m.seq, 0, m.created_at
    FROM m, moved, params
),
counted AS (
    -- rules::horizon_after_send for the sender, one more unread message for the peer.
    UPDATE thread_participants p SET
        last_read_seq = CASE WHEN p.side = params.side THEN m.seq ELSE p.last_read_seq END,
        unread_count = CASE WHEN p.side = params.side THEN 0 ELSE p.unread_count + 1 END,
        last_message_at = m.created_at, last_message_preview = params.preview,
        last_message_sender_id = params.sender_id
    FROM m CROSS JOIN sender CROSS JOIN params
    WHERE p.thread_id = m.thread_id
),
changed AS (
    -- rules::send_changes: the peer's summary always, the sender's when they had unread
    -- messages there (rules::in_summary).
    SELECT CASE WHEN params.side = 'tutor' THEN t.student_id ELSE t.tutor_id END AS user_id,
           CASE WHEN params.side = 'tutor' THEN 'student' ELSE 'tutor' END AS side
    FROM t, m, params
    WHERE EXISTS (SELECT 1 FROM parts)
    UNION ALL
    SELECT params.sender_id, params.side FROM t, m, sender, params
    WHERE sender.unread_count > 0
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT user_id, side, 1 FROM changed ORDER BY user_id, side = 'student'
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING user_id, side
),
answered AS (
    -- The message this call answers: the new one, or the first one of its key.
    SELECT * FROM m UNION ALL SELECT * FROM prior
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable, (SELECT state FROM access) AS contact_access,
       EXISTS (SELECT 1 FROM prior) AS key_seen_before,
       EXISTS (SELECT 1 FROM m) AS appended,
       (SELECT COALESCE(array_agg(user_id), '{}') FROM bumped) AS changed_users,
       (SELECT COALESCE(array_agg(side), '{}') FROM bumped) AS changed_sides,
       (SELECT version FROM moved) AS thread_version,
       answered.*
FROM params LEFT JOIN t ON TRUE LEFT JOIN answered ON TRUE;
