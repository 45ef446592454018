ALTER TABLE threads DROP COLUMN is_writable;
