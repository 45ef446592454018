-- A version per user and side that changes whenever that user's unread summary changes,
-- bumped in the same transaction as the counters. It lets a poller ask "changed since
-- version N?" with one primary-key lookup instead of rebuilding the summary.
CREATE TABLE summary_versions (
    user_id BIGINT NOT NULL,
    side    TEXT   NOT NULL CHECK (side IN ('tutor', 'student')),
    version BIGINT NOT NULL,
    PRIMARY KEY (user_id, side)
);

INSERT INTO summary_versions (user_id, side, version)
SELECT DISTINCT user_id, side, 1 FROM thread_participants WHERE unread_count > 0;
