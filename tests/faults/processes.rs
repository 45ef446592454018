//! The processes fault tests start and break: chatd itself (the built binary, as an
//! operator runs it) and a PostgreSQL of the test's own, in a temporary directory on a
//! free port, which the test may stop the hard way without touching anyone else's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[path = "../api/harness.rs"]
#[expect(
    dead_code,
    reason = "shared with the api tests; this binary uses a part"
)]
pub mod harness;
pub use harness::TempDir;

/// The HS256 secret the chatd processes of these tests verify tokens with.
pub const SECRET: &str = "fault-tests-secret-0123456789abcdef";

/// A port nobody listens on right now (bound and released; the kernel does not hand
/// it out again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A chatd server process. Killed when dropped.
pub struct Chatd {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    args: Vec<String>,
    /// Run under `sh -c "ulimit -n N; exec chatd …"`: an open-file limit it cannot raise.
    open_files: Option<u64>,
    /// The log lines that say it is up.
    ready: &'static [&'static str],
    /// Where its log goes (kept for a failing test to show).
    pub log: PathBuf,
}

impl Chatd {
    /// Starts `chatd serve` on `database_url` with `extra` flags, and waits until both
    /// listeners are up (chatd says so in its log).
    pub async fn start(
        dir: &Path,
        database_url: &str,
        extra: &[&str],
        open_files: Option<u64>,
    ) -> Self {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args: Vec<String> = [
            "serve",
            "--database-url",
            database_url,
            "--listen",
            &grpc.to_string(),
            "--http",
            &http.to_string(),
            "--jwt-secret",
            SECRET,
            // The workload sends as fast as its clients can: the limit per user would
            // refuse most of it.
            "--user-send-rate",
            "0",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend(extra.iter().map(ToString::to_string));
        let log = dir.join(format!("chatd-{}.log", grpc.port()));
        let ready = &[GRPC_READY, HTTP_READY];
        let child = spawn(&args, open_files, &log, ready).await;
        Self {
            child,
            grpc,
            http,
            args,
            open_files,
            ready,
            log,
        }
    }

    /// Starts `chatd gateway` in front of `upstream`'s gRPC with `extra` flags, and
    /// waits until it listens. Its `grpc` is the upstream's.
    pub async fn gateway(dir: &Path, upstream: SocketAddr, extra: &[&str]) -> Self {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args: Vec<String> = vec![
            "gateway".into(),
            "--upstream".into(),
            format!("http://{upstream}"),
            "--listen".into(),
            http.to_string(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        let log = dir.join(format!("gateway-{}.log", http.port()));
        let ready = &[HTTP_READY];
        let child = spawn(&args, None, &log, ready).await;
        Self {
            child,
            grpc: upstream,
            http,
            args,
            open_files: None,
            ready,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("chatd is running")
    }

    /// SIGKILL: no shutdown, no flush, nothing but what is on disk already.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("chatd is killed");
    }

    /// Starts chatd again with the same flags and ports.
    pub async fn restart(&mut self) {
        self.child = spawn(&self.args, self.open_files, &self.log, self.ready).await;
    }

    /// How many file descriptors chatd holds open now.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .unwrap_or(0)
    }
}

impl Drop for Chatd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

const GRPC_READY: &str = "chatd gRPC listening";
const HTTP_READY: &str = "chatd REST gateway listening";

/// Spawns chatd and returns once it logs each of the `ready` lines; panics with the
/// log if it exits first or takes over 60 s.
async fn spawn(args: &[String], open_files: Option<u64>, log: &Path, ready: &[&str]) -> Child {
    let binary = env!("CARGO_BIN_EXE_chatd");
    let mut command = match open_files {
        Some(limit) => {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(binary)
                .args(args);
            command
        }
        None => {
            let mut command = Command::new(binary);
            command.args(args);
            command
        }
    };
    command
        .env("NO_COLOR", "1")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("chatd starts");
    let stderr = child.stderr.take().expect("chatd's stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("the log file");
    let up = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = vec![false; ready.len()];
        while let Ok(Some(line)) = lines.next_line().await {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
            for (seen, wanted) in seen.iter_mut().zip(ready) {
                *seen |= line.contains(wanted);
            }
            if seen.iter().all(|seen| *seen) {
                return true;
            }
        }
        false
    })
    .await;
    if up != Ok(true) {
        panic!(
            "chatd did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    // The rest of its log, for a failing test to show.
    tokio::spawn(async move {
        use std::io::Write;
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = writeln!(file, "{line}");
        }
    });
    child
}

/// A PostgreSQL server of the test's own. Stopped (immediately) and removed when dropped.
pub struct ThrowawayPostgres {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl ThrowawayPostgres {
    /// `initdb` into a temporary directory and start on a free port; `None` when this
    /// machine has no PostgreSQL server programs (the test then skips, saying so).
    pub async fn start(test: &str) -> Option<Self> {
        let Some(bin) = postgres_bin() else {
            crate::require::skip(
                test,
                "the PostgreSQL server programs initdb and pg_ctl",
                "Debian package postgresql: apt-get install -y postgresql",
            );
            return None;
        };
        let dir = TempDir::new();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("the data directory");
        if is_root() {
            // PostgreSQL refuses to run as root: its files belong to `postgres`.
            run(
                "chown",
                &["-R", "postgres:postgres", &dir.0.display().to_string()],
            )
            .await;
        }
        let postgres = Self {
            dir,
            bin,
            port: free_port(),
        };
        postgres
            .pg(
                "initdb",
                &[
                    "-D",
                    &data.display().to_string(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ],
            )
            .await;
        postgres.start_again().await;
        Some(postgres)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl stop -m immediate`: every backend killed, no checkpoint; the next start
    /// recovers from the WAL.
    pub async fn stop_immediately(&self) {
        let data = self.dir.join("data").display().to_string();
        self.pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await;
    }

    pub async fn start_again(&self) {
        let data = self.dir.join("data").display().to_string();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.0.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        self.pg(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )
        .await;
    }

    /// Runs a PostgreSQL program as `postgres` when the test runs as root.
    async fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program).display().to_string();
        if is_root() {
            let mut all = vec!["-u", "postgres", "--", program.as_str()];
            all.extend_from_slice(args);
            run("runuser", &all).await;
        } else {
            run(&program, args).await;
        }
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", &pg_ctl])
                .args(args)
                .output()
        } else {
            std::process::Command::new(&pg_ctl).args(args).output()
        };
    }
}

/// Where `initdb` and `pg_ctl` are: on the PATH, or Debian's /usr/lib/postgresql/<v>/bin.
fn postgres_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
    });
    if let Some(dir) = on_path {
        return Some(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

async fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
