//! The `chatd` command line: subcommands, flags and their `CHATD_*` environment twins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::ServeConfig;
use crate::auth::AuthConfig;
use crate::domain::Role;
use crate::http::GatewayConfig;
use crate::limits::SendLimit;
use crate::net::ConnectionLimits;
use crate::storage::{DatabaseUrl, PoolConfig, Pooler, SqliteSync};
use crate::summaries::{CacheConfig, WatchLimits};
use crate::telemetry::LogFormat;

mod bench;
pub use bench::BenchArgs;

/// chatd: chat threads between tutors and students, and their unread counts, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "chatd", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as human-readable text or JSON (with trace_id and span_id when tracing).
    /// Tracing exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; level from RUST_LOG.
    #[arg(
        long,
        global = true,
        env = "CHATD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service (health, reflection) and, unless --http off, the REST gateway;
    /// migrates the database first.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print a signed JWT for development and grpcurl (uses the same key as `serve`).
    Token(TokenArgs),
    /// Run the REST/JSON gateway alone, translating the web API into gRPC calls to chatd.
    Gateway(GatewayArgs),
    /// Seed a synthetic dataset and load-test a running chatd: per RPC, the polling mix
    /// (--poll), summary streams (--watchers), open chat windows (--windows) or events
    /// out (--events-receiver); prints rates and latency beside Check.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Database: postgres://user@host/db (PostgreSQL) or sqlite://path (embedded SQLite).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://chatd.db")]
    pub database_url: String,
}

impl DatabaseArgs {
    pub fn parse_url(&self) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse(&self.database_url)
    }
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    /// HS256 secret for bearer tokens (at least 32 bytes). Unset with SQLite: a random
    /// secret kept in --jwt-secret-file. With PostgreSQL, every replica must be given the
    /// same key: this, --jwt-secret-file or --jwt-public-key (serve refuses to start
    /// without one).
    #[arg(long, env = "CHATD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the HS256 secret; with SQLite, `serve` creates it when missing
    /// (`token` and `bench` only read it) [default: <sqlite path>.jwt-secret, or
    /// ./chatd.jwt-secret with PostgreSQL, which must exist].
    #[arg(long, env = "CHATD_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key (RSA or EC) to verify RS256/ES256 tokens instead of HS256.
    #[arg(long, env = "CHATD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "CHATD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "CHATD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed between the token issuer and chatd: a token is honoured until
    /// its `exp` plus this (and from its `nbf` minus this). Streams end at that time
    /// with UNAUTHENTICATED TOKEN_EXPIRED. 0s reads `exp` and `nbf` exactly.
    #[arg(long, env = "CHATD_TOKEN_LEEWAY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub token_leeway: Duration,
}

impl AuthArgs {
    pub fn config(&self) -> AuthConfig {
        AuthConfig {
            secret: self.jwt_secret.clone(),
            secret_file: self.jwt_secret_file.clone(),
            public_key_file: self.jwt_public_key.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.token_leeway,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener.
    #[arg(long, env = "CHATD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Most database connections held open.
    #[arg(long, env = "CHATD_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// PostgreSQL only: `transaction` when --database-url goes through a pooler in
    /// transaction mode (pgbouncer's pool_mode = transaction). Every call then runs in a
    /// transaction of its own with no prepared statement kept past it, and migrations
    /// and LISTEN use --fanout-url, which must then be the database's direct URL.
    #[arg(long, env = "CHATD_DB_POOLER", value_enum, default_value_t = PoolerArg::None)]
    pub db_pooler: PoolerArg,
    /// SQLite only: `normal` acknowledges a write once it is in the WAL, which is synced
    /// at each checkpoint: it survives chatd being killed; a power loss or an operating
    /// system crash can lose the last writes, never the file. `full` syncs every group
    /// commit before answering: writes survive a power loss too, for one fsync each
    /// (docs/operations.md, "SQLite durability", gives its cost).
    #[arg(long, env = "CHATD_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSyncArg::Normal)]
    pub sqlite_synchronous: SqliteSyncArg,
    /// How long a call waits for a database connection before it fails UNAVAILABLE.
    #[arg(long, env = "CHATD_DB_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_timeout: Duration,
    /// The longest a call may run before it answers DEADLINE_EXCEEDED (a stream: before
    /// it starts); a client's shorter grpc-timeout wins. PostgreSQL statements are cut
    /// off at the same bound (statement_timeout).
    #[arg(long, env = "CHATD_CALL_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,
    /// How often health checks that the database answers.
    #[arg(long, env = "CHATD_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// Most streams one user may hold open (per role): WatchUnreadSummary and
    /// WatchThread, gRPC and SSE, together.
    #[arg(long, env = "CHATD_WATCH_MAX_PER_USER", default_value_t = 8)]
    pub watch_max_per_user: usize,
    /// Most streams open on this server (summary and thread streams together).
    #[arg(long, env = "CHATD_WATCH_MAX_TOTAL", default_value_t = 20_000)]
    pub watch_max_total: usize,
    /// How long a watcher lets a burst of changes gather into one update.
    #[arg(long, env = "CHATD_WATCH_COALESCE", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub watch_coalesce: Duration,
    /// How long a thread stream (WatchThread) waits for its reader while its buffer of
    /// 256 events is full; then it ends with STREAM_TOO_SLOW and the client resumes
    /// from its last version.
    #[arg(long, env = "CHATD_WATCH_STALL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub watch_stall_timeout: Duration,
    /// Address of the in-process REST gateway, or `off` to serve gRPC only.
    #[arg(long, env = "CHATD_HTTP", default_value = "127.0.0.1:8080")]
    pub http: HttpListen,
    /// Address of a listener serving only Prometheus /metrics, or `off` (the REST port
    /// serves /metrics too).
    #[arg(long, env = "CHATD_METRICS", default_value = "off")]
    pub metrics: HttpListen,
    /// PostgreSQL only: where replicas publish and hear each other's changes, picked by
    /// its scheme: `nats://host:port` (a NATS server; no database connection held), or
    /// `postgres://…` (NOTIFY and LISTEN; a direct route when --database-url goes
    /// through a pooler that cannot LISTEN). Default: NOTIFY on --database-url.
    #[arg(long, env = "CHATD_FANOUT_URL", hide_env_values = true)]
    pub fanout_url: Option<String>,
    /// PostgreSQL only: how often the fan-out sends a heartbeat; a replica that hears
    /// none for three of them reconnects and reads summaries from the database meanwhile.
    #[arg(long, env = "CHATD_FANOUT_HEARTBEAT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub fanout_heartbeat: Duration,
    /// Memory for the cache of recently read unread summaries, in MiB; 0 turns it
    /// off. A hit costs no database round trip. Size it to the users who poll: about
    /// 1.2 KiB a user with a few unread threads (docs/performance.md, "Sizing the summary cache").
    /// [default: a quarter of the memory this process may use (its cgroup's limit, else
    /// the machine's), from 16 to 256 MiB]
    #[arg(long, env = "CHATD_SUMMARY_CACHE_MIB")]
    pub summary_cache_mib: Option<u64>,
    /// How often every cached summary's version is compared with the database's, to
    /// drop those a lost notification left stale: the longest an entry can stay stale.
    #[arg(long, env = "CHATD_SUMMARY_CACHE_SWEEP", default_value = "5s", value_parser = humantime::parse_duration)]
    pub summary_cache_sweep: Duration,
    /// Messages (sends and edits) one user may make per second on this replica, on
    /// average; over it, RESOURCE_EXHAUSTED RATE_LIMITED (REST 429) with when to retry.
    /// 0 turns the limit off.
    #[arg(long, env = "CHATD_USER_SEND_RATE", default_value_t = 5.0)]
    pub user_send_rate: f64,
    /// Messages one user may make at once before the rate applies.
    #[arg(long, env = "CHATD_USER_SEND_BURST", default_value_t = 30)]
    pub user_send_burst: u32,
    /// Publishes every event to this NATS server's JetStream (`nats://host:port`), to
    /// subject chat.events.<type> with Nats-Msg-Id = the event's id. One replica relays
    /// at a time; a NATS outage delays events and loses none. Default: not published.
    #[arg(long, env = "CHATD_EVENTS_URL", hide_env_values = true)]
    pub events_url: Option<String>,
    /// The JetStream stream chatd declares for --events-url (subjects chat.events.>).
    #[arg(long, env = "CHATD_EVENTS_STREAM", default_value = crate::config::DEFAULT_EVENTS_STREAM)]
    pub events_stream: String,
    /// Posts every event to this http:// endpoint in CloudEvents batches of up to 100,
    /// signed as Standard Webhooks says; retried in order with backoff (1 s to 5 min)
    /// until a 2xx. Needs --webhook-secret.
    #[arg(long, env = "CHATD_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// The webhook's signing secret, whsec_<base64>; several, comma-separated, while one
    /// rotates (each batch then carries a signature by each).
    #[arg(long, env = "CHATD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// How long a message may stay unread before one chat.unread.reminder event is
    /// written for its reader's thread (once per unread spell, never for a muted
    /// thread); 0 turns reminders off.
    #[arg(long, env = "CHATD_UNREAD_REMINDER_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub unread_reminder_after: Duration,
    /// How long the event log keeps an event; StreamEvents from an older position is
    /// EVENTS_EXPIRED, and a sink that falls this far behind skips what was trimmed.
    #[arg(long, env = "CHATD_EVENTS_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub events_retention: Duration,
    #[command(flatten)]
    pub gateway: GatewayOptions,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Where an HTTP listener goes, or `off`.
#[derive(Debug, Clone, Copy)]
pub enum HttpListen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(HttpListen::Off);
        }
        value
            .parse()
            .map(HttpListen::On)
            .map_err(|_| format!("expected an address like 127.0.0.1:8080, or off; got {value:?}"))
    }
}

/// How a server treats its clients' connections (every listener of the process).
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Most connections open at once on each listener; more wait in the kernel's
    /// backlog until one closes. Each takes a file descriptor.
    #[arg(long, env = "CHATD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How long a new connection may take to send its first bytes (and an HTTP/1
    /// request its head) before it is closed.
    #[arg(long, env = "CHATD_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// How long a connection may go with no bytes either way before it is closed.
    /// HTTP/2 keepalive pings (every 30 s) keep open streams above it.
    #[arg(long, env = "CHATD_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// How long a REST request's body may take to arrive whole once its head has; past
    /// it the answer is 408 REQUEST_TIMEOUT and the connection closes.
    #[arg(long, env = "CHATD_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
}

impl ConnectionArgs {
    pub fn limits(&self) -> Result<ConnectionLimits, String> {
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.handshake_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.body_timeout.is_zero()
        {
            return Err(
                "--handshake-timeout, --idle-timeout and --body-timeout must be more than 0s"
                    .into(),
            );
        }
        Ok(ConnectionLimits {
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
        })
    }
}

/// Options of the REST gateway, in-process or standalone.
#[derive(Debug, Args)]
pub struct GatewayOptions {
    /// Origins allowed to call the REST API from a browser (comma-separated); none: CORS off.
    #[arg(
        long = "cors-allow-origin",
        env = "CHATD_CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
    /// How long one gRPC call to chatd may take before the REST client gets 504.
    #[arg(long, env = "CHATD_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// chatd's gRPC address.
    #[arg(long, env = "CHATD_UPSTREAM", default_value = "http://127.0.0.1:50051")]
    pub upstream: String,
    /// Address of the REST listener.
    #[arg(long, env = "CHATD_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub options: GatewayOptions,
}

impl GatewayArgs {
    pub fn config(&self) -> Result<GatewayConfig, String> {
        Ok(GatewayConfig {
            listen: self.listen,
            upstream: self.upstream.clone(),
            upstream_timeout: self.options.upstream_timeout,
            cors_allowed_origins: self.options.cors_allowed_origins.clone(),
            connections: self.options.connections.limits()?,
        })
    }
}

impl ServeArgs {
    /// The configuration these flags give, checked (`ServeConfig::validate`).
    pub fn config(&self) -> Result<ServeConfig, String> {
        let config = self.unchecked()?;
        config.validate()?;
        Ok(config)
    }

    fn unchecked(&self) -> Result<ServeConfig, String> {
        Ok(ServeConfig {
            listen: self.listen,
            database: self.database.parse_url()?,
            pool: PoolConfig {
                max_size: self.db_pool_size,
                timeout: self.db_timeout,
                statement_timeout: Some(self.call_timeout),
                pooler: self.db_pooler.into(),
                sqlite_sync: self.sqlite_synchronous.into(),
            },
            auth: self.auth.config(),
            health_interval: self.health_interval,
            http: match self.http {
                HttpListen::Off => None,
                HttpListen::On(addr) => Some(addr),
            },
            cors_allowed_origins: self.gateway.cors_allowed_origins.clone(),
            upstream_timeout: self.gateway.upstream_timeout,
            watch_limits: WatchLimits {
                per_user: self.watch_max_per_user,
                total: self.watch_max_total,
            },
            watch_coalesce: self.watch_coalesce,
            watch_stall_timeout: self.watch_stall_timeout,
            metrics: match self.metrics {
                HttpListen::Off => None,
                HttpListen::On(addr) => Some(addr),
            },
            fanout_url: self.fanout_url.clone(),
            fanout_heartbeat: self.fanout_heartbeat,
            summary_cache: CacheConfig {
                budget_bytes: self
                    .summary_cache_mib
                    .unwrap_or_else(|| default_summary_cache_mib(memory_limit_bytes()))
                    .saturating_mul(1 << 20),
                sweep: self.summary_cache_sweep,
            },
            connections: self.gateway.connections.limits()?,
            call_timeout: self.call_timeout,
            send_limit: SendLimit {
                per_second: self.user_send_rate,
                burst: self.user_send_burst,
            },
            events: crate::config::EventsConfig {
                nats_url: self.events_url.clone(),
                nats_stream: self.events_stream.clone(),
                webhook: match (&self.webhook_url, &self.webhook_secret) {
                    (Some(url), Some(secret)) => {
                        Some(crate::config::WebhookConfig::parse(url, secret)?)
                    }
                    (Some(_), None) => {
                        return Err("--webhook-url needs --webhook-secret (whsec_<base64>): \
                                    receivers verify every batch"
                            .into());
                    }
                    (None, Some(_)) => {
                        return Err("--webhook-secret is set without --webhook-url".into());
                    }
                    (None, None) => None,
                },
                unread_reminder_after: self.unread_reminder_after,
                retention: self.events_retention,
                ..crate::config::EventsConfig::default()
            },
        })
    }
}

/// The summary cache's size when none is given: a quarter of `limit` (the memory this
/// process may use), from 16 to 256 MiB. 256 MiB holds about 200,000 polling users.
pub fn default_summary_cache_mib(limit: Option<u64>) -> u64 {
    const QUARTER_OF_UNKNOWN: u64 = 64;
    limit
        .map_or(QUARTER_OF_UNKNOWN, |bytes| (bytes / 4) >> 20)
        .clamp(16, 256)
}

/// The memory this process may use: its cgroup's limit (v2, then v1), else the
/// machine's memory; `None` when neither can be read.
fn memory_limit_bytes() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    // cgroup v2 says "max" when unlimited; v1 gives a huge number instead.
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| text.trim().parse::<u64>().ok());
    let machine = read("/proc/meminfo").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    match (cgroup, machine) {
        (Some(cgroup), Some(machine)) => Some(cgroup.min(machine)),
        (cgroup, machine) => cgroup.or(machine),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolerArg {
    /// chatd connects to PostgreSQL directly (or through a session-mode pooler).
    None,
    /// Through a transaction-mode pooler such as pgbouncer.
    Transaction,
}

impl From<PoolerArg> for Pooler {
    fn from(pooler: PoolerArg) -> Self {
        match pooler {
            PoolerArg::None => Pooler::None,
            PoolerArg::Transaction => Pooler::Transaction,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSyncArg {
    /// Synced at each checkpoint (SQLite's synchronous = NORMAL).
    Normal,
    /// Synced at each commit (synchronous = FULL).
    Full,
}

impl From<SqliteSyncArg> for SqliteSync {
    fn from(sync: SqliteSyncArg) -> Self {
        match sync {
            SqliteSyncArg::Normal => SqliteSync::Normal,
            SqliteSyncArg::Full => SqliteSync::Full,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Tutor,
    Student,
    Service,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Tutor => Role::Tutor,
            RoleArg::Student => Role::Student,
            RoleArg::Service => Role::Service,
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id the token speaks for (the `sub` claim).
    #[arg(long)]
    pub sub: i64,
    /// Role of the caller: tutor and student call ChatService, service calls SyncService
    /// and EventService.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// How long the token stays valid (e.g. 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[cfg(test)]
mod tests {
    use super::default_summary_cache_mib;

    #[test]
    fn the_cache_defaults_to_a_quarter_of_the_memory_allowed_within_bounds() {
        const GIB: u64 = 1 << 30;
        assert_eq!(
            default_summary_cache_mib(Some(24 * GIB)),
            256,
            "a big machine"
        );
        assert_eq!(
            default_summary_cache_mib(Some(GIB / 2)),
            128,
            "a 512 MiB pod"
        );
        assert_eq!(default_summary_cache_mib(Some(GIB / 32)), 16, "a tiny one");
        assert_eq!(default_summary_cache_mib(None), 64, "unknown");
    }
}
