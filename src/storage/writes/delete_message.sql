-- DeleteMessage and RemoveMessage, as ONE statement; chatd runs this file as it is.
--
-- Locks the thread row and the message, and deletes only what the rules allow: a
-- sender deletes their own message in a thread they are in (rules::thread_for,
-- rules::may_delete), a moderator (params.deleter_id NULL) removes any. A tombstone
-- keeps seq, sender and created_at, and its key (a retry answers it); its body goes.
-- Deleting one again changes nothing. In the same write: the recipient's unread count
-- drops when the message was after their horizon (rules::counts_as_unread), and when
-- it was the newest not deleted (rules::last_visible) the thread's line falls back to
-- the one before it that is not deleted (or to none); the summaries whose line that
-- changes are bumped (rules::participant_changed).
--
-- The fallback is read from the statement's snapshot: when a write of the thread
-- committed between it and the lock, nothing changes and the statement says `stale`
-- (chatd runs it again under the lock; see mark_read.sql).
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:seq AS bigint) AS seq,
           CAST(:side AS text) AS side,
           CAST(:deleter_id AS bigint) AS deleter_id,
           CAST(:preview_chars AS integer) AS preview_chars
),
t AS MATERIALIZED (
    SELECT thread_id, kind, tutor_id, student_id, is_writable, last_visible_seq, revision
    FROM threads WHERE thread_id = (SELECT thread_id FROM params)
    FOR NO KEY UPDATE
),
seen AS (
    SELECT revision FROM threads WHERE thread_id = (SELECT thread_id FROM params)
),
target AS MATERIALIZED (
    SELECT m.* FROM messages m, params
    WHERE m.thread_id = (SELECT thread_id FROM t) AND m.seq = params.seq
    FOR UPDATE OF m
),
stale AS (
    SELECT t.revision <> (SELECT revision FROM seen) AS stale FROM t
),
allowed AS MATERIALIZED (
    SELECT target.message_id, target.seq, target.sender_id FROM t, target, params
    WHERE (params.deleter_id IS NULL
           OR ((CASE WHEN params.side = 'tutor' THEN t.tutor_id ELSE t.student_id END) = params.deleter_id
               AND target.sender_id = params.deleter_id))
      AND target.deleted_at IS NULL
      AND NOT (SELECT stale FROM stale)
),
fallback AS MATERIALIZED (
    -- rules::last_visible once this message is gone, when it was the one shown.
    SELECT m.seq, m.created_at, left(m.body, (SELECT preview_chars FROM params)) AS preview, m.sender_id
    FROM messages m, allowed, t
    WHERE allowed.seq = t.last_visible_seq AND m.thread_id = t.thread_id
      AND m.seq < allowed.seq AND m.deleted_at IS NULL
    ORDER BY m.seq DESC LIMIT 1
),
shown AS (
    SELECT allowed.seq = t.last_visible_seq AS changed FROM allowed, t
),
gone AS (
    UPDATE messages m SET body = '', deleted_at = now()
    FROM allowed
    WHERE m.message_id = allowed.message_id
    RETURNING m.*
),
moved AS (
    UPDATE threads SET revision = threads.revision + 1,
        last_visible_seq = CASE WHEN shown.changed THEN COALESCE((SELECT seq FROM fallback), 0)
                                ELSE threads.last_visible_seq END,
        last_message_at = CASE WHEN shown.changed THEN (SELECT created_at FROM fallback)
                               ELSE threads.last_message_at END,
        last_message_preview = CASE WHEN shown.changed THEN COALESCE((SELECT preview FROM fallback), '')
                                    ELSE threads.last_message_preview END,
        last_message_sender_id = CASE WHEN shown.changed THEN COALESCE((SELECT sender_id FROM fallback), 0)
                                      ELSE threads.last_message_sender_id END,
        version = threads.version + 1
    FROM t, gone, shown
    WHERE threads.thread_id = t.thread_id
    RETURNING threads.version
),
logged AS (
    -- A removal by moderation (no deleter) says so.
    INSERT INTO events (kind, thread_id, thread_version, seq, flag, created_at)
    SELECT 'chat.message.deleted', gone.thread_id, moved.version, gone.seq,
           params.deleter_id IS NULL, gone.deleted_at
    FROM gone, moved, params
),
counted AS (
    UPDATE thread_participants p SET
        unread_count = p.unread_count
            - CASE WHEN p.user_id <> gone.sender_id AND gone.seq > p.last_read_seq THEN 1 ELSE 0 END,
        last_message_at = CASE WHEN shown.changed THEN (SELECT created_at FROM fallback)
                               ELSE p.last_message_at END,
        last_message_preview = CASE WHEN shown.changed THEN COALESCE((SELECT preview FROM fallback), '')
                                    ELSE p.last_message_preview END,
        last_message_sender_id = CASE WHEN shown.changed THEN COALESCE((SELECT sender_id FROM fallback), 0)
                                      ELSE p.last_message_sender_id END
    FROM t, gone, shown
    WHERE p.thread_id = t.thread_id
    RETURNING p.user_id, p.side, p.unread_count AS unread_after,
              CASE WHEN p.user_id <> gone.sender_id AND gone.seq > p.last_read_seq THEN 1 ELSE 0 END AS dropped,
              shown.changed AS line_changed
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    -- rules::participant_changed(before = after + dropped, after, line_changed).
    SELECT user_id, side, 1 FROM counted
    WHERE dropped <> 0 OR (line_changed AND unread_after > 0)
    ORDER BY user_id, side = 'student'
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING user_id, side
),
answered AS (
    -- The message as this write leaves it: changed by it, or as it was. Returned as
    -- `messages.*`, so a new column of messages needs no change here.
    SELECT * FROM gone UNION ALL SELECT * FROM target WHERE NOT EXISTS (SELECT 1 FROM gone)
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable, CAST(NULL AS text) AS contact_access,
       target.sender_id AS found_sender_id, target.deleted_at IS NOT NULL AS found_deleted,
       EXISTS (SELECT 1 FROM gone) AS changed_message,
       (SELECT COALESCE(array_agg(user_id), '{}') FROM bumped) AS changed_users,
       (SELECT COALESCE(array_agg(side), '{}') FROM bumped) AS changed_sides,
       COALESCE((SELECT stale FROM stale), FALSE) AS stale,
       (SELECT version FROM moved) AS thread_version,
       answered.*
FROM params LEFT JOIN t ON TRUE LEFT JOIN target ON TRUE LEFT JOIN answered ON TRUE;
