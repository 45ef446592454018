//! How replicas tell each other what changed, off the commit path: which unread
//! summaries, which threads' logs grew (and to which version), and who is typing where.
//!
//! A write commits first; then the changes it made go to this replica's `Publisher`,
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

/// One change a replica tells the others of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// A user's unread summary changed.
    Summary(SummaryKey),
    /// A thread's log reached `version`.
    Thread { thread_id: i64, version: i64 },
    /// A participant of a thread is typing until `until_ms` (Unix ms). Never stored.
    Typing {
        thread_id: i64,
        side: Side,
        until_ms: i64,
    },
}

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

/// Sends changes to the other replicas, after commit. Never blocks and never fails the
/// write: a change that cannot be sent is covered by the listeners' resync.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, changes: &[Change]);
}

/// What a replica's listener learns, in order.
pub trait ChangeSink: Send + Sync + 'static {
    /// These changed on some replica.
    fn changed(&self, changes: &[Change]);
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
    fn publish(&self, _changes: &[Change]) {}
}

/// The publishing half of a fan-out: hands changes to its sending task, never waiting.
#[derive(Clone)]
pub struct QueuedPublisher {
    changes: mpsc::UnboundedSender<Change>,
}

/// Changes published and not yet sent: what the sending task takes over.
pub struct Queued(pub mpsc::UnboundedReceiver<Change>);

impl QueuedPublisher {
    /// A publisher, and the queue its fan-out's sender sends from.
    pub fn new() -> (Self, Queued) {
        let (changes, queued) = mpsc::unbounded_channel();
        (Self { changes }, Queued(queued))
    }
}

impl Publisher for QueuedPublisher {
    fn publish(&self, changes: &[Change]) {
        for change in changes {
            // Only fails once the sender stopped, at shutdown.
            let _ = self.changes.send(*change);
        }
    }
}

/// Most changes one batch gathers before it is sent.
pub const MAX_BATCH: usize = 20_000;

/// The payload that means "everything may have changed": a publisher sends it when it
/// could not send some keys, so every listener resyncs instead of missing them.
pub const RESYNC: &str = "*";

/// The payload of a heartbeat: it proves a listener's connection still delivers.
pub const HEARTBEAT: &str = "";

/// Longest payload PostgreSQL NOTIFY takes is 8000 bytes; stay clear of it.
pub const MAX_PAYLOAD: usize = 7900;

fn side_letter(side: Side) -> char {
    match side {
        Side::Tutor => 't',
        Side::Student => 's',
    }
}

fn side_of_letter(letter: &str) -> Option<Side> {
    match letter {
        "t" => Some(Side::Tutor),
        "s" => Some(Side::Student),
        _ => None,
    }
}

/// Encodes changes as payloads of at most `MAX_PAYLOAD` bytes, comma-separated: a
/// summary as `42:t` (user 42, tutor side), a thread's log as `T5@12` (thread 5 at
/// version 12), typing as `Y5:s@1733300000000` (the student of thread 5, until then).
pub fn encode(changes: impl IntoIterator<Item = Change>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut payload = String::new();
    for change in changes {
        let item = match change {
            Change::Summary(key) => format!("{}:{}", key.user_id, side_letter(key.side)),
            Change::Thread { thread_id, version } => format!("T{thread_id}@{version}"),
            Change::Typing {
                thread_id,
                side,
                until_ms,
            } => format!("Y{thread_id}:{}@{until_ms}", side_letter(side)),
        };
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
    Changed(Vec<Change>),
}

/// Reads one item of a payload back.
fn decode_item(item: &str) -> Option<Change> {
    if let Some(thread) = item.strip_prefix('T') {
        let (thread_id, version) = thread.split_once('@')?;
        return Some(Change::Thread {
            thread_id: thread_id.parse().ok()?,
            version: version.parse().ok()?,
        });
    }
    if let Some(typing) = item.strip_prefix('Y') {
        let (who, until_ms) = typing.split_once('@')?;
        let (thread_id, side) = who.split_once(':')?;
        return Some(Change::Typing {
            thread_id: thread_id.parse().ok()?,
            side: side_of_letter(side)?,
            until_ms: until_ms.parse().ok()?,
        });
    }
    let (user, side) = item.split_once(':')?;
    Some(Change::Summary(SummaryKey::new(
        user.parse().ok()?,
        side_of_letter(side)?,
    )))
}

/// Reads a payload back. Malformed items are skipped (and a payload with only those
/// asks for a resync: something changed, and it is unknown what).
pub fn decode(payload: &str) -> Message {
    match payload {
        HEARTBEAT => return Message::Heartbeat,
        RESYNC => return Message::Resync,
        _ => {}
    }
    let changes: Vec<Change> = payload.split(',').filter_map(decode_item).collect();
    if changes.is_empty() {
        Message::Resync
    } else {
        Message::Changed(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_within_the_limit() {
        let keys: Vec<Change> = (1..=2000)
            .map(|user| {
                let side = if user % 2 == 0 {
                    Side::Tutor
                } else {
                    Side::Student
                };
                match user % 3 {
                    0 => Change::Summary(SummaryKey::new(1_000_000_000 + user, side)),
                    1 => Change::Thread {
                        thread_id: user,
                        version: 1_000_000 + user,
                    },
                    _ => Change::Typing {
                        thread_id: user,
                        side,
                        until_ms: 1_733_300_000_000 + user,
                    },
                }
            })
            .collect();
        let payloads = encode(keys.clone());
        assert!(payloads.len() > 1, "2000 changes do not fit one payload");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let decoded: Vec<Change> = payloads
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
            decode("42:t,x:y,T7@,Y7:q@1"),
            Message::Changed(vec![Change::Summary(SummaryKey::new(42, Side::Tutor))])
        );
    }
}
