DROP TABLE thread_participants;
DROP TABLE messages;
DROP TABLE threads;
DROP TABLE inquiries;
DROP TABLE contact_access;
DROP TABLE relations;
