-- MarkRead, as ONE statement (one round trip); chatd runs this file as it is.
--
-- Under a share lock on the thread (so no message can be appended meanwhile) and the
-- reader's row lock, moves the horizon as rules::horizon_after_mark_read says (forward
-- to the requested seq, clamped to the last seq, never back), sets the unread count to
-- rules::unread_at, bumps the reader's summary version when that count changed
-- (rules::read_changes), and answers the reader's new total.
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:side AS text) AS side,
           CAST(:user_id AS bigint) AS user_id,
           CAST(:up_to_seq AS bigint) AS up_to_seq
),
t AS MATERIALIZED (
    SELECT thread_id, last_seq, kind, tutor_id, student_id, is_writable FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR SHARE
),
cur AS MATERIALIZED (
    -- rules::thread_for: no row unless the reader is the participant on their side.
    SELECT p.last_read_seq, p.unread_count FROM thread_participants p, params
    WHERE p.thread_id = (SELECT thread_id FROM t) AND p.side = params.side
      AND p.user_id = params.user_id
    FOR NO KEY UPDATE OF p
),
next AS MATERIALIZED (
    -- rules::horizon_after_mark_read (h.horizon) and rules::unread_at (unread).
    SELECT horizon, GREATEST(t.last_seq - horizon, 0) AS unread, cur.unread_count AS unread_before
    FROM t, cur, params,
         LATERAL (SELECT GREATEST(cur.last_read_seq,
                                  LEAST(COALESCE(params.up_to_seq, t.last_seq), t.last_seq)) AS horizon) h
),
moved AS (
    UPDATE thread_participants p SET last_read_seq = next.horizon, unread_count = next.unread
    FROM next, params
    WHERE p.thread_id = params.thread_id AND p.side = params.side
      AND (p.last_read_seq <> next.horizon OR p.unread_count <> next.unread)
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT params.user_id, params.side, 1 FROM next, params
    WHERE next.unread <> next.unread_before  -- rules::read_changes
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING version
),
elsewhere AS (
    SELECT CAST(COALESCE(SUM(p.unread_count), 0) AS BIGINT) AS unread
    FROM thread_participants p, params
    WHERE p.user_id = params.user_id AND p.side = params.side AND p.unread_count > 0
      AND p.thread_id <> params.thread_id
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable,
       next.horizon, next.unread, elsewhere.unread + COALESCE(next.unread, 0) AS total,
       EXISTS (SELECT 1 FROM bumped) AS changed
FROM elsewhere LEFT JOIN t ON TRUE LEFT JOIN next ON TRUE;
