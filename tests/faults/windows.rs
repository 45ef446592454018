//! Open windows through a killed replica: tutors watch their threads on replica A while
//! the load writes through replica B; A is killed with SIGKILL mid-load, each window
//! reconnects to the other replica with the last version it applied, and at the end
//! every window, built from its events alone, equals ListMessages.

use std::net::SocketAddr;
use std::time::Duration;

use chatd::auth::TokenSigner;
use chatd::domain::Role;
use chatd::grpc::pb::{self, Side};
use tokio::sync::watch;
use tonic::transport::Endpoint;

use crate::processes::{Chatd, SECRET, TempDir, ThrowawayPostgres};
use crate::window::{Window, watch_request, whole_thread};
use crate::workload::{self, Caller};

/// Keeps a tutor's window on a thread open, on `replicas[0]` first and on the other one
/// whenever its stream fails, resuming after the last version applied, until the
/// window reaches the version `target` says (unknown while it is `i64::MAX`). Returns
/// the window and how many streams it opened.
async fn keep_window(
    replicas: [SocketAddr; 2],
    tutor: i64,
    thread_id: i64,
    mut target: watch::Receiver<i64>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> (Window, usize) {
    let mut ready = Some(ready);
    let signer = TokenSigner::from_secret(SECRET.as_bytes(), None, None);
    let token = signer
        .sign(tutor, Role::Tutor, Duration::from_secs(3600))
        .expect("a token");
    let mut window = Window::new(Side::Tutor);
    let (mut on, mut opened) = (0, 0);
    loop {
        if window.version >= *target.borrow() {
            return (window, opened);
        }
        let channel = Endpoint::from_shared(format!("http://{}", replicas[on]))
            .expect("an endpoint")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let mut request = tonic::Request::new(watch_request(thread_id, window.version));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ASCII"),
        );
        let mut client = pb::chat_service_client::ChatServiceClient::new(channel);
        if let Ok(events) = client.watch_thread(request).await {
            opened += 1;
            let mut events = events.into_inner();
            loop {
                tokio::select! {
                    event = events.message() => match event {
                        Ok(Some(event)) => {
                            window.apply(event);
                            // The snapshot of a thread with no message yet: the window
                            // holds everything from here on.
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(());
                            }
                        }
                        // The replica went away: resume on the other one.
                        _ => break,
                    },
                    changed = target.changed() => {
                        if changed.is_err() || window.version >= *target.borrow() {
                            return (window, opened);
                        }
                    }
                }
                if window.version >= *target.borrow() {
                    return (window, opened);
                }
            }
        }
        on = 1 - on;
        // Not a synchronisation: a client's pause before it reconnects.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two PostgreSQL replicas; every window opened on A; the load written through B; A
/// killed mid-load. Each window ends equal to ListMessages: nothing missed, nothing
/// applied twice (`Window::apply` fails on a gap or a repeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_windows_survive_their_replica_killed() {
    let Some(postgres) =
        ThrowawayPostgres::start("faults::postgres_windows_survive_their_replica_killed").await
    else {
        return;
    };
    let dir = TempDir::new();
    let mut a = Chatd::start(&dir.0, &postgres.url(), &["--call-timeout", "2s"], None).await;
    let b = Chatd::start(&dir.0, &postgres.url(), &["--call-timeout", "2s"], None).await;
    let writer = Caller::new(b.grpc);
    let pairs = workload::pairs(&writer, 4).await;
    // Each window's target: unknown (i64::MAX) until the load is over.
    let mut targets = Vec::new();
    let mut windows = Vec::new();
    for pair in &pairs {
        let (target, told) = watch::channel(i64::MAX);
        let (ready, opened) = tokio::sync::oneshot::channel();
        windows.push(tokio::spawn(keep_window(
            [a.grpc, b.grpc],
            pair.tutor,
            pair.thread_id,
            told,
            ready,
        )));
        tokio::time::timeout(Duration::from_secs(10), opened)
            .await
            .expect("the window opens within 10 s")
            .expect("the window's task");
        targets.push(target);
    }
    // 8 senders × 60 messages in 4 threads: 120 messages a thread, one page of ListMessages.
    let mut load = workload::start(&writer, &pairs, 8, 60);
    load.until(|acknowledged, _| acknowledged >= 150).await;
    a.kill().await;
    let seen = load.finish().await;
    workload::audit(&writer, &pairs, &seen.acknowledged).await;

    // Every thread's version now, as a window opened on B starts from it.
    let mut versions = Vec::new();
    for pair in &pairs {
        let mut client = writer.chat(pair.tutor, Role::Tutor);
        let mut events = client
            .watch_thread(watch_request(pair.thread_id, 0))
            .await
            .expect("a window on B")
            .into_inner();
        versions.push(crate::window::next_event(&mut events).await.version);
    }
    for (pair, ((target, window), version)) in pairs
        .iter()
        .zip(targets.into_iter().zip(windows).zip(versions))
    {
        target.send_replace(version);
        let (window, opened) = tokio::time::timeout(Duration::from_secs(60), window)
            .await
            .expect("the window catches up within 60 s")
            .expect("the window's task");
        assert!(
            opened >= 2,
            "thread {}: reconnected after the kill",
            pair.thread_id
        );
        let client = writer.chat(pair.tutor, Role::Tutor);
        let page = whole_thread(|request| {
            let mut client = client.clone();
            async move {
                client
                    .list_messages(pb::ListMessagesRequest {
                        thread_id: pair.thread_id,
                        ..request
                    })
                    .await
                    .expect("list messages")
                    .into_inner()
            }
        })
        .await;
        window.assert_matches_page(page);
    }
    drop(b);
}
