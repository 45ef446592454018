-- MarkUnread, as ONE statement; chatd runs this file as it is.
--
-- Under the thread's lock (the log takes its next version there) and the reader's row lock: when rules::may_mark_unread
-- allows params.from_seq (a message of the thread, among its newest
-- rules::MARK_UNREAD_WINDOW, bound as a parameter), sets the horizon to rules::horizon_after_mark_unread
-- and the unread count to what rules::counts_as_unread counts after it (a bounded
-- recount: at most 100 messages), bumps the reader's summary version when that count
-- changed (rules::read_changes), and answers the reader's new total
-- (rules::counts_in_total). The count is of the statement's snapshot: when a write of
-- the thread committed between it and the lock, nothing changes and the statement
-- says `stale` (chatd runs it again under the lock; see mark_read.sql).
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:side AS text) AS side,
           CAST(:user_id AS bigint) AS user_id,
           CAST(:from_seq AS bigint) AS from_seq,
           CAST(:now_ms AS bigint) AS now_ms,
           CAST(:mark_unread_window AS bigint) AS mark_unread_window
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
next AS MATERIALIZED (
    SELECT params.from_seq - 1 AS horizon, cur.last_read_seq AS horizon_before,
           cur.unread_count AS unread_before, cur.muted_until_ms,
           t.revision <> (SELECT revision FROM seen) AS stale,
           (SELECT count(*) FROM messages m
            WHERE m.thread_id = params.thread_id AND m.seq >= params.from_seq
              AND m.sender_id <> params.user_id AND m.deleted_at IS NULL) AS unread
    FROM t, cur, params
    -- rules::may_mark_unread.
    WHERE params.from_seq <= t.last_seq
      AND params.from_seq > t.last_seq - params.mark_unread_window
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
    SELECT CASE WHEN next.horizon > next.horizon_before THEN 'chat.thread.read' ELSE 'chat.thread.marked_unread' END,
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
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable, t.last_seq,
       next.horizon, next.unread,
       elsewhere.unread + CASE WHEN COALESCE(next.muted_until_ms, 0) > params.now_ms THEN 0
                               ELSE COALESCE(next.unread, 0) END AS total,
       EXISTS (SELECT 1 FROM bumped) AS changed,
       COALESCE(next.stale, FALSE) AS stale,
       (SELECT version FROM versioned) AS thread_version
FROM params CROSS JOIN elsewhere LEFT JOIN t ON TRUE LEFT JOIN next ON TRUE;
