//! The watcher modes: N tutors each watch their unread summary (`--watchers`) or their
//! thread, an open chat window (`--windows`); messages from their students arrive at a
//! steady rate (each watcher gets at most one). It reports the delivery latency
//! (SendMessage accepted → the watcher's update or event received) and the server's
//! resident memory with the streams open, per stream.

use std::time::{Duration, Instant};

use tonic::transport::Endpoint;

use super::{BenchConfig, Latencies, authed, bearer};
use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;

/// How many streams open at once before the next wave.
const OPENING_WAVE: usize = 1000;

/// Waits for `count` streams to report their snapshot; how many did.
async fn await_ready(
    ready: &mut tokio::sync::mpsc::Receiver<Result<(), String>>,
    count: usize,
) -> Result<usize, String> {
    let mut open = 0;
    while open < count {
        match ready.recv().await {
            Some(Ok(())) => open += 1,
            Some(Err(error)) => {
                return Err(format!("a watcher could not open its stream: {error}"));
            }
            None => break,
        }
    }
    Ok(open)
}

/// Streams multiplexed on one HTTP/2 connection in watcher mode.
const WATCHERS_PER_CONNECTION: usize = 100;

/// The server's resident memory, from /proc (Linux).
fn rss_mib(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn now_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// What each watcher holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// WatchUnreadSummary: its tutor's unread summary.
    Summary,
    /// WatchThread: its thread, as an open chat window.
    Thread,
}

/// Opens one watcher's stream and reports its first message on `ready`; then, each
/// time something arrives while `expecting` is set, notes when in `received`.
async fn watch(
    mut chat: ChatServiceClient<tonic::transport::Channel>,
    header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    (watched, thread): (Watched, i64),
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    arrived: impl Fn(),
) {
    let failed = |status: tonic::Status| format!("{:?}: {}", status.code(), status.message());
    match watched {
        Watched::Summary => {
            let request = authed(
                pb::WatchUnreadSummaryRequest {
                    limit: 50,
                    ..Default::default()
                },
                &header,
            );
            let mut stream = match chat.watch_unread_summary(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => return drop(ready.send(Err(failed(status))).await),
            };
            let first = stream.message().await;
            let _ = ready.send(first.map(drop).map_err(failed)).await;
            while let Ok(Some(_)) = stream.message().await {
                arrived();
            }
        }
        Watched::Thread => {
            let request = authed(
                pb::WatchThreadRequest {
                    thread_id: thread,
                    after_version: 0,
                    ticket: String::new(),
                },
                &header,
            );
            let mut stream = match chat.watch_thread(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => return drop(ready.send(Err(failed(status))).await),
            };
            let first = stream.message().await;
            let _ = ready.send(first.map(drop).map_err(failed)).await;
            while let Ok(Some(event)) = stream.message().await {
                if matches!(
                    event.event,
                    Some(pb::thread_event::Event::MessageCreated(_))
                ) {
                    arrived();
                }
            }
        }
    }
}

pub async fn run(
    config: &BenchConfig,
    signer: &TokenSigner,
    watched: Watched,
) -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dataset = config.dataset;
    let watchers = match watched {
        Watched::Summary => config.watchers,
        Watched::Thread => config.windows,
    }
    .min(dataset.threads as usize);
    let rss_before = rss_mib(config.server_pid);
    let origin = Instant::now();
    let accepted: Arc<Vec<AtomicU64>> =
        Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());
    let expecting: Arc<Vec<AtomicU64>> =
        Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());

    // Thread i + 1 belongs to a distinct tutor for i < tutors: each watcher is one tutor.
    let mut channels = Vec::new();
    for _ in 0..watchers.div_ceil(WATCHERS_PER_CONNECTION) {
        let channel = Endpoint::from_shared(config.target.clone())
            .map_err(|e| format!("bad --target: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", config.target))?;
        channels.push(channel);
    }
    let opening = Instant::now();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(watchers);
    let mut open = 0;
    // The memory of the first half's streams includes what the server allocates once
    // (pool buffers, the runtime's growth); the second half's is what a stream costs.
    let half = (watchers / 2).div_ceil(OPENING_WAVE) * OPENING_WAVE;
    let mut rss_half = None;
    for i in 0..watchers {
        // Streams open in waves, each after the previous one got its snapshots, as
        // clients arrive over time; not 100,000 snapshot reads at the same instant.
        if i > 0 && i % OPENING_WAVE == 0 {
            open += await_ready(&mut ready_rx, i - open).await?;
            if i == half {
                rss_half = rss_mib(config.server_pid).map(|rss| (i, rss));
            }
        }
        // Thread n + 1 belongs to a distinct tutor for n < tutors; past that, tutors
        // watch a second time (a second device), within the per-user stream limit.
        let thread = (i as i64 % dataset.tutors().min(dataset.threads)) + 1;
        let header = bearer(signer, dataset.tutor_of(thread), Role::Tutor)?;
        let chat = ChatServiceClient::new(channels[i / WATCHERS_PER_CONNECTION].clone());
        let (received, expecting, ready) = (received.clone(), expecting.clone(), ready_tx.clone());
        let arrived = move || {
            if expecting[i].swap(0, Ordering::AcqRel) == 1 {
                received[i].store(now_ns(origin), Ordering::Release);
            }
        };
        tokio::spawn(watch(chat, header, (watched, thread), ready, arrived));
    }
    drop(ready_tx);
    open += await_ready(&mut ready_rx, watchers - open).await?;
    if open < watchers {
        return Err(format!(
            "only {open} of {watchers} watchers opened their stream"
        ));
    }
    let opened_in = opening.elapsed();
    let rss_open = rss_mib(config.server_pid);

    // Send at a steady rate, each to a different watcher.
    let send_channel = match &config.send_target {
        Some(target) => Endpoint::from_shared(target.clone())
            .map_err(|e| format!("bad --send-target: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?,
        None => channels[0].clone(),
    };
    // Each message goes to a different tutor, watched by stream i (and by stream
    // i + tutors, when there are that many; only stream i's delivery is timed).
    let distinct = watchers.min(dataset.tutors().min(dataset.threads) as usize);
    let sends = ((config.send_rate as f64 * config.duration.as_secs_f64()) as usize).min(distinct);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / config.send_rate.max(1) as f64,
    ));
    let mut tasks = Vec::with_capacity(sends);
    for i in 0..sends {
        ticker.tick().await;
        let thread = i as i64 + 1;
        let header = bearer(signer, dataset.student_of(thread), Role::Student)?;
        let mut chat = ChatServiceClient::new(send_channel.clone());
        let (accepted, expecting) = (accepted.clone(), expecting.clone());
        tasks.push(tokio::spawn(async move {
            expecting[i].store(1, Ordering::Release);
            let request = pb::SendMessageRequest {
                thread_id: thread,
                body: format!("watch bench {i}"),
                client_message_id: super::idempotency_key(),
            };
            let sent = chat.send_message(authed(request, &header)).await;
            accepted[i].store(now_ns(origin), Ordering::Release);
            sent.map(drop).map_err(|s| s.message().to_owned())
        }));
    }
    let mut send_errors = 0;
    for task in tasks {
        if !matches!(task.await, Ok(Ok(()))) {
            send_errors += 1;
        }
    }
    // Give the last updates time to arrive (a bound, then whatever is missing is reported).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && (0..sends).any(|i| received[i].load(Ordering::Acquire) == 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = rss_mib(config.server_pid);
    let mut latencies = Latencies::new()?;
    for latency in (0..sends).filter_map(|i| {
        let (sent, got) = (
            accepted[i].load(Ordering::Acquire),
            received[i].load(Ordering::Acquire),
        );
        // The update can beat the sender's own acknowledgement: that counts as 0.
        (got > 0).then(|| Duration::from_nanos(got.saturating_sub(sent)))
    }) {
        latencies.record(latency);
    }
    let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} MiB"));
    let mode = match watched {
        Watched::Summary => "--watchers (WatchUnreadSummary)",
        Watched::Thread => "--windows (WatchThread)",
    };
    println!(
        "chatd bench {mode}: {watchers} streams on {} connections to {}, opened in {opened_in:.1?}; messages sent to {}",
        channels.len(),
        config.target,
        config.send_target.as_deref().unwrap_or(&config.target)
    );
    let per_stream = match (rss_before, rss_half, rss_open) {
        (Some(before), Some((opened, half)), Some(open)) => format!(
            "{:.1} KiB a stream on average, {:.1} KiB each of the last {}",
            (open - before) * 1024.0 / watchers as f64,
            (open - half) * 1024.0 / (watchers - opened) as f64,
            watchers - opened
        ),
        (Some(before), None, Some(open)) => format!(
            "{:.1} KiB a stream",
            (open - before) * 1024.0 / watchers.max(1) as f64
        ),
        _ => "-".to_owned(),
    };
    println!(
        "server RSS: before {}, with streams open {} ({per_stream}), after sending {}",
        mib(rss_before),
        mib(rss_open),
        mib(rss_after)
    );
    println!(
        "sent {sends} messages at {}/s ({send_errors} failed); delivered {} of them; \
         delivery latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        config.send_rate,
        latencies.count(),
        latencies.quantile_ms(0.5),
        latencies.quantile_ms(0.99),
        latencies.quantile_ms(1.0)
    );
    Ok(())
}
