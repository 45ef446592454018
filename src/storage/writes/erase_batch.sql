-- One batch of EraseUser: up to params.batch of the user's messages in one thread,
-- after params.after_seq in seq order, become tombstones with body and key wiped. Run
-- in a transaction right after the thread row is locked (so its snapshot is current),
-- each batch its own transaction, so other writes keep flowing between them.
--
-- As for DeleteMessage (delete_message.sql): the recipient's unread count drops by the
-- erased messages after their horizon (rules::counts_as_unread); when the newest
-- message not deleted is among them, the thread's line falls back to the newest one
-- left (rules::last_visible), or to none; summaries whose line changed are bumped
-- (rules::participant_changed). Tombstones deleted before lose their key too, but are
-- not counted as erased again; every message changed is logged, tombstones too.
WITH params AS (
    SELECT CAST(:thread_id AS bigint) AS thread_id,
           CAST(:user_id AS bigint) AS user_id,
           CAST(:after_seq AS bigint) AS after_seq,
           CAST(:batch AS bigint) AS batch,
           CAST(:preview_chars AS integer) AS preview_chars
),
t AS MATERIALIZED (
    SELECT thread_id, last_visible_seq FROM threads WHERE thread_id = (SELECT thread_id FROM params)
),
batch AS MATERIALIZED (
    SELECT m.message_id, m.seq, m.deleted_at IS NULL AS visible
    FROM messages m, params
    WHERE m.thread_id = params.thread_id AND m.seq > params.after_seq
      AND m.sender_id = params.user_id
      AND (m.deleted_at IS NULL OR m.body <> '' OR m.client_message_id IS NOT NULL)
    ORDER BY m.seq
    LIMIT (SELECT batch FROM params)
    FOR UPDATE OF m
),
gone AS (
    UPDATE messages m SET body = '', client_message_id = NULL,
                          deleted_at = COALESCE(m.deleted_at, now())
    FROM batch
    WHERE m.message_id = batch.message_id
),
shown AS (
    SELECT EXISTS (SELECT 1 FROM batch, t WHERE batch.visible AND batch.seq = t.last_visible_seq) AS changed
),
fallback AS MATERIALIZED (
    SELECT m.seq, m.created_at, left(m.body, (SELECT preview_chars FROM params)) AS preview, m.sender_id
    FROM messages m, t, shown
    WHERE shown.changed AND m.thread_id = t.thread_id AND m.deleted_at IS NULL
      AND m.seq NOT IN (SELECT seq FROM batch)
    ORDER BY m.seq DESC LIMIT 1
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
        version = threads.version + (SELECT count(*) FROM batch)
    FROM t, shown
    WHERE threads.thread_id = t.thread_id AND EXISTS (SELECT 1 FROM batch)
    RETURNING threads.version
),
logged AS (
    -- Each message this batch changed, in seq order, as its own change: a tombstone
    -- wiped again loses its key, which a window showing it must hear of too.
    INSERT INTO events (kind, thread_id, thread_version, seq, created_at)
    SELECT 'chat.message.deleted', params.thread_id,
           moved.version - erased.n + erased.k, erased.seq, now()
    FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS k, count(*) OVER () AS n
          FROM batch) erased, moved, params
),
counted AS (
    -- The recipient loses the erased messages after their horizon.
    UPDATE thread_participants p SET
        unread_count = p.unread_count
            - CASE WHEN p.user_id = params.user_id THEN 0
                   ELSE (SELECT count(*) FROM batch
                         WHERE batch.visible AND batch.seq > p.last_read_seq) END,
        last_message_at = CASE WHEN shown.changed THEN (SELECT created_at FROM fallback)
                               ELSE p.last_message_at END,
        last_message_preview = CASE WHEN shown.changed THEN COALESCE((SELECT preview FROM fallback), '')
                                    ELSE p.last_message_preview END,
        last_message_sender_id = CASE WHEN shown.changed THEN COALESCE((SELECT sender_id FROM fallback), 0)
                                      ELSE p.last_message_sender_id END
    FROM t, shown, params
    WHERE p.thread_id = t.thread_id AND EXISTS (SELECT 1 FROM batch)
    RETURNING p.user_id, p.side, p.unread_count AS unread_after,
              CASE WHEN p.user_id = params.user_id THEN 0
                   ELSE (SELECT count(*) FROM batch
                         WHERE batch.visible AND batch.seq > p.last_read_seq) END AS dropped,
              shown.changed AS line_changed
),
bumped AS (
    INSERT INTO summary_versions (user_id, side, version)
    SELECT user_id, side, 1 FROM counted
    WHERE dropped <> 0 OR (line_changed AND unread_after > 0)  -- rules::participant_changed
    ORDER BY user_id, side = 'student'
    ON CONFLICT (user_id, side) DO UPDATE SET version = summary_versions.version + 1
    RETURNING user_id, side
)
SELECT CAST((SELECT count(*) FROM batch WHERE visible) AS BIGINT) AS erased,
       CAST((SELECT count(*) FROM batch) AS BIGINT) AS wiped,
       CAST(COALESCE((SELECT max(seq) FROM batch), (SELECT after_seq FROM params)) AS BIGINT) AS last_seq,
       (SELECT COALESCE(array_agg(user_id), '{}') FROM bumped) AS changed_users,
       (SELECT COALESCE(array_agg(side), '{}') FROM bumped) AS changed_sides,
       (SELECT version FROM moved) AS thread_version;
