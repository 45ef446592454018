DROP TABLE events;
ALTER TABLE threads DROP COLUMN version;
