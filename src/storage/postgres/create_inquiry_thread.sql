-- EnsureThread's create of the thread of an inquiry, with its two participant rows, as ONE
-- statement. The fact is read under a share lock, so a status change commits either
-- before (and is seen) or after (and its own statement updates the new thread). The
-- unique key decides races: every loser inserts nothing and reads the winner's thread.
-- params.writable lists the statuses the rules let take messages
-- (InquiryStatus::allows_messages in rules.rs).
WITH params AS (
    SELECT CAST(:fact_id AS bigint) AS fact_id,
           CAST(:writable AS text[]) AS writable
),
fact AS MATERIALIZED (
    SELECT inquiry_id AS id, tutor_id, student_id, status FROM inquiries
    WHERE inquiry_id = (SELECT fact_id FROM params) FOR SHARE
),
ins AS (
    INSERT INTO threads (kind, inquiry_id, tutor_id, student_id, is_writable, created_at)
    SELECT 'negotiation', fact.id, fact.tutor_id, fact.student_id, fact.status = ANY(params.writable), now()
    FROM fact, params
    ON CONFLICT (inquiry_id) DO NOTHING
    RETURNING thread_id, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at
),
parts AS (
    INSERT INTO thread_participants (thread_id, side, user_id, kind, relation_id, inquiry_id,
                                     tutor_id, student_id, is_writable)
    SELECT ins.thread_id, s.side, CASE s.side WHEN 'tutor' THEN ins.tutor_id ELSE ins.student_id END,
           ins.kind, ins.relation_id, ins.inquiry_id, ins.tutor_id, ins.student_id, ins.is_writable
    FROM ins CROSS JOIN (VALUES ('tutor'), ('student')) AS s(side)
)
SELECT thread_id, kind, relation_id, inquiry_id, tutor_id, student_id, is_writable, created_at FROM ins;
