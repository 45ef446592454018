//! What `chatd serve` runs with, and the one place it is checked: every rule about
//! which settings go together lives in `ServeConfig::validate`, whatever set them (the
//! command line, its environment twins, a test, an embedding program).

use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::limits::SendLimit;
use crate::net::ConnectionLimits;
use crate::storage::{DatabaseUrl, PoolConfig, Pooler};
use crate::summaries::{CacheConfig, WatchLimits};

/// Everything `chatd serve` needs to know.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    pub pool: PoolConfig,
    pub auth: AuthConfig,
    /// How often health re-checks that the database answers.
    pub health_interval: Duration,
    /// The in-process REST gateway's address; `None` serves gRPC only.
    pub http: Option<SocketAddr>,
    /// CORS origins and upstream timeout of the in-process gateway.
    pub cors_allowed_origins: Vec<String>,
    pub upstream_timeout: Duration,
    /// Limits on WatchUnreadSummary streams.
    pub watch_limits: WatchLimits,
    /// How long a watcher lets a burst of changes gather before it sends.
    pub watch_coalesce: Duration,
    /// How long a thread stream waits for its reader to make room in its buffer before
    /// it ends the stream with STREAM_TOO_SLOW.
    pub watch_stall_timeout: Duration,
    /// A listener serving only Prometheus `/metrics`; `None` for none (the REST port
    /// serves `/metrics` too).
    pub metrics: Option<SocketAddr>,
    /// Where the PostgreSQL change fan-out connects (default: the database URL).
    pub fanout_url: Option<String>,
    /// How often the fan-out proves it is alive.
    pub fanout_heartbeat: Duration,
    /// The size of the summary cache (0 turns it off) and how often it is swept.
    pub summary_cache: CacheConfig,
    /// How every listener treats its connections (cap, handshake and idle timeouts).
    pub connections: ConnectionLimits,
    /// The longest a chat.v1 call may run before it answers DEADLINE_EXCEEDED; the
    /// client's `grpc-timeout` shortens it. PostgreSQL statements get the same bound.
    pub call_timeout: Duration,
    /// How fast each user may send and edit messages, on this replica.
    pub send_limit: SendLimit,
    /// Events out: sinks, reminders, retention.
    pub events: EventsConfig,
}

/// Where events go besides StreamEvents, and how long the log keeps them.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// A NATS server with JetStream (`nats://host:port`) events are published to.
    pub nats_url: Option<String>,
    /// The JetStream stream chatd declares there.
    pub nats_stream: String,
    /// A webhook endpoint events are posted to, signed.
    pub webhook: Option<WebhookConfig>,
    /// How long a message stays unread before its reader is reminded; zero: never.
    pub unread_reminder_after: Duration,
    /// How many threads (by id) one round of reminders looks through: on SQLite a round
    /// holds the one writer, so it reads a few thousand participants at most, however
    /// few of them are due. Not a flag: tests shrink it to make rounds of a few threads.
    pub unread_reminder_window: i64,
    /// How long the log keeps an event.
    pub retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_stream: DEFAULT_EVENTS_STREAM.to_owned(),
            webhook: None,
            unread_reminder_after: Duration::from_secs(600),
            unread_reminder_window: 5_000,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The JetStream stream's name when none is given.
pub const DEFAULT_EVENTS_STREAM: &str = "CHATD_EVENTS";

/// A webhook endpoint and the secrets its batches are signed with.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: http::Uri,
    /// Each secret's key (the bytes of `whsec_<base64>`); several while one rotates.
    pub secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl WebhookConfig {
    /// `--webhook-url` and `--webhook-secret` (comma-separated `whsec_<base64>` keys).
    pub fn parse(url: &str, secrets: &str) -> Result<Self, String> {
        use base64::Engine;
        let url: http::Uri = url
            .parse()
            .map_err(|e| format!("--webhook-url {url:?} is not a URL: {e}"))?;
        match url.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("--webhook-url: chatd posts plain http:// only; put an egress                             proxy or sidecar that speaks TLS in front of an https endpoint"
                    .into());
            }
            _ => return Err(format!("--webhook-url {url} must start with http://")),
        }
        if url.host().is_none() {
            return Err(format!("--webhook-url {url} names no host"));
        }
        let secrets = secrets
            .split(',')
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(|secret| {
                let encoded = secret.strip_prefix("whsec_").ok_or_else(|| {
                    "--webhook-secret must be whsec_<base64> (the Standard Webhooks form), \
                     e.g. whsec_ followed by 24 or more random bytes in base64"
                        .to_owned()
                })?;
                let key = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| {
                        format!("--webhook-secret: the part after whsec_ is not base64: {e}")
                    })?;
                if key.len() < 16 {
                    return Err("--webhook-secret: use at least 16 random bytes".to_owned());
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, String>>()?;
        if secrets.is_empty() {
            return Err(
                "--webhook-url needs --webhook-secret: receivers verify every batch".into(),
            );
        }
        Ok(Self { url, secrets })
    }
}

impl ServeConfig {
    /// Refuses settings that cannot work, or not together, each with what to do.
    pub fn validate(&self) -> Result<(), String> {
        if self.pool.max_size == 0 {
            return Err("--db-pool-size must be at least 1".into());
        }
        if self.summary_cache.sweep.is_zero() {
            return Err("--summary-cache-sweep must be more than 0s".into());
        }
        if self.watch_stall_timeout.is_zero() {
            return Err("--watch-stall-timeout must be more than 0s".into());
        }
        if self.fanout_heartbeat.is_zero() {
            return Err("--fanout-heartbeat must be more than 0s".into());
        }
        if self.call_timeout.is_zero() {
            return Err("--call-timeout must be more than 0s".into());
        }
        let rate = self.send_limit.per_second;
        if !(rate.is_finite() && rate >= 0.0) {
            return Err("--user-send-rate must be 0 (off) or a positive number per second".into());
        }
        if rate > 0.0 && self.send_limit.burst == 0 {
            return Err("--user-send-burst must be at least 1 while --user-send-rate is on".into());
        }
        if self.events.retention.is_zero() {
            return Err("--events-retention must be more than 0s".into());
        }
        if let Some(url) = &self.events.nats_url
            && !crate::fanout::is_nats(url)
        {
            return Err(format!("--events-url {url:?} must be nats://host:port"));
        }
        if self.events.nats_stream.is_empty()
            || !self
                .events
                .nats_stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(
                "--events-stream must be letters, digits, '_' and '-' (a JetStream stream name)"
                    .into(),
            );
        }
        if let (DatabaseUrl::Sqlite(_), Some(_)) = (&self.database, &self.fanout_url) {
            return Err(
                "--fanout-url is for PostgreSQL replicas: one SQLite process has no \
                        other replica to hear"
                    .into(),
            );
        }
        if self.pool.pooler == Pooler::Transaction {
            let (DatabaseUrl::Postgres(_), Some(direct)) = (&self.database, &self.fanout_url)
            else {
                return Err(
                    "--db-pooler transaction needs PostgreSQL and --fanout-url set to \
                            the database's direct URL: LISTEN and the migration lock need a \
                            session, which a transaction-mode pooler does not keep"
                        .into(),
                );
            };
            if crate::fanout::is_nats(direct) {
                return Err(
                    "--db-pooler transaction with a NATS fan-out: run `chatd migrate` \
                            against the database's direct URL, and give this server a direct \
                            PostgreSQL --fanout-url, or no pooler"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(database: &str) -> ServeConfig {
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: DatabaseUrl::parse(database).unwrap(),
            pool: PoolConfig {
                max_size: 4,
                timeout: Duration::from_secs(1),
                statement_timeout: None,
                pooler: Pooler::None,
                sqlite_sync: Default::default(),
            },
            auth: AuthConfig::default(),
            health_interval: Duration::from_secs(1),
            http: None,
            cors_allowed_origins: Vec::new(),
            upstream_timeout: Duration::from_secs(1),
            watch_limits: WatchLimits {
                per_user: 1,
                total: 1,
            },
            watch_coalesce: Duration::ZERO,
            watch_stall_timeout: Duration::from_secs(1),
            metrics: None,
            fanout_url: None,
            fanout_heartbeat: Duration::from_secs(1),
            summary_cache: CacheConfig {
                budget_bytes: 0,
                sweep: Duration::from_secs(1),
            },
            connections: ConnectionLimits::default(),
            events: EventsConfig::default(),
            call_timeout: Duration::from_secs(1),
            send_limit: SendLimit::OFF,
        }
    }

    #[test]
    fn settings_that_go_together() {
        assert_eq!(config("sqlite://x.db").validate(), Ok(()));
        let mut sqlite_fanout = config("sqlite://x.db");
        sqlite_fanout.fanout_url = Some("nats://127.0.0.1:4222".into());
        assert!(
            sqlite_fanout
                .validate()
                .unwrap_err()
                .contains("--fanout-url")
        );
        let mut pooled = config("postgres://u@h/db");
        pooled.pool.pooler = Pooler::Transaction;
        assert!(pooled.validate().unwrap_err().contains("--fanout-url"));
        pooled.fanout_url = Some("nats://h:4222".into());
        assert!(pooled.validate().unwrap_err().contains("chatd migrate"));
        pooled.fanout_url = Some("postgres://u@direct/db".into());
        assert_eq!(pooled.validate(), Ok(()));
    }

    #[test]
    fn settings_that_cannot_work() {
        let mut zero = config("sqlite://x.db");
        zero.pool.max_size = 0;
        assert!(zero.validate().unwrap_err().contains("--db-pool-size"));
        let mut rate = config("sqlite://x.db");
        rate.send_limit = SendLimit {
            per_second: f64::NAN,
            burst: 1,
        };
        assert!(rate.validate().unwrap_err().contains("--user-send-rate"));
        rate.send_limit = SendLimit {
            per_second: 2.0,
            burst: 0,
        };
        assert!(rate.validate().unwrap_err().contains("--user-send-burst"));
        let mut timeout = config("sqlite://x.db");
        timeout.call_timeout = Duration::ZERO;
        assert!(timeout.validate().unwrap_err().contains("--call-timeout"));
    }
}
