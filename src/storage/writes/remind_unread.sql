-- Unread reminders, as ONE statement; chatd runs this file as it is.
--
-- Writes one chat.unread.reminder for each participant (up to params.batch) with a
-- message unread since before params.due_before, whose thread is not muted for them
-- (rules::is_muted at params.now_ms) and who was not reminded at their current horizon
-- yet: one reminder per unread spell, a new spell when the horizon moves
-- (thread_participants.reminded_read_seq). A reminder names the oldest unread message.
-- This is rules::reminder_due (unread: rules::counts_as_unread), which
-- tests/api/reminders.rs holds it to.
--
-- A round goes on from where the last one stopped, in key order (after
-- params.after_thread_id and params.after_side), so a backlog is read once however many
-- rounds it takes; it looks no further than params.through_thread_id, so no round reads
-- much however few are due. It answers the last key it reminded, for the next round to
-- go on from, and whether any thread lies beyond its window.
--
-- The participant rows are taken with SKIP LOCKED: a row a write holds is reminded on
-- the next round, and this statement never waits on a write (it takes no other lock, so
-- it cannot be in a cycle with one). Two relays running it at once remind each row once:
-- the second sees the first's reminded_read_seq under the row lock.
WITH params AS (
    SELECT CAST(:due_before AS timestamptz) AS due_before,
           CAST(:now_ms AS bigint) AS now_ms,
           CAST(:batch AS bigint) AS batch,
           CAST(:after_thread_id AS bigint) AS after_thread_id,
           CAST(:after_side AS text) AS after_side,
           CAST(:through_thread_id AS bigint) AS through_thread_id
),
due AS MATERIALIZED (
    SELECT p.thread_id, p.side, p.user_id, p.unread_count, p.last_read_seq
    FROM thread_participants p, params
    WHERE p.unread_count > 0
      AND COALESCE(p.muted_until_ms, 0) <= params.now_ms
      AND p.reminded_read_seq IS DISTINCT FROM p.last_read_seq
      AND EXISTS (
          SELECT 1 FROM messages m
          WHERE m.thread_id = p.thread_id AND m.seq > p.last_read_seq
            AND m.sender_id <> p.user_id AND m.deleted_at IS NULL
            AND m.created_at <= params.due_before
      )
      -- The window's bounds as subqueries of params, not its columns: only so are they
      -- bounds of the index scan; compared in a join, a round would read every
      -- participant before its window, and a sweep would cost the square of the table.
      AND (p.thread_id, p.side) > ((SELECT after_thread_id FROM params),
                                   (SELECT after_side FROM params))
      AND p.thread_id <= (SELECT through_thread_id FROM params)
    ORDER BY p.thread_id, p.side
    LIMIT (SELECT batch FROM params)
    FOR NO KEY UPDATE OF p SKIP LOCKED
),
marked AS (
    UPDATE thread_participants p SET reminded_read_seq = due.last_read_seq
    FROM due
    WHERE p.thread_id = due.thread_id AND p.side = due.side
    RETURNING due.thread_id, due.side, due.user_id, due.unread_count, due.last_read_seq
),
noted AS (
    INSERT INTO events (kind, thread_id, side, user_id, seq, amount, created_at)
    SELECT 'chat.unread.reminder', marked.thread_id, marked.side, marked.user_id,
           (SELECT MIN(m.seq) FROM messages m
            WHERE m.thread_id = marked.thread_id AND m.seq > marked.last_read_seq
              AND m.sender_id <> marked.user_id AND m.deleted_at IS NULL),
           marked.unread_count, now()
    FROM marked
    RETURNING thread_id, side
)
SELECT CAST(count(*) AS BIGINT) AS reminded,
       (SELECT thread_id FROM noted ORDER BY thread_id DESC, side DESC LIMIT 1) AS last_thread_id,
       (SELECT side FROM noted ORDER BY thread_id DESC, side DESC LIMIT 1) AS last_side,
       -- The greatest key, one step of the index; an EXISTS would be planned as a
       -- scan of the table, all of it when the window is the last.
       COALESCE((SELECT max(thread_id) FROM thread_participants)
                > (SELECT through_thread_id FROM params), false) AS beyond
FROM noted;
