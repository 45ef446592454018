-- MuteThread and UnmuteThread, as ONE statement; chatd runs this file as it is.
--
-- Sets the caller's mute of the thread (params.muted_until_ms; NULL unmutes,
-- rules::MUTED_FOREVER_MS mutes until unmuted) on their own participant row
-- (rules::thread_for: no row unless they are the participant on their side). Muting
-- changes no count. The caller's summary changes when the thread has a line there and
-- its mute, as the summary shows it (rules::is_muted at params.now_ms), changed
-- (rules::participant_changed). Answers the caller's new total (rules::counts_in_total).
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:side AS text) AS side,
           CAST(:user_id AS bigint) AS user_id,
           CAST(:muted_until_ms AS bigint) AS muted_until_ms,
           CAST(:now_ms AS bigint) AS now_ms
),
t AS MATERIALIZED (
    -- The lock order (storage.rs): the thread row first, shared (a mute changes only the
    -- caller's own row), then the participant row, then the summary version.
    SELECT thread_id, kind, tutor_id, student_id, is_writable FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR SHARE
),
cur AS MATERIALIZED (
    SELECT p.unread_count, p.muted_until_ms FROM thread_participants p, params
    WHERE p.thread_id = (SELECT thread_id FROM t) AND p.side = params.side
      AND p.user_id = params.user_id
    FOR NO KEY UPDATE OF p
),
moved AS (
    UPDATE thread_participants p SET muted_until_ms = params.muted_until_ms
    FROM params, cur
    WHERE p.thread_id = params.thread_id AND p.side = params.side
      AND p.muted_until_ms IS DISTINCT FROM params.muted_until_ms
    RETURNING p.thread_id
),
noted AS (
    -- The outbox's chat.thread.muted or unmuted, when the mute changed (no version: a
    -- mute is private to its participant, never shown in the peer's window).
    INSERT INTO events (kind, thread_id, side, user_id, amount, created_at)
    SELECT CASE WHEN params.muted_until_ms IS NULL THEN 'chat.thread.unmuted' ELSE 'chat.thread.muted' END,
           moved.thread_id, params.side, params.user_id, params.muted_until_ms, now()
    FROM moved, params
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT params.user_id, params.side, 1 FROM cur, params
    WHERE cur.unread_count > 0
      AND (CASE WHEN cur.muted_until_ms > params.now_ms THEN cur.muted_until_ms END)
          IS DISTINCT FROM
          (CASE WHEN params.muted_until_ms > params.now_ms THEN params.muted_until_ms END)
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING version
),
elsewhere AS (
    SELECT CAST(COALESCE(SUM(p.unread_count), 0) AS BIGINT) AS unread
    FROM thread_participants p, params
    WHERE p.user_id = params.user_id AND p.side = params.side AND p.unread_count > 0
      AND p.thread_id <> params.thread_id
      AND COALESCE(p.muted_until_ms, 0) <= params.now_ms
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable,
       (SELECT count(*) FROM cur) > 0 AS member,
       elsewhere.unread + CASE WHEN COALESCE(params.muted_until_ms, 0) > params.now_ms THEN 0
                               ELSE COALESCE((SELECT unread_count FROM cur), 0) END AS total,
       EXISTS (SELECT 1 FROM bumped) AS changed
FROM params CROSS JOIN elsewhere LEFT JOIN t ON TRUE;
