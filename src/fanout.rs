//! How replicas tell each other which unread summaries changed, off the commit path.
//!
//! A write commits first; then the keys it changed go to this replica's `Publisher`,
//! which sends them in batches on a connection of its own. Every replica keeps a
//! listener that hands what arrives to a `ChangeSink` (the domain's caches and
//! watchers), and says when it cannot be trusted: while it is down notifications may be
//! missed, and when it comes back everything may have changed.
//!
//! Two small traits are the whole interface: PostgreSQL NOTIFY (`postgres.rs`, the
//! default) or NATS (`nats.rs`, `--fanout-url nats://…`) when replicas outgrow it. On
//! SQLite there is one process and nothing to fan out: `Local`.

pub mod nats;
pub mod postgres;

use tokio::sync::mpsc;

use crate::model::{Side, SummaryKey};

/// How replicas hear each other's changes: PostgreSQL's NOTIFY, or NATS.
pub enum Fanout {
    Postgres(postgres::PgFanout),
    Nats(nats::NatsFanout),
}

impl Fanout {
    /// Starts the fan-out `fanout_url` names (NATS when it is `nats://…`, else NOTIFY on
    /// it, or on `database_url` when none is given), sending what is `queued` and
    /// handing what other replicas publish to `sink`.
    pub async fn start(
        database_url: &str,
        fanout_url: Option<&str>,
        heartbeat: std::time::Duration,
        queued: Queued,
        sink: std::sync::Arc<dyn ChangeSink>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, String> {
        Ok(match fanout_url {
            Some(url) if is_nats(url) => Fanout::Nats(
                nats::NatsFanout::start(
                    nats::NatsConfig {
                        url: url.to_owned(),
                        heartbeat,
                    },
                    queued,
                    sink,
                    stopping,
                )
                .await?,
            ),
            direct => Fanout::Postgres(postgres::PgFanout::start(
                postgres::FanoutConfig {
                    url: direct.unwrap_or(database_url).to_owned(),
                    heartbeat,
                },
                queued,
                sink,
                stopping,
            )),
        })
    }

    /// Stops its tasks now (shutdown, after `stopping` was sent).
    pub fn abort(&self) {
        match self {
            Fanout::Postgres(fanout) => fanout.abort(),
            Fanout::Nats(fanout) => fanout.abort(),
        }
    }
}

/// Whether a `--fanout-url` names NATS (else it is PostgreSQL's NOTIFY).
pub fn is_nats(url: &str) -> bool {
    url.starts_with("nats://")
}

/// Sends changed summaries to the other replicas, after commit. Never blocks and never
/// fails the write: a key that cannot be sent is covered by the listeners' resync.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, keys: &[SummaryKey]);
}

/// What a replica's listener learns, in order.
pub trait ChangeSink: Send + Sync + 'static {
    /// These summaries changed on some replica.
    fn changed(&self, keys: &[SummaryKey]);
    /// The fan-out is connected again (or for the first time): anything may have changed
    /// while it was not, so nothing learned before can be trusted.
    fn connected(&self);
    /// The fan-out is down: changes made elsewhere may go unheard until `connected`.
    fn disconnected(&self);
}

/// One process, nothing to tell: the domain's own writes are all there is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl Publisher for Local {
    fn publish(&self, _keys: &[SummaryKey]) {}
}

/// The publishing half of a fan-out: hands keys to its sending task, never waiting.
#[derive(Clone)]
pub struct QueuedPublisher {
    keys: mpsc::UnboundedSender<SummaryKey>,
}

/// Keys published and not yet sent: what the sending task takes over.
pub struct Queued(pub mpsc::UnboundedReceiver<SummaryKey>);

impl QueuedPublisher {
    /// A publisher, and the queue its fan-out's sender sends from.
    pub fn new() -> (Self, Queued) {
        let (keys, queued) = mpsc::unbounded_channel();
        (Self { keys }, Queued(queued))
    }
}

impl Publisher for QueuedPublisher {
    fn publish(&self, keys: &[SummaryKey]) {
        for key in keys {
            // Only fails once the sender stopped, at shutdown.
            let _ = self.keys.send(*key);
        }
    }
}

/// Most keys one batch gathers before it is sent.
pub const MAX_BATCH: usize = 20_000;

/// The payload that means "everything may have changed": a publisher sends it when it
/// could not send some keys, so every listener resyncs instead of missing them.
pub const RESYNC: &str = "*";

/// The payload of a heartbeat: it proves a listener's connection still delivers.
pub const HEARTBEAT: &str = "";

/// Longest payload PostgreSQL NOTIFY takes is 8000 bytes; stay clear of it.
pub const MAX_PAYLOAD: usize = 7900;

/// Encodes keys as payloads of at most `MAX_PAYLOAD` bytes: `42:t,7:s,…`.
pub fn encode(keys: impl IntoIterator<Item = SummaryKey>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut payload = String::new();
    for key in keys {
        let side = match key.side {
            Side::Tutor => 't',
            Side::Student => 's',
        };
        let item = format!("{}:{side}", key.user_id);
        if !payload.is_empty() && payload.len() + 1 + item.len() > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut payload));
        }
        if !payload.is_empty() {
            payload.push(',');
        }
        payload.push_str(&item);
    }
    if !payload.is_empty() {
        payloads.push(payload);
    }
    payloads
}

/// What one payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Heartbeat,
    Resync,
    Changed(Vec<SummaryKey>),
}

/// Reads a payload back. Malformed items are skipped (and a payload with only those
/// asks for a resync: something changed, and it is unknown what).
pub fn decode(payload: &str) -> Message {
    match payload {
        HEARTBEAT => return Message::Heartbeat,
        RESYNC => return Message::Resync,
        _ => {}
    }
    let keys: Vec<SummaryKey> = payload
        .split(',')
        .filter_map(|item| {
            let (user, side) = item.split_once(':')?;
            let side = match side {
                "t" => Side::Tutor,
                "s" => Side::Student,
                _ => return None,
            };
            Some(SummaryKey::new(user.parse().ok()?, side))
        })
        .collect();
    if keys.is_empty() {
        Message::Resync
    } else {
        Message::Changed(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_within_the_limit() {
        let keys: Vec<SummaryKey> = (1..=2000)
            .map(|user| {
                SummaryKey::new(
                    1_000_000_000 + user,
                    if user % 2 == 0 {
                        Side::Tutor
                    } else {
                        Side::Student
                    },
                )
            })
            .collect();
        let payloads = encode(keys.clone());
        assert!(payloads.len() > 1, "2000 keys do not fit one payload");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let decoded: Vec<SummaryKey> = payloads
            .iter()
            .flat_map(|p| match decode(p) {
                Message::Changed(keys) => keys,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(decoded, keys);
    }

    #[test]
    fn special_and_malformed_payloads() {
        assert_eq!(decode(HEARTBEAT), Message::Heartbeat);
        assert_eq!(decode(RESYNC), Message::Resync);
        assert_eq!(decode("nonsense"), Message::Resync);
        assert_eq!(
            decode("42:t,x:y"),
            Message::Changed(vec![SummaryKey::new(42, Side::Tutor)])
        );
    }
}
