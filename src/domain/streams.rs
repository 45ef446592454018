//! What the domain's server streams share (WatchThread, StreamEvents): a bounded buffer
//! a pump task fills and a transport reads, the reason the pump ended, and what happens
//! to a reader that stops reading (`STREAM_TOO_SLOW` after the stall timeout).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::DomainError;
use crate::summaries::Subscription;

/// A stream as a transport reads it: items in order, then, if it ends early, the reason
/// (which comes before any item still buffered: the reader resumes from the last one it
/// took).
pub struct Buffered<T> {
    items: mpsc::Receiver<T>,
    ended: Option<oneshot::Receiver<DomainError>>,
}

impl<T> Buffered<T> {
    /// A stream of `capacity` items: the pump's end of the buffer, the reader's stream,
    /// and where the pump says why it ended.
    pub(super) fn new(capacity: usize) -> (mpsc::Sender<T>, Self, oneshot::Sender<DomainError>) {
        let (items, buffered) = mpsc::channel(capacity);
        let (end, ended) = oneshot::channel();
        let stream = Self {
            items: buffered,
            ended: Some(ended),
        };
        (items, stream, end)
    }

    /// The next item; `Some(Err)` once when the stream ended with an error; `None` when
    /// it ended without one (shutdown, or the pump's reader went away).
    pub async fn next(&mut self) -> Option<Result<T, DomainError>> {
        let ended = self.ended.as_mut()?;
        tokio::select! {
            biased;
            error = ended => {
                self.ended = None;
                error.ok().map(Err)
            }
            item = self.items.recv() => match item {
                Some(item) => Some(Ok(item)),
                None => self.ended.take()?.await.ok().map(Err),
            },
        }
    }
}

/// Puts `item` in a stream's buffer of `capacity`, waiting for room at most `patience`
/// (`--watch-stall-timeout`): a reader that takes nothing for that long cannot keep up,
/// and resumes with `cursor`. `Err(None)`: stop quietly (the reader went, or shutdown).
pub(super) async fn hand_on<T>(
    buffer: &mpsc::Sender<T>,
    item: T,
    (patience, capacity, cursor): (Duration, usize, &'static str),
    place: &mut Subscription,
) -> Result<(), Option<DomainError>> {
    tokio::select! {
        sent = buffer.send_timeout(item, patience) => sent.map_err(|error| match error {
            mpsc::error::SendTimeoutError::Timeout(_) => Some(DomainError::StreamTooSlow {
                buffered: capacity,
                cursor,
            }),
            mpsc::error::SendTimeoutError::Closed(_) => None,
        }),
        () = place.closed() => Err(None),
    }
}
