//! `chatd bench`: seeds a synthetic dataset, then drives a running chatd over gRPC with
//! N concurrent clients for T seconds per RPC, and reports throughput and latency.
//!
//! grpc.health.v1 Check runs first as the reference: it measures what the gRPC stack
//! and the machine can do with no domain work, so each RPC's throughput is also shown
//! as a ratio of Check's, which travels between machines better than raw numbers.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;
use crate::storage::{Dataset, Store};

/// What to seed and how hard to push.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub target: String,
    pub dataset: Dataset,
    pub seed: bool,
    pub concurrency: usize,
    pub duration: Duration,
    pub rpcs: Vec<Rpc>,
    /// Watcher mode: open this many WatchUnreadSummary streams instead of driving RPCs.
    pub watchers: usize,
    /// Watcher mode: messages sent per second.
    pub send_rate: u32,
    /// Watcher mode: the server process whose memory is reported.
    pub server_pid: Option<u32>,
    /// Watcher mode: where messages are sent (another replica than `target`, to measure
    /// delivery across replicas); `None` sends to `target`.
    pub send_target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    Check,
    GetUnreadSummary,
    EnsureThread,
    SendMessage,
    MarkRead,
}

impl Rpc {
    pub const ALL: [Rpc; 5] = [
        Rpc::Check,
        Rpc::GetUnreadSummary,
        Rpc::EnsureThread,
        Rpc::SendMessage,
        Rpc::MarkRead,
    ];

    fn name(self) -> &'static str {
        match self {
            Rpc::Check => "Health/Check",
            Rpc::GetUnreadSummary => "GetUnreadSummary",
            Rpc::EnsureThread => "EnsureThread",
            Rpc::SendMessage => "SendMessage",
            Rpc::MarkRead => "MarkRead",
        }
    }
}

/// One sampled thread with bearer headers for both of its participants.
struct Participants {
    thread: i64,
    tutor: MetadataValue<tonic::metadata::Ascii>,
    student: MetadataValue<tonic::metadata::Ascii>,
}

/// How many threads the load samples from (tokens are minted once per sampled thread).
const SAMPLE: i64 = 2048;

/// Latencies of many calls, in microseconds, kept in an HDR histogram: fixed memory
/// however many calls, three significant digits at every magnitude.
#[derive(Clone)]
struct Latencies(hdrhistogram::Histogram<u64>);

impl Latencies {
    /// An empty histogram from 1 µs to 1 h; clone it rather than build another.
    fn new() -> Result<Self, String> {
        hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map(Self)
            .map_err(|e| format!("latency histogram: {e}"))
    }

    fn record(&mut self, elapsed: Duration) {
        self.0.saturating_record(elapsed.as_micros().max(1) as u64);
    }

    fn add(&mut self, other: &Latencies) {
        // Both have the same bounds: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 is the median, 1.0 the maximum), in ms.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let micros = if q >= 1.0 {
            self.0.max()
        } else {
            self.0.value_at_quantile(q)
        };
        micros as f64 / 1000.0
    }
}

/// Results of one RPC's run.
struct Report {
    rpc: Rpc,
    errors: usize,
    first_error: Option<String>,
    latencies: Latencies,
    elapsed: Duration,
}

impl Report {
    fn rps(&self) -> f64 {
        self.latencies.count() as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(
    config: BenchConfig,
    store: Option<Store>,
    signer: TokenSigner,
) -> Result<(), String> {
    let dataset = config.dataset;
    dataset.validate()?;
    if config.seed {
        let store = store.ok_or("--seed needs --database-url")?;
        let started = Instant::now();
        store.migrate().await?;
        store.seed_benchmark(dataset).await?;
        eprintln!(
            "seeded {} users, {} threads, {} messages in {:.1?}",
            dataset.users,
            dataset.threads,
            dataset.threads * dataset.messages_per_thread(),
            started.elapsed()
        );
    }
    if config.watchers > 0 {
        return run_watchers(&config, &signer).await;
    }
    let sample = sample_participants(&dataset, &signer)?;
    let mut channels = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        let endpoint = Endpoint::from_shared(config.target.clone())
            .map_err(|e| format!("bad --target {}: {e}", config.target))?
            .tcp_nodelay(true);
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", config.target))?,
        );
    }
    println!(
        "chatd bench: {} clients, {:?} per RPC, target {}, dataset {} users / {} threads / {} messages per thread",
        config.concurrency,
        config.duration,
        config.target,
        dataset.users,
        dataset.threads,
        dataset.messages_per_thread()
    );
    let empty = Latencies::new()?;
    let mut reports = Vec::new();
    for rpc in &config.rpcs {
        reports.push(drive(*rpc, &channels, &sample, config.duration, &empty).await);
    }
    print_reports(&reports);
    Ok(())
}

fn sample_participants(
    dataset: &Dataset,
    signer: &TokenSigner,
) -> Result<Vec<Participants>, String> {
    let mut random = XorShift::new();
    let ttl = Duration::from_secs(3600);
    (0..SAMPLE.min(dataset.threads))
        .map(|_| {
            let thread = 1 + random.below(dataset.threads as u64) as i64;
            let header = |user, role| -> Result<MetadataValue<_>, String> {
                let token = signer.sign(user, role, ttl)?;
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| "token is not ASCII".to_string())
            };
            Ok(Participants {
                thread,
                tutor: header(dataset.tutor_of(thread), Role::Tutor)?,
                student: header(dataset.student_of(thread), Role::Student)?,
            })
        })
        .collect()
}

/// Runs `rpc` from every channel at once until `duration` has passed.
async fn drive(
    rpc: Rpc,
    channels: &[Channel],
    sample: &[Participants],
    duration: Duration,
    empty: &Latencies,
) -> Report {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = channels
        .iter()
        .cloned()
        .map(|channel| {
            let sample: Vec<(i64, MetadataValue<_>, MetadataValue<_>)> = sample
                .iter()
                .map(|p| (p.thread, p.tutor.clone(), p.student.clone()))
                .collect();
            let fresh = empty.clone();
            tokio::spawn(async move {
                let mut health = HealthClient::new(channel.clone());
                let mut chat = ChatServiceClient::new(channel);
                let mut random = XorShift::new();
                let mut latencies = fresh;
                let (mut errors, mut first_error) = (0usize, None);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let (thread, tutor, student) =
                        &sample[random.below(sample.len() as u64) as usize];
                    n += 1;
                    let call_started = Instant::now();
                    let result = match rpc {
                        Rpc::Check => health
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .map(drop),
                        Rpc::GetUnreadSummary => chat
                            .get_unread_summary(authed(
                                pb::GetUnreadSummaryRequest {
                                    limit: 50,
                                    if_none_match: String::new(),
                                },
                                tutor,
                            ))
                            .await
                            .map(drop),
                        Rpc::EnsureThread => chat
                            .ensure_thread(authed(
                                pb::EnsureThreadRequest {
                                    target: Some(pb::ensure_thread_request::Target::RelationId(
                                        *thread,
                                    )),
                                },
                                tutor,
                            ))
                            .await
                            .map(drop),
                        Rpc::SendMessage => chat
                            .send_message(authed(
                                pb::SendMessageRequest {
                                    thread_id: *thread,
                                    body: format!("bench message {n}"),
                                    client_message_id: String::new(),
                                },
                                student,
                            ))
                            .await
                            .map(drop),
                        Rpc::MarkRead => chat
                            .mark_read(authed(
                                pb::MarkReadRequest {
                                    thread_id: *thread,
                                    up_to_seq: None,
                                },
                                tutor,
                            ))
                            .await
                            .map(drop),
                    };
                    match result {
                        Ok(()) => latencies.record(call_started.elapsed()),
                        Err(status) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!("{:?}: {}", status.code(), status.message())
                            });
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut report = Report {
        rpc,
        errors: 0,
        first_error: None,
        latencies: empty.clone(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        match task.await {
            Ok((latencies, errors, first_error)) => {
                report.latencies.add(&latencies);
                report.errors += errors;
                if report.first_error.is_none() {
                    report.first_error = first_error;
                }
            }
            Err(e) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

fn authed<T>(message: T, header: &MetadataValue<tonic::metadata::Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", header.clone());
    request
}

fn print_reports(reports: &[Report]) {
    let check_rps = reports
        .iter()
        .find(|r| r.rpc == Rpc::Check)
        .map(Report::rps)
        .filter(|rps| *rps > 0.0);
    println!(
        "{:<18} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "rpc", "rps", "p50 ms", "p99 ms", "max ms", "errors", "vs Check"
    );
    for report in reports {
        let ratio = check_rps.map_or("-".to_string(), |check| {
            format!("{:.2}", report.rps() / check)
        });
        println!(
            "{:<18} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>9}",
            report.rpc.name(),
            report.rps(),
            report.latencies.quantile_ms(0.50),
            report.latencies.quantile_ms(0.99),
            report.latencies.quantile_ms(1.0),
            report.errors,
            ratio
        );
        if let Some(error) = &report.first_error {
            println!("  first error: {error}");
        }
    }
}

/// A tiny non-cryptographic generator: enough to spread load over the sample.
struct XorShift(u64);

impl XorShift {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
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

/// Watcher mode: N tutors each watch their summary; messages from their students arrive
/// at a steady rate (each watcher gets at most one); reports delivery latency (SendMessage
/// accepted → the watcher's update received) and the server's RSS.
async fn run_watchers(config: &BenchConfig, signer: &TokenSigner) -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dataset = config.dataset;
    let watchers = config
        .watchers
        .min(dataset.tutors() as usize)
        .min(dataset.threads as usize);
    let ttl = Duration::from_secs(3600);
    let bearer = |user: i64, role: Role| -> Result<MetadataValue<tonic::metadata::Ascii>, String> {
        format!("Bearer {}", signer.sign(user, role, ttl)?)
            .parse()
            .map_err(|_| "token is not ASCII".to_string())
    };
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
    for i in 0..watchers {
        let thread = i as i64 + 1;
        let header = bearer(dataset.tutor_of(thread), Role::Tutor)?;
        let mut chat = ChatServiceClient::new(channels[i / WATCHERS_PER_CONNECTION].clone());
        let (received, expecting, ready) = (received.clone(), expecting.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let request = authed(pb::WatchUnreadSummaryRequest { limit: 50 }, &header);
            let mut stream = match chat.watch_unread_summary(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = ready
                        .send(Err(format!("{:?}: {}", status.code(), status.message())))
                        .await;
                    return;
                }
            };
            let first = stream.message().await;
            let _ = ready
                .send(first.map(drop).map_err(|s| s.message().to_owned()))
                .await;
            while let Ok(Some(_)) = stream.message().await {
                if expecting[i].swap(0, Ordering::AcqRel) == 1 {
                    received[i].store(now_ns(origin), Ordering::Release);
                }
            }
        });
    }
    drop(ready_tx);
    let mut open = 0;
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => open += 1,
            Err(error) => return Err(format!("a watcher could not open its stream: {error}")),
        }
        if open == watchers {
            break;
        }
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
    let sends = ((config.send_rate as f64 * config.duration.as_secs_f64()) as usize).min(watchers);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / config.send_rate.max(1) as f64,
    ));
    let mut tasks = Vec::with_capacity(sends);
    for i in 0..sends {
        ticker.tick().await;
        let thread = i as i64 + 1;
        let header = bearer(dataset.student_of(thread), Role::Student)?;
        let mut chat = ChatServiceClient::new(send_channel.clone());
        let (accepted, expecting) = (accepted.clone(), expecting.clone());
        tasks.push(tokio::spawn(async move {
            expecting[i].store(1, Ordering::Release);
            let request = pb::SendMessageRequest {
                thread_id: thread,
                body: format!("watch bench {i}"),
                client_message_id: String::new(),
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
    println!(
        "chatd bench --watchers: {watchers} streams on {} connections to {}, opened in {opened_in:.1?}; messages sent to {}",
        channels.len(),
        config.target,
        config.send_target.as_deref().unwrap_or(&config.target)
    );
    println!(
        "server RSS: before {}, with streams open {}, after sending {}",
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
