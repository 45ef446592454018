-- EditMessage, as ONE statement; chatd runs this file as it is.
--
-- Locks the thread row (which orders every write of the thread) and the message, and
-- edits only what rules::may_edit allows: the editor is the thread's participant on
-- their side (rules::thread_for), sent the message, it is not deleted, and they may
-- write now (rules::may_write, as in send_message.sql). An edit sets edited_at and
-- changes no count, seq, created_at or last_message_at; when the message is the
-- thread's newest not deleted (rules::last_visible), the previews follow it, and the
-- summaries of participants with unread messages there change when the preview does
-- (rules::participant_changed).
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:seq AS bigint) AS seq,
           CAST(:side AS text) AS side,
           CAST(:editor_id AS bigint) AS editor_id,
           CAST(:body AS text) AS body,
           CAST(:preview AS text) AS preview,
           CAST(:unlocking AS text[]) AS unlocking
),
t AS MATERIALIZED (
    SELECT thread_id, kind, tutor_id, student_id, is_writable, last_visible_seq FROM threads
    WHERE thread_id = (SELECT thread_id FROM params)
    FOR NO KEY UPDATE
),
access AS MATERIALIZED (
    SELECT ca.state FROM contact_access ca, params
    WHERE ca.tutor_id = (SELECT tutor_id FROM t) AND ca.student_id = (SELECT student_id FROM t)
      AND params.side = 'tutor' AND (SELECT kind FROM t) = 'contact'
    FOR SHARE OF ca
),
target AS MATERIALIZED (
    SELECT m.* FROM messages m, params
    WHERE m.thread_id = (SELECT thread_id FROM t) AND m.seq = params.seq
    FOR UPDATE OF m
),
allowed AS MATERIALIZED (
    SELECT target.message_id, target.seq FROM t, target, params
    WHERE (CASE WHEN params.side = 'tutor' THEN t.tutor_id ELSE t.student_id END) = params.editor_id
      AND target.sender_id = params.editor_id
      AND target.deleted_at IS NULL
      AND t.is_writable
      AND (params.side <> 'tutor' OR t.kind <> 'contact'
           OR EXISTS (SELECT 1 FROM access WHERE access.state = ANY(params.unlocking)))
),
edited AS (
    UPDATE messages m SET body = params.body, edited_at = now()
    FROM allowed, params
    WHERE m.message_id = allowed.message_id
    RETURNING m.*
),
moved AS (
    UPDATE threads SET revision = threads.revision + 1, version = threads.version + 1,
        last_message_preview = CASE WHEN t.last_visible_seq = edited.seq THEN params.preview
                                    ELSE threads.last_message_preview END
    FROM t, edited, params
    WHERE threads.thread_id = t.thread_id
    RETURNING threads.version
),
logged AS (
    INSERT INTO events (kind, thread_id, thread_version, seq, created_at)
    SELECT 'chat.message.edited', edited.thread_id, moved.version, edited.seq, edited.edited_at
    FROM edited, moved
),
parts AS (
    -- An edit that leaves the preview as it was (the same start of a body) changes no
    -- line: rules::participant_changed with line_changed = the preview changed.
    UPDATE thread_participants p SET last_message_preview = params.preview
    FROM t, edited, params
    WHERE p.thread_id = t.thread_id AND t.last_visible_seq = edited.seq
      AND p.last_message_preview IS DISTINCT FROM params.preview
    RETURNING p.user_id, p.side, p.unread_count
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT user_id, side, 1 FROM parts WHERE unread_count > 0  -- rules::participant_changed
    ORDER BY user_id, side = 'student'
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING user_id, side
),
answered AS (
    -- The message as this write leaves it: changed by it, or as it was. Returned as
    -- `messages.*`, so a new column of messages needs no change here.
    SELECT * FROM edited UNION ALL SELECT * FROM target WHERE NOT EXISTS (SELECT 1 FROM edited)
)
SELECT t.kind, t.tutor_id, t.student_id, t.is_writable, (SELECT state FROM access) AS contact_access,
       target.sender_id AS found_sender_id, target.deleted_at IS NOT NULL AS found_deleted,
       EXISTS (SELECT 1 FROM edited) AS changed_message,
       (SELECT COALESCE(array_agg(user_id), '{}') FROM bumped) AS changed_users,
       (SELECT COALESCE(array_agg(side), '{}') FROM bumped) AS changed_sides,
       FALSE AS stale,
       (SELECT version FROM moved) AS thread_version,
       answered.*
FROM params LEFT JOIN t ON TRUE LEFT JOIN target ON TRUE LEFT JOIN answered ON TRUE;
