//! Where the data lives and how chatd connects to it: database URLs, connection pools
//! and their limits, and the embedded migrations.

use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncMigrationHarness, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StoreError;

pub type PgConn = diesel_async::AsyncPgConnection;
pub type SqliteReader =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Key of the PostgreSQL advisory lock that makes replicas starting together migrate
/// one at a time.
const MIGRATION_LOCK_KEY: i64 = 0x6368_6174_645f_6d69; // "chatd_mi"

/// Where the data lives, parsed from a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`, passed to the driver as is.
    Postgres(String),
    /// `sqlite://path` (relative to the working directory) or `sqlite:///abs/path`.
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite URL has no path: use sqlite://chatd.db".into());
            }
            Ok(DatabaseUrl::Sqlite(path.to_owned()))
        } else {
            Err(format!(
                "unsupported database URL {url:?}: use postgres://user@host/db or sqlite://path"
            ))
        }
    }
}

/// How to size and time out the connection pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_size: usize,
    /// How long a call waits for a connection (or to open one) before it is UNAVAILABLE.
    pub timeout: Duration,
    /// PostgreSQL only: the longest one statement may run (its `statement_timeout`);
    /// `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL only: what stands between chatd and the database.
    pub pooler: Pooler,
    /// SQLite only: when a commit is on the disk.
    pub sqlite_sync: SqliteSync,
}

/// When a SQLite commit is on the disk (its `synchronous` setting, in WAL mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// The commit is in the WAL, which is synced at each checkpoint: an acknowledged
    /// write survives the process being killed, and a power loss or an operating system
    /// crash can take the writes since the last checkpoint (never corrupting the file).
    #[default]
    Normal,
    /// Every commit syncs the WAL before it is acknowledged: a write survives a power
    /// loss too, for an fsync per group commit.
    Full,
}

impl SqliteSync {
    fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Normal => "NORMAL",
            SqliteSync::Full => "FULL",
        }
    }
}

/// What stands between chatd and PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pooler {
    /// Nothing, or a pooler in session mode: a connection is one server session.
    #[default]
    None,
    /// A pooler in transaction mode (pgbouncer's `pool_mode = transaction`): only a
    /// transaction stays on one server connection. chatd then runs every call in a
    /// transaction of its own, keeps no prepared statement past it, sets nothing per
    /// session, and migrates and listens over the direct URL (`--fanout-url`).
    Transaction,
}

/// TCP settings for PostgreSQL connections, unless the URL says otherwise: a database
/// host that vanishes (no FIN, no RST) is found in about 30 s by keepalive probes (15 s
/// idle, then 3 probes 5 s apart) instead of the kernel's two hours, and unacknowledged
/// sends give up after 30 s.
const POSTGRES_TCP_DEFAULTS: [(&str, &str); 4] = [
    ("keepalives_idle", "15"),
    ("keepalives_interval", "5"),
    ("keepalives_retries", "3"),
    ("tcp_user_timeout", "30"),
];

/// `url` with each of `POSTGRES_TCP_DEFAULTS` the URL does not set itself.
fn with_tcp_defaults(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let given: Vec<&str> = query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .collect();
    let mut url = url.to_owned();
    for (key, value) in POSTGRES_TCP_DEFAULTS {
        if !given.contains(&key) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{key}={value}"));
        }
    }
    url
}

/// A pool's connections and waiters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
}

impl PoolStatus {
    pub fn of(status: deadpool::managed::Status) -> Self {
        Self {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }
}

/// Applies the pool size and timeouts. Deadpool needs the runtime named for timeouts.
fn with_limits<C>(
    builder: deadpool::managed::PoolBuilder<AsyncDieselConnectionManager<C>>,
    config: &PoolConfig,
) -> deadpool::managed::PoolBuilder<AsyncDieselConnectionManager<C>>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    builder
        .max_size(config.max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
}

/// A lazy PostgreSQL pool: no connection opens until the first call, so chatd can start
/// (and report NOT_SERVING) while the database is down. Connections are handed out
/// without a liveness ping (`RecyclingMethod::Fast`: a ping per call would double the
/// round trips); see `forget_idle_on_outage` for what happens when they are dead.
///
/// Every connection gets the TCP keepalive of `POSTGRES_TCP_DEFAULTS` and the pool's
/// statement timeout, so neither a vanished host nor a stuck statement holds a call
/// (or a pooled connection) for longer.
pub fn postgres_pool(url: &str, config: &PoolConfig) -> Result<Pool<PgConn>, String> {
    let mut manager_config = ManagerConfig::<PgConn>::default();
    manager_config.recycling_method = RecyclingMethod::Fast;
    // Behind a transaction-mode pooler a session setting would land on whichever server
    // connection the pooler picked, and leak to other clients: the role's own
    // statement_timeout applies instead (README, PostgreSQL).
    let setup = config
        .statement_timeout
        .filter(|_| config.pooler == Pooler::None)
        .map(|timeout| format!("SET statement_timeout = {}", timeout.as_millis().max(1)));
    let pooler = config.pooler;
    manager_config.custom_setup = Box::new(move |url: &str| {
        let (url, setup) = (url.to_owned(), setup.clone());
        Box::pin(async move {
            use diesel_async::AsyncConnection;
            let mut conn = match pooler {
                Pooler::None => PgConn::establish(&url).await?,
                Pooler::Transaction => establish_behind_pooler(&url).await?,
            };
            if let Some(setup) = setup {
                conn.batch_execute(&setup)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<PgConn>::new_with_config(
        with_tcp_defaults(url),
        manager_config,
    );
    with_limits(Pool::builder(manager), config)
        .build()
        .map_err(|e| e.to_string())
}

/// The pragmas every SQLite connection runs with. WAL lets readers run beside the one
/// writer; `synchronous = NORMAL` is durable across process crashes (a power loss may
/// lose the last commits, never corrupt); the busy timeout covers other processes
/// (a `chatd bench --seed` beside `serve`).
/// Opens a connection through a transaction-mode pooler. diesel-async's setup runs two
/// prepared statements (time zone, encoding); outside a transaction the pooler may
/// prepare them on one server connection and run them on another, so the setup runs
/// inside one. The statement cache is then turned off, which closes the two before the
/// commit: a statement prepared in one transaction would be gone in the next.
async fn establish_behind_pooler(url: &str) -> diesel::ConnectionResult<PgConn> {
    use diesel_async::AsyncConnection;
    // The SQLSTATE first, as chatd's diesel-async writes it (`storage/errors.rs`).
    let refused = |e: tokio_postgres::Error| {
        diesel::ConnectionError::BadConnection(match e.code() {
            Some(code) => format!("[{}] {e}", code.code()),
            None => e.to_string(),
        })
    };
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(refused)?;
    // Driven by diesel-async once it has the connection: run the BEGIN meanwhile.
    let (client, connection) = {
        let begin = client.batch_execute("BEGIN");
        let mut connection = connection;
        tokio::select! {
            begun = begin => begun.map_err(refused)?,
            ended = &mut connection => {
                ended.map_err(refused)?;
                return Err(diesel::ConnectionError::BadConnection(
                    "the pooler closed the connection".into(),
                ));
            }
        }
        (client, connection)
    };
    let mut conn = PgConn::try_from_client_and_connection(client, connection).await?;
    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    conn.batch_execute("COMMIT")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

pub fn sqlite_pragmas(busy: Duration, sync: SqliteSync) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; \
         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {};",
        sync.pragma(),
        busy.as_millis()
    )
}

/// A pool of SQLite connections for reads (and for migrations and seeding, which run
/// before the writer starts or beside it).
pub fn sqlite_pool(path: &str, config: &PoolConfig) -> Result<Pool<SqliteReader>, String> {
    let mut manager_config = ManagerConfig::<SqliteReader>::default();
    let pragmas = sqlite_pragmas(config.timeout, config.sqlite_sync);
    manager_config.custom_setup = Box::new(move |path: &str| {
        let (path, pragmas) = (path.to_owned(), pragmas.clone());
        Box::pin(async move {
            use diesel_async::AsyncConnection;
            let mut conn = SqliteReader::establish(&path).await?;
            conn.batch_execute(&pragmas)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager =
        AsyncDieselConnectionManager::<SqliteReader>::new_with_config(path, manager_config);
    with_limits(Pool::builder(manager), config)
        .build()
        .map_err(|e| e.to_string())
}

/// Applies pending PostgreSQL migrations under an advisory lock. Must run on the
/// multi-threaded runtime (the harness blocks in place).
pub async fn migrate_postgres(pool: &Pool<PgConn>) -> Result<Vec<String>, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    // Waiting for another replica's migrations, or a migration over a big table, may
    // take longer than calls may: no statement timeout on this connection, which is
    // closed afterwards rather than returned to the pool.
    let lock = format!("SET statement_timeout = 0; SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})");
    conn.batch_execute(&lock).await.map_err(|e| e.to_string())?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(POSTGRES_MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
        .map_err(|e| e.to_string());
    let mut conn = harness.into_inner();
    let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})");
    conn.batch_execute(&unlock)
        .await
        .map_err(|e| e.to_string())?;
    drop(deadpool::managed::Object::take(conn));
    applied
}

/// Applies pending SQLite migrations.
pub async fn migrate_sqlite(pool: &Pool<SqliteReader>) -> Result<Vec<String>, String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    let mut harness = AsyncMigrationHarness::new(conn);
    harness
        .run_pending_migrations(SQLITE_MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| e.to_string())
}

/// When a pooled connection turns out dead, the server most likely restarted and the
/// idle ones are dead too: drop them all, so that after an outage only calls already
/// in flight fail, not one call per stale connection.
pub fn forget_idle_on_outage<M: deadpool::managed::Manager>(
    pool: &deadpool::managed::Pool<M>,
    error: StoreError,
) -> StoreError {
    if matches!(error, StoreError::Unavailable(_)) {
        pool.retain(|_, _| false);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_tcp_defaults("postgres://u@h/db?keepalives_idle=60"),
            "postgres://u@h/db?keepalives_idle=60&keepalives_interval=5\
             &keepalives_retries=3&tcp_user_timeout=30"
        );
        assert_eq!(
            with_tcp_defaults("postgres://u@h/db"),
            "postgres://u@h/db?keepalives_idle=15&keepalives_interval=5\
             &keepalives_retries=3&tcp_user_timeout=30"
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://chatd.db").unwrap(),
            DatabaseUrl::Sqlite("chatd.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://root@127.0.0.1/chatd").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }
}
