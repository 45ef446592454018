//! Stream tickets' secrets: how a browser's `EventSource`, which cannot send
//! `Authorization`, opens a stream without putting its bearer token in a URL.
//!
//! A ticket is 32 random bytes, shown once as 64 hex digits. The database keeps only
//! its SHA-256 (with the caller's user and role and an expiry `STREAM_TICKET_TTL`
//! ahead); opening a stream with it deletes that row in one statement, so a ticket
//! opens one stream, on whichever replica, and a leaked URL is worth nothing once used
//! or after half a minute.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long a minted ticket may wait before it opens its stream.
pub const STREAM_TICKET_TTL: Duration = Duration::from_secs(30);

/// Random bytes in a ticket: 256 bits, beyond guessing.
const TICKET_BYTES: usize = 32;

/// A new ticket: the secret to hand out, and the hash to keep.
pub fn mint() -> Result<(String, String), String> {
    let mut secret = [0u8; TICKET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for a ticket: {e}"))?;
    let ticket = hex::encode(secret);
    let hash = digest(&ticket);
    Ok((ticket, hash))
}

/// The hash a ticket is kept under; `None` for text that is not a ticket chatd could
/// have minted (refused without a database round trip).
pub fn hash_of(ticket: &str) -> Option<String> {
    let well_formed =
        ticket.len() == TICKET_BYTES * 2 && ticket.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| digest(&ticket.to_ascii_lowercase()))
}

fn digest(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_ticket_hashes_to_what_is_kept() {
        let (ticket, hash) = mint().unwrap();
        assert_eq!(ticket.len(), 64);
        assert_eq!(hash_of(&ticket), Some(hash.clone()));
        assert_eq!(hash_of(&ticket.to_ascii_uppercase()), Some(hash));
        assert_eq!(hash_of("not a ticket"), None);
    }
}
