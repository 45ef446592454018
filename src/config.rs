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
