-- Whether a thread takes messages, kept on the thread row itself by the upserts of its
-- relation or inquiry. SendMessage checks it under the thread row's lock, in the same
-- statement that appends the message, so an archive committed concurrently cannot let
-- a message in after it: the two writes are ordered by that one row lock.
ALTER TABLE threads ADD COLUMN is_writable BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE threads t
SET is_writable = COALESCE(
    (SELECT r.status = 'ACTIVE' FROM relations r WHERE r.relation_id = t.relation_id),
    (SELECT i.status IN ('OPEN', 'ACCEPTED') FROM inquiries i WHERE i.inquiry_id = t.inquiry_id),
    FALSE);
