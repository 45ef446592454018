-- MarkRead, as ONE statement (one round trip); chatd runs this file as it is.
--
-- Under the thread's lock (so no message can be appended, edited or deleted meanwhile,
-- and the thread's log takes its next version) and the reader's row lock, moves the horizon as
-- rules::horizon_after_mark_read says (forward to the requested seq, clamped to the
-- last seq, never back), sets the unread count to what rules::counts_as_unread counts
-- after it, bumps the reader's summary version when that count changed
-- (rules::read_changes), and answers the reader's new total (rules::counts_in_total:
-- muted threads left out).
--
-- Reading up to the last seq leaves nothing unread and counts nothing. Reading less
-- counts the peer's messages after the new horizon, in the statement's snapshot: when
-- a write of the thread committed between that snapshot and the lock (the locked
-- revision is not the one the snapshot saw), the statement changes nothing and says
-- `stale`, and chatd runs it again right after taking the lock.
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:side AS text) AS side,
           CAST(:user_id AS bigint) AS user_id,
           CAST(:up_to_seq AS bigint) AS up_to_seq,
           CAST(:now_ms AS bigint) AS now_ms
),
t AS MATERIALIZED (
    SELECT thread_id, last_seq, kind, tutor_id, student_id, is_writable, revision FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR NO KEY UPDATE
),
seen AS (
    SELECT revision FROM threads WHERE thread_id = (SELECT thread_id FROM params)
),
cur AS MATERIALIZED (
    -- rules::thread_for: no row unless the reader is the participant on their side.
    SELECT p.last_read_seq, p.unread_count, p.muted_until_ms FROM thread_participants p, params
    WHERE p.thread_id = (SELECT thread_id FROM t) AND p.side = params.side
      AND p.user_id = params.user_id
    FOR NO KEY UPDATE OF p
),
h AS MATERIALIZED (
    -- rules::horizon_after_mark_read.
    SELECT GREATEST(cur.last_read_seq,
                    LEAST(COALESCE(params.up_to_seq, t.last_seq), t.last_seq)) AS horizon,
           cur.last_read_seq AS horizon_before, cur.unread_count AS unread_before,
           cur.muted_until_ms, t.last_seq, t.revision
    FROM t, cur, params
),
next AS MATERIALIZED (
    -- rules::counts_as_unread after the horizon: after it, from the peer, not deleted.
    -- Reading everything counts nothing, so only a partial read looks at the snapshot.
    SELECT h.horizon, h.horizon_before, h.unread_before, h.muted_until_ms,
           CASE WHEN h.horizon < h.last_seq THEN h.revision <> (SELECT revision FROM seen)
                ELSE FALSE END AS stale,
           CASE WHEN h.horizon >= h.last_seq THEN 0
                ELSE (SELECT count(*) FROM messages m
                      WHERE m.thread_id = params.thread_id AND m.seq > h.horizon
                        AND m.sender_id <> params.user_id AND m.deleted_at IS NULL)
           END AS unread
    FROM h, params
),
moved AS (
    UPDATE thread_participants p SET last_read_seq = next.horizon, unread_count = next.unread
    FROM next, params
    WHERE p.thread_id = params.thread_id AND p.side = params.side AND NOT next.stale
      AND (p.last_read_seq <> next.horizon OR p.unread_count <> next.unread)
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT params.user_id, params.side, 1 FROM next, params
    WHERE next.unread <> next.unread_before AND NOT next.stale  -- rules::read_changes
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING version
),
versioned AS (
    -- rules::read_logs: a horizon that moved is the thread's next change.
    UPDATE threads SET version = threads.version + 1
    FROM next, params
    WHERE threads.thread_id = params.thread_id AND NOT next.stale
      AND next.horizon <> next.horizon_before
    RETURNING threads.version
),
logged AS (
    INSERT INTO events (kind, thread_id, thread_version, side, seq, amount, created_at)
    SELECT 'chat.thread.read',
           params.thread_id, versioned.version, params.side, next.horizon, next.unread, now()
    FROM versioned, next, params
),
elsewhere AS (
    SELECT CAST(COALESCE(SUM(p.unread_count), 0) AS BIGINT) AS unread
    FROM thread_participants p, params
    WHERE p.user_id = params.user_id AND p.side = params.side AND p.unread_count > 0
      AND p.thread_id <> params.thread_id
      AND COALESCE(p.muted_until_ms, 0) <= params.now_ms  -- rules::counts_in_total
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable,
       next.horizon, next.unread,
       elsewhere.unread + CASE WHEN COALESCE(next.muted_until_ms, 0) > params.now_ms THEN 0
                               ELSE COALESCE(next.unread, 0) END AS total,
       EXISTS (SELECT 1 FROM bumped) AS changed,
       COALESCE(next.stale, FALSE) AS stale,
       (SELECT version FROM versioned) AS thread_version
FROM params CROSS JOIN elsewhere LEFT JOIN t ON TRUE LEFT JOIN next ON TRUE;
