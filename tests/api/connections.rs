//! Connection bursts: connects beyond what chatd is serving wait in the kernel's listen
//! backlog, which is the system's `somaxconn`, not a fixed 1,024, so a burst of them
//! completes instead of leaving clients retrying half-open.

use std::time::Duration;

use futures_util::future::join_all;

use crate::helpers::{Backend, TestApp};

/// Connects started at once on each listener, beyond the one chatd serves.
const BURST: usize = 1_500;

/// Connects `BURST` times to `addr` at once; how many completed within 3 s (a SYN
/// dropped by a full backlog is retried after 1 s, then 3 s: a bound, not a wait).
async fn burst(addr: &str) -> usize {
    let connects = (0..BURST).map(|_| async {
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
            .ok()
            .and_then(Result::ok)
    });
    let sockets: Vec<_> = join_all(connects).await.into_iter().flatten().collect();
    sockets.len()
}

/// chatd may serve one connection per listener here, so every other connect of the
/// burst waits in the backlog: all of them complete where the backlog is `somaxconn`
/// (4,096 on Linux ≥ 5.4), about 1,025 where it is tokio's default of 1,024.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_waits_in_the_backlog() {
    let somaxconn = chatd::net::listen_backlog() as usize;
    if somaxconn <= BURST {
        crate::require::skip(
            "connections::a_burst_of_connects_waits_in_the_backlog",
            &format!("net.core.somaxconn above {BURST} (it is {somaxconn})"),
            &format!("sysctl -w net.core.somaxconn={}", BURST * 4),
        );
        return;
    }
    chatd::net::raise_open_files_limit().expect("a higher open-file limit");
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.connections.max_connections = 1;
    })
    .await;
    // The harness's own channel holds the gRPC listener's one connection.
    let grpc = app.grpc.trim_start_matches("http://").to_owned();
    let http = app.http.trim_start_matches("http://").to_owned();
    for (listener, addr) in [("gRPC", grpc), ("REST", http)] {
        let connected = burst(&addr).await;
        assert_eq!(
            connected, BURST,
            "connects completed on the {listener} listener"
        );
    }
}
