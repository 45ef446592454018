//! What tests stand on: a database of their own (PostgreSQL cloned from a template
//! migrated once per test process, or SQLite in a temporary directory), removed
//! whatever the outcome, and a TCP proxy a test can cut, to play a network failing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use chatd::storage::{DatabaseUrl, PoolConfig, Store};
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

async fn admin_connection(admin_url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin_url} ({e}): start it, or set \
                 CHATD_TEST_DATABASE_URL to a server where tests may create databases"
            )
        })
}

/// Drops a PostgreSQL database from a thread of its own: drops run inside a test's
/// runtime, which cannot block on itself.
fn drop_database(admin_url: &str, name: &str) {
    let (admin_url, database) = (admin_url.to_owned(), name.to_owned());
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut admin = AsyncPgConnection::establish(&admin_url).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    })
    .join();
    if !matches!(dropped, Ok(Ok(()))) {
        eprintln!("could not drop test database {name}");
    }
}

/// A database migrated once, which PostgreSQL tests clone (`CREATE DATABASE … TEMPLATE`)
/// instead of each running every migration. It lives while any test of this process
/// uses it, and is dropped with the last.
pub struct Template {
    admin_url: String,
    name: String,
}

impl Drop for Template {
    fn drop(&mut self) {
        drop_database(&self.admin_url, &self.name);
    }
}

/// Drops the databases of test processes that are gone (killed before they could).
async fn drop_orphans(admin: &mut AsyncPgConnection, admin_url: &str) {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        datname: String,
    }
    let names: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'chatd\\_test\\_%' OR datname LIKE 'chatd\\_tpl\\_%'",
    )
    .load(admin)
    .await
    .unwrap_or_default();
    for Name { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            drop_database(admin_url, &datname);
        }
    }
}

async fn template(admin_url: &str) -> Arc<Template> {
    static CURRENT: LazyLock<tokio::sync::Mutex<Weak<Template>>> =
        LazyLock::new(|| tokio::sync::Mutex::new(Weak::new()));
    let mut current = CURRENT.lock().await;
    if let Some(template) = current.upgrade() {
        return template;
    }
    let mut admin = admin_connection(admin_url).await;
    drop_orphans(&mut admin, admin_url).await;
    let name = format!("chatd_tpl_{}", unique_suffix());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the template database");
    let template = Arc::new(Template {
        admin_url: admin_url.to_owned(),
        name,
    });
    let store = Store::connect(
        &DatabaseUrl::Postgres(replace_database(admin_url, &template.name)),
        &PoolConfig {
            max_size: 1,
            timeout: Duration::from_secs(10),
            statement_timeout: None,
        },
    )
    .expect("template store");
    store.migrate().await.expect("migrate the template");
    // Its connection must close before the template can be cloned (PostgreSQL waits a
    // few seconds for it when it has not yet).
    drop(store);
    *current = Arc::downgrade(&template);
    template
}

/// A database that exists for one test only.
pub enum TestDatabase {
    Sqlite {
        /// Holds the database's directory, which goes when the test ends.
        _dir: TempDir,
        path: PathBuf,
    },
    Postgres {
        admin_url: String,
        name: String,
        _template: Arc<Template>,
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
        let admin_url = postgres_admin_url();
        let template = template(&admin_url).await;
        let name = format!("chatd_test_{}", unique_suffix());
        admin_connection(&admin_url)
            .await
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {}",
                template.name
            ))
            .await
            .expect("create test database");
        TestDatabase::Postgres {
            admin_url,
            name,
            _template: template,
        }
    }

    pub fn url(&self) -> DatabaseUrl {
        match self {
            TestDatabase::Sqlite { path, .. } => DatabaseUrl::Sqlite(path.display().to_string()),
            TestDatabase::Postgres {
                admin_url, name, ..
            } => DatabaseUrl::Postgres(replace_database(admin_url, name)),
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
        if let TestDatabase::Postgres {
            admin_url, name, ..
        } = self
        {
            drop_database(admin_url, name);
        }
        // A SQLite database goes with its TempDir.
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
