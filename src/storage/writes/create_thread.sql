-- EnsureThread's create of the thread of a relation (contact) or an inquiry
-- (negotiation), with its two participant rows, as ONE statement; exactly one of
-- params.relation_id and params.inquiry_id is set. The fact is read under a share lock,
-- so a status change commits either before (and is seen) or after (and its own
-- statement updates the new thread). The unique keys decide races: every loser
-- inserts nothing and reads the winner's thread. params.writable lists the statuses
-- that let the thread take messages (RelationStatus::allows_messages or
-- InquiryStatus::allows_messages in rules.rs).
WITH params AS (
    SELECT CAST(:relation_id AS bigint) AS relation_id,
           CAST(:inquiry_id AS bigint) AS inquiry_id,
           CAST(:writable AS text[]) AS writable
),
relation AS MATERIALIZED (
    SELECT 'contact' AS kind, relation_id, CAST(NULL AS bigint) AS inquiry_id,
           tutor_id, student_id, status
    FROM relations WHERE relation_id = (SELECT relation_id FROM params) FOR SHARE
),
inquiry AS MATERIALIZED (
    SELECT 'negotiation' AS kind, CAST(NULL AS bigint) AS relation_id, inquiry_id,
           tutor_id, student_id, status
    FROM inquiries WHERE inquiry_id = (SELECT inquiry_id FROM params) FOR SHARE
),
fact AS (
    SELECT * FROM relation UNION ALL SELECT * FROM inquiry
),
ins AS (
    INSERT INTO threads (kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at)
    SELECT fact.kind, fact.relation_id, fact.inquiry_id, fact.tutor_id, fact.student_id,
           fact.status = ANY(params.writable), now()
    FROM fact, params
    ON CONFLICT DO NOTHING
    RETURNING *
),
parts AS (
    INSERT INTO thread_participants (thread_id, side, user_id, kind, relation_id, inquiry_id,
                                     tutor_id, student_id, is_writable, thread_created_at)
    SELECT ins.thread_id, s.side, CASE s.side WHEN 'tutor' THEN ins.tutor_id ELSE ins.student_id END,
           ins.kind, ins.relation_id, ins.inquiry_id, ins.tutor_id, ins.student_id, ins.is_writable,
           ins.created_at
    FROM ins CROSS JOIN (VALUES ('tutor'), ('student')) AS s(side)
),
noted AS (
    -- The outbox's chat.thread.created; no version: a thread's windows start at 0.
    INSERT INTO events (kind, thread_id, created_at)
    SELECT 'chat.thread.created', ins.thread_id, ins.created_at FROM ins
)
SELECT * FROM ins;
