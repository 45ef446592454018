//! What tests stand on: a database of their own (PostgreSQL cloned from a template
//! migrated once per test process and kept for the whole process, or SQLite in a
//! temporary directory), removed whatever the outcome, and a TCP proxy a test can cut,
//! to play a network failing.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chatd::storage::{DatabaseUrl, PoolConfig, Store};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A unique name part for this process: `<pid>_<counter>`.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory that exists for one test and is removed when dropped, passed or failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("chatd_test_{}", unique_suffix()));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server PostgreSQL tests use: CHATD_TEST_DATABASE_URL, else the local one.
pub fn postgres_admin_url() -> String {
    std::env::var("CHATD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL has a path");
    format!("{base}/{name}")
}

/// The administrator's side of the test server: a small pool of connections on a
/// runtime of its own, which lives as long as the test process. Tests each run on a
/// runtime of their own, and a connection dies with the runtime it was opened on, so
/// the pool cannot live on any test's runtime.
struct Admin {
    runtime: tokio::runtime::Runtime,
    pool: Pool<AsyncPgConnection>,
    url: String,
}

static ADMIN: LazyLock<Admin> = LazyLock::new(|| {
    let url = postgres_admin_url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("test-admin")
        .enable_all()
        .build()
        .expect("the admin runtime");
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url.clone());
    let pool = Pool::builder(manager)
        .max_size(4)
        .build()
        .expect("the admin pool");
    Admin { runtime, pool, url }
});

/// Runs `work` with an admin connection, on the admin runtime, and waits for its end.
/// Callable from sync code (a `Drop`) and from a test's async code alike: it blocks the
/// calling thread only, and the admin runtime has a thread of its own.
fn as_admin<T, F>(work: impl FnOnce(Object<AsyncPgConnection>) -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send,
{
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    ADMIN.runtime.spawn(async move {
        let conn = ADMIN.pool.get().await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}): start it, or set \
                 CHATD_TEST_DATABASE_URL to a server where tests may create databases",
                ADMIN.url
            )
        });
        let _ = answer.send(work(conn).await);
    });
    answered
        .recv()
        .expect("the admin connection answered (see the panic above)")
}

/// Runs SQL as the administrator.
fn admin_execute(sql: String) {
    as_admin(move |mut conn| async move {
        conn.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("admin SQL {sql:?}: {e}"))
    })
}

/// Drops a database, reporting (not failing) when it cannot: drops run as tests end.
fn drop_database(name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let dropped = as_admin(move |mut conn| async move { conn.batch_execute(&sql).await });
    if let Err(e) = dropped {
        eprintln!("could not drop test database {name}: {e}");
    }
}

/// The databases of test processes that are gone (killed, or ended: a process's
/// template lives as long as the process), dropped by the next process that starts.
fn drop_orphans() {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        datname: String,
    }
    let names: Vec<Name> = as_admin(|mut conn| async move {
        diesel::sql_query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'chatd\\_test\\_%' OR datname LIKE 'chatd\\_tpl\\_%'",
        )
        .load(&mut conn)
        .await
        .unwrap_or_default()
    });
    for Name { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            drop_database(&datname);
        }
    }
}

/// The database PostgreSQL tests clone (`CREATE DATABASE … TEMPLATE`) instead of each
/// running every migration: migrated once, when the process's first PostgreSQL test
/// asks, and kept for the whole process. Statics are never dropped, so the next test
/// process drops it (`drop_orphans`).
static TEMPLATE: LazyLock<String> = LazyLock::new(|| {
    drop_orphans();
    let name = format!("chatd_tpl_{}", unique_suffix());
    admin_execute(format!("CREATE DATABASE {name}"));
    let url = replace_database(&ADMIN.url, &name);
    as_admin(move |_| async move {
        let store = Store::connect(
            &DatabaseUrl::Postgres(url),
            &PoolConfig {
                max_size: 1,
                timeout: Duration::from_secs(10),
                statement_timeout: None,
                pooler: Default::default(),
                sqlite_sync: Default::default(),
            },
        )
        .expect("template store");
        store.migrate().await.expect("migrate the template");
        // Its connection must close before the template can be cloned (PostgreSQL waits
        // a few seconds for it when it has not yet).
        drop(store);
    });
    name
});

/// A database that exists for one test only.
pub enum TestDatabase {
    Sqlite {
        /// Holds the database's directory, which goes when the test ends.
        _dir: TempDir,
        path: PathBuf,
    },
    Postgres {
        name: String,
    },
    /// Another test app's database, left for that app to drop.
    Shared(DatabaseUrl),
}

impl TestDatabase {
    pub async fn sqlite() -> Self {
        let dir = TempDir::new();
        let path = dir.join("chatd.db");
        TestDatabase::Sqlite { _dir: dir, path }
    }

    pub async fn postgres() -> Self {
        let name = format!("chatd_test_{}", unique_suffix());
        let template = TEMPLATE.as_str();
        admin_execute(format!("CREATE DATABASE {name} TEMPLATE {template}"));
        TestDatabase::Postgres { name }
    }

    pub fn url(&self) -> DatabaseUrl {
        match self {
            TestDatabase::Sqlite { path, .. } => DatabaseUrl::Sqlite(path.display().to_string()),
            TestDatabase::Postgres { name } => {
                DatabaseUrl::Postgres(replace_database(&ADMIN.url, name))
            }
            TestDatabase::Shared(url) => url.clone(),
        }
    }

    /// Runs SQL inside this test's database, behind chatd's back.
    pub async fn execute_inside(&self, sql: &str) {
        match self.url() {
            DatabaseUrl::Postgres(url) => {
                let mut conn = AsyncPgConnection::establish(&url)
                    .await
                    .expect("test database connection");
                conn.batch_execute(sql)
                    .await
                    .expect("SQL inside the test database");
            }
            DatabaseUrl::Sqlite(path) => {
                use diesel::Connection;
                use diesel::connection::SimpleConnection;
                let mut conn =
                    diesel::SqliteConnection::establish(&path).expect("test database connection");
                conn.batch_execute(&format!("PRAGMA busy_timeout = 5000; {sql}"))
                    .expect("SQL inside the test database");
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres { name } = self {
            drop_database(name);
        }
        // A SQLite database goes with its TempDir.
    }
}

/// A PostgreSQL role of one test's own, with a connection limit, that may do in one
/// test database all chatd does; dropped (after the database) when the test ends.
pub struct TestRole {
    pub name: String,
}

impl TestRole {
    /// A role that may hold at most `limit` connections, with chatd's rights in
    /// `database`.
    pub async fn with_connection_limit(database: &TestDatabase, limit: u32) -> Self {
        let name = format!("chatd_role_{}", unique_suffix());
        admin_execute(format!("CREATE ROLE {name} LOGIN CONNECTION LIMIT {limit}"));
        database
            .execute_inside(&format!(
                "GRANT ALL ON SCHEMA public TO {name}; \
                 GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}; \
                 GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name};"
            ))
            .await;
        Self { name }
    }

    /// `database`'s URL, as this role.
    pub fn url(&self, database: &TestDatabase) -> DatabaseUrl {
        let DatabaseUrl::Postgres(url) = database.url() else {
            panic!("roles are PostgreSQL's");
        };
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (_, host) = rest.split_once('@').expect("a URL with a user");
        DatabaseUrl::Postgres(format!("{scheme}://{}@{host}", self.name))
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let sql = format!("DROP ROLE IF EXISTS {}", self.name);
        let dropped = as_admin(move |mut conn| async move { conn.batch_execute(&sql).await });
        if let Err(e) = dropped {
            eprintln!("could not drop test role {}: {e}", self.name);
        }
    }
}

/// What a `Proxy` does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Passes bytes both ways to the target.
    Forward(std::net::SocketAddr),
    /// Accepts and closes at once: the other side sees a reset, like a refused port.
    Refuse,
    /// Accepts and never answers, and open connections stop passing bytes: a partition.
    Silence,
}

/// A TCP proxy on a port of its own that the test switches between routes. Switching
/// ends every open connection's forwarding. Dropping it stops it.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    route: watch::Sender<Route>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(route: Route) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let (route, routes) = watch::channel(route);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut routes = routes.clone();
                let now = *routes.borrow_and_update();
                tokio::spawn(async move {
                    match now {
                        Route::Refuse => drop(client),
                        Route::Silence => {
                            let _ = routes.changed().await;
                        }
                        Route::Forward(target) => {
                            let Ok(server) = TcpStream::connect(target).await else {
                                return;
                            };
                            let (mut client_read, mut client_write) = client.into_split();
                            let (mut server_read, mut server_write) = server.into_split();
                            tokio::select! {
                                _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                                _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                                _ = routes.changed() => {
                                    // A partition leaves connections open and silent.
                                    if *routes.borrow() == Route::Silence {
                                        let _ = routes.changed().await;
                                    }
                                }
                            }
                            let _ = client_write.shutdown().await;
                        }
                    }
                });
            }
        });
        Self { addr, route, task }
    }

    pub fn set(&self, route: Route) {
        self.route.send_replace(route);
    }
}

impl Proxy {
    /// A PostgreSQL URL like `database_url` whose connections go through this proxy.
    pub fn postgres_url(&self, database_url: &str) -> String {
        let (user, rest) = database_url.split_once('@').expect("a URL with a user");
        let (_, database) = rest.split_once('/').expect("a URL with a database");
        format!("{user}@{}/{database}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
