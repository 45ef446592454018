//! Stream tickets: how a browser's `EventSource`, which cannot send `Authorization`,
//! opens an unread-summary stream without putting its bearer token in a URL.
//!
//! A caller with a token mints a ticket: 32 random bytes, shown once as 64 hex digits.
//! The database keeps only its SHA-256, with the caller's user and role and an expiry
//! [`STREAM_TICKET_TTL`] ahead. Opening a stream with it deletes that row in one
//! statement, so a ticket opens one stream, on whichever replica, and a leaked URL is
//! worth nothing once used or after half a minute.

use crate::storage::NewTicket;
use crate::storage::writes::stream_tickets::{CreateStreamTicket, RedeemStreamTicket};
use crate::tickets;

use super::{AccessEnds, Caller, Chat, DomainError, Role, caller_side, now_ms};

pub use crate::tickets::STREAM_TICKET_TTL;

/// A minted ticket: the secret to hand the browser, and how long it stays good.
#[derive(Debug, Clone)]
pub struct StreamTicket {
    pub ticket: String,
    pub expires_in: std::time::Duration,
}

impl Chat {
    /// Mints a one-use ticket that opens the caller's unread-summary stream; the stream
    /// ends when the caller's own access does (`access_ends`), as theirs would.
    pub async fn create_stream_ticket(
        &self,
        caller: Caller,
        access_ends: AccessEnds,
    ) -> Result<StreamTicket, DomainError> {
        let key = super::SummaryKey::new(caller.user_id, caller_side(caller)?);
        // A ticket for a stream that could not open now would be spent for nothing.
        self.summaries.hub().room_for(key)?;
        let (ticket, ticket_hash) = tickets::mint().map_err(DomainError::Internal)?;
        let now = now_ms();
        // A ticket does not outlive the access it stands for.
        let expires_at = (now + STREAM_TICKET_TTL.as_millis() as i64).min(access_ends.0);
        let ticket_row = NewTicket {
            ticket_hash,
            user_id: caller.user_id,
            role: caller.role.as_str(),
            expires_at,
            access_ends_at: access_ends.0,
        };
        self.store
            .write(CreateStreamTicket {
                ticket: ticket_row,
                now,
            })
            .await?;
        Ok(StreamTicket {
            ticket,
            expires_in: std::time::Duration::from_millis(
                u64::try_from(expires_at - now).unwrap_or(0),
            ),
        })
    }

    /// Takes a ticket for good and returns whom it was minted for and when that
    /// caller's access ends; `TICKET_INVALID`
    /// when it is malformed, unknown, used already or expired (one answer for all, so
    /// a guesser learns nothing).
    pub async fn redeem_stream_ticket(
        &self,
        ticket: &str,
    ) -> Result<(Caller, AccessEnds), DomainError> {
        let invalid = DomainError::TicketInvalid {
            ttl_seconds: STREAM_TICKET_TTL.as_secs(),
        };
        // Not one of ours: refused without a database round trip.
        let Some(ticket_hash) = tickets::hash_of(ticket) else {
            return Err(invalid);
        };
        let redeemed = self
            .store
            .write(RedeemStreamTicket {
                ticket_hash,
                now: now_ms(),
            })
            .await?;
        let (user_id, role, access_ends) = redeemed.ok_or(invalid)?;
        let role = Role::parse(&role)
            .ok_or_else(|| DomainError::Internal(format!("a ticket stored role {role:?}")))?;
        Ok((Caller { user_id, role }, AccessEnds(access_ends)))
    }
}
