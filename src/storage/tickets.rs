// Stream tickets, written once and compiled once per backend like `reads.rs`:
// `storage/postgres.rs` and `storage/sqlite.rs` include this file into a `tickets`
// module. On SQLite these statements run on a pooled connection rather than through
// the single writer: a ticket is one small statement per stream opened, rare beside
// messages, and SQLite's busy timeout orders it with the writer's transactions.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::stream_tickets;

/// Stores a ticket's hash for `user_id` in `role` until `expires_at` (Unix ms), and
/// forgets tickets expired before `now`, so the table holds only live ones.
pub async fn create_stream_ticket(
    conn: &mut Conn,
    ticket_hash: &str,
    user_id: i64,
    role: &str,
    expires_at: i64,
    now: i64,
) -> QueryResult<()> {
    diesel::delete(stream_tickets::table.filter(stream_tickets::expires_at.lt(now)))
        .execute(conn)
        .await?;
    diesel::insert_into(stream_tickets::table)
        .values((
            stream_tickets::ticket_hash.eq(ticket_hash),
            stream_tickets::user_id.eq(user_id),
            stream_tickets::role.eq(role),
            stream_tickets::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes a ticket by its hash: deletes it and returns its user and role, if it existed
/// and had not expired by `now`. One statement, so two redeemers cannot both win.
pub async fn redeem_stream_ticket(
    conn: &mut Conn,
    ticket_hash: &str,
    now: i64,
) -> QueryResult<Option<(i64, String)>> {
    diesel::delete(
        stream_tickets::table
            .filter(stream_tickets::ticket_hash.eq(ticket_hash))
            .filter(stream_tickets::expires_at.ge(now)),
    )
    .returning((stream_tickets::user_id, stream_tickets::role))
    // `load`, not `get_result`: on PostgreSQL the latter answers before the commit
    // (see `storage/postgres.rs`, `committed_row`).
    .load(conn)
    .await
    .map(|rows: Vec<(i64, String)>| rows.into_iter().next())
}
