ALTER TABLE stream_tickets DROP COLUMN access_ends_at;
