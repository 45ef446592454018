-- When the token a ticket was minted with stops being honoured (Unix ms): the stream a
-- ticket opens ends there, as one opened with that token would. Tickets minted before
-- this column existed live at most half a minute and are treated as unbounded.
ALTER TABLE stream_tickets ADD COLUMN access_ends_at BIGINT NOT NULL DEFAULT 9223372036854775807;
