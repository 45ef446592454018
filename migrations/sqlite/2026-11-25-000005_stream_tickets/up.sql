-- Stream tickets: what a browser's EventSource, which cannot send a bearer token,
-- opens its unread-summary stream with. Only a hash of each ticket is kept; redeeming
-- deletes the row, so a ticket opens one stream whichever replica it reaches.
CREATE TABLE stream_tickets (
    ticket_hash TEXT   PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    role        TEXT   NOT NULL,
    -- Unix milliseconds.
    expires_at  BIGINT NOT NULL
);
CREATE INDEX stream_tickets_expires_at ON stream_tickets (expires_at);
