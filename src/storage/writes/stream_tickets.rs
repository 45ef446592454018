//! Stream tickets: a minted ticket's hash kept until it expires, and taken once by the
//! stream it opens (one statement, so two redeemers on any replicas cannot both win).
//! The statements are `storage/tickets.rs`, compiled for each backend.

use diesel::{QueryResult, SqliteConnection};

use super::Write;
use crate::storage::postgres;
use crate::storage::rows::{NewTicket, RedeemedTicket};
use crate::storage::sqlite;

/// Keeps a ticket's hash, forgetting expired ones first (`now`: Unix ms).
#[derive(Debug, Clone)]
pub struct CreateStreamTicket {
    pub ticket: NewTicket,
    pub now: i64,
}

/// Takes a live ticket, once: its user, role and access end (`now`: Unix ms).
#[derive(Debug, Clone)]
pub struct RedeemStreamTicket {
    pub ticket_hash: String,
    pub now: i64,
}

impl Write for CreateStreamTicket {
    type Done = ();
    const NAME: &'static str = "create_stream_ticket";
    const LOGS: bool = false;

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<()> {
        use diesel_async::RunQueryDsl;
        postgres::tickets::forget_expired(self.now)
            .execute(conn)
            .await?;
        postgres::tickets::store_ticket(self.ticket.clone())
            .execute(conn)
            .await?;
        Ok(())
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        use diesel::RunQueryDsl;
        sqlite::tickets::forget_expired(self.now).execute(conn)?;
        sqlite::tickets::store_ticket(self.ticket.clone()).execute(conn)?;
        Ok(())
    }
}

impl Write for RedeemStreamTicket {
    type Done = Option<RedeemedTicket>;
    const NAME: &'static str = "redeem_stream_ticket";
    const LOGS: bool = false;

    async fn postgres(&self, conn: &mut postgres::Conn) -> QueryResult<Self::Done> {
        let taken = postgres::tickets::take(self.ticket_hash.clone(), self.now)
            .returning(postgres::tickets::REDEEMED);
        match postgres::committed_row(taken, conn).await {
            Ok(row) => Ok(Some(row)),
            Err(diesel::result::Error::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<Self::Done> {
        use diesel::{OptionalExtension, RunQueryDsl};
        sqlite::tickets::take(self.ticket_hash.clone(), self.now)
            .returning(sqlite::tickets::REDEEMED)
            .get_result(conn)
            .optional()
    }
}
