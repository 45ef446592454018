//! A nats-server of a test's own, on a free port, which the test may stop and start
//! again (Debian's `nats-server`; a test without it skips, saying so): the API tests'
//! fan-out and sinks, and the fault tests' outages. Shared by both test binaries.

use std::time::Duration;

/// A nats-server on a port of its own, which a test may stop and start again.
pub struct NatsServer {
    port: u16,
    program: std::path::PathBuf,
    process: Option<tokio::process::Child>,
    /// With JetStream: where it stores its streams (kept across a restart).
    store: Option<crate::harness::TempDir>,
}

impl NatsServer {
    /// `None` when this machine has no nats-server (the test then skips, saying so).
    pub async fn start(test: &str) -> Option<Self> {
        let program = crate::require::program(test, "nats-server", "nats-server", &[])?;
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            socket.local_addr().expect("its address").port()
        };
        let mut server = Self {
            port,
            program,
            process: None,
            store: None,
        };
        server.restart().await;
        Some(server)
    }

    /// The same with JetStream on, storing in a directory of its own.
    pub async fn start_jetstream(test: &str) -> Option<Self> {
        let mut server = Self::start(test).await?;
        server.stop().await;
        server.store = Some(crate::harness::TempDir::new());
        server.restart().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let mut args = vec![
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        if let Some(store) = &self.store {
            args.extend([
                "-js".to_owned(),
                "-sd".to_owned(),
                store.0.display().to_string(),
            ]);
        }
        let process = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.process = Some(process);
        let listening = tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err()
            {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(listening.is_ok(), "nats-server listens within 10 s");
    }

    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.expect("nats-server stops");
        }
    }
}
