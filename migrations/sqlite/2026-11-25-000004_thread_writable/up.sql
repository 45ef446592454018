-- SQLite twin of migrations/postgres/…_thread_writable: whether a thread takes
-- messages, kept on the thread row by the upserts of its relation or inquiry.
ALTER TABLE threads ADD COLUMN is_writable BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE threads
SET is_writable = COALESCE(
    (SELECT r.status = 'ACTIVE' FROM relations r WHERE r.relation_id = threads.relation_id),
    (SELECT i.status IN ('OPEN', 'ACCEPTED') FROM inquiries i WHERE i.inquiry_id = threads.inquiry_id),
    FALSE);
