// Stream tickets' statements, written once and compiled once per backend like
// `reads.rs`: `storage/postgres.rs` and `storage/sqlite.rs` include this file into a
// `tickets` module and run the statements their own way (SQLite through its single
// writer, so a ticket never contends with the writer for the database lock).

use diesel::dsl;
use diesel::prelude::*;

use super::schema::stream_tickets;

/// What a redeemed ticket gives back: user, role, and when its access ends.
pub const REDEEMED: (
    stream_tickets::user_id,
    stream_tickets::role,
    stream_tickets::access_ends_at,
) = (
    stream_tickets::user_id,
    stream_tickets::role,
    stream_tickets::access_ends_at,
);

/// Forgets the tickets expired before `now` (Unix ms), so the table holds live ones.
#[dsl::auto_type(no_type_alias)]
pub fn forget_expired(now: i64) -> _ {
    dsl::delete(stream_tickets::table.filter(stream_tickets::expires_at.lt(now)))
}

/// Stores a ticket's hash for `user_id` in `role` until `expires_at`; the stream it
/// opens ends at `access_ends_at` (both Unix ms).
#[dsl::auto_type]
pub fn store(
    ticket_hash: String,
    user_id: i64,
    role: &'static str,
    expires_at: i64,
    access_ends_at: i64,
) -> _ {
    dsl::insert_into(stream_tickets::table).values((
        stream_tickets::ticket_hash.eq(ticket_hash),
        stream_tickets::user_id.eq(user_id),
        stream_tickets::role.eq(role),
        stream_tickets::expires_at.eq(expires_at),
        stream_tickets::access_ends_at.eq(access_ends_at),
    ))
}

/// The statement that keeps `ticket`.
pub fn store_ticket(ticket: crate::storage::NewTicket) -> store {
    store(
        ticket.ticket_hash,
        ticket.user_id,
        ticket.role,
        ticket.expires_at,
        ticket.access_ends_at,
    )
}

/// Takes a ticket by its hash if it has not expired by `now`: one statement, so two
/// redeemers cannot both win. The caller adds `RETURNING` (`REDEEMED`).
#[dsl::auto_type(no_type_alias)]
pub fn take(ticket_hash: String, now: i64) -> _ {
    dsl::delete(
        stream_tickets::table
            .filter(stream_tickets::ticket_hash.eq(ticket_hash))
            .filter(stream_tickets::expires_at.ge(now)),
    )
}
