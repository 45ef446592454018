//! `chatd bench`: seeds a synthetic dataset, then drives a running chatd and reports
//! throughput and latency. Three modes:
//! - `rpcs.rs` (default): N clients call one RPC at a time for T seconds each.
//! - `poll.rs` (`--poll`): the load chatd exists for, online users polling their unread
//!   summary over gRPC and REST while their peers write.
//! - `watchers.rs` (`--watchers N`, `--windows N`): N summary streams or N open chat
//!   windows (thread streams), delivery latency and memory.
//! - `erase.rs` (`--erase N`): a user with N messages erased while others write.
//! - `events.rs` (`--events-receiver ADDR`): events out, from commit to a webhook (and
//!   NATS) receiver: lag and throughput.
//! - `seed.rs` (`--seed`): the synthetic dataset all of them run against.
//! - `ceiling.rs` (`--serve-cached-summaries ADDR`): not a load but a server, the
//!   cached-answer ceiling the polling mix is read against.
//!
//! grpc.health.v1 Check runs in the same run as the reference: it measures what the
//! gRPC stack and the machine can do with no domain work, so every figure is also shown
//! as a ratio of Check's, which travels between machines better than raw numbers.

mod ceiling;
mod erase;
mod events;
mod gateway;
mod phases;
mod poll;
mod rpcs;
mod seed;
mod watchers;

use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::storage::Store;

pub use ceiling::serve as serve_cached_summaries;
pub use rpcs::Rpc;
pub use seed::Dataset;

/// What to seed and how hard to push.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub target: String,
    pub dataset: Dataset,
    pub seed: bool,
    pub concurrency: usize,
    pub duration: Duration,
    pub rpcs: Vec<Rpc>,
    /// Polling mode: drive the polling mix instead of one RPC at a time.
    pub poll: bool,
    /// Polling mode: how many users (tutors) are online and poll.
    pub online_users: usize,
    /// Polling mode: the gRPC phases run in turn in this many slices.
    pub poll_slices: u32,
    /// Polling mode: the REST gateway to poll, and whose /metrics to read.
    pub http_target: String,
    /// Watcher mode: open this many WatchUnreadSummary streams instead of driving RPCs.
    pub watchers: usize,
    /// Window mode: open this many WatchThread streams instead of driving RPCs.
    pub windows: usize,
    /// Polling and watcher modes: messages sent per second.
    pub send_rate: u32,
    /// Watcher mode: the server process whose memory is reported.
    pub server_pid: Option<u32>,
    /// Watcher mode: where messages are sent (another replica than `target`, to measure
    /// delivery across replicas); `None` sends to `target`.
    pub send_target: Option<String>,
    /// Erasure mode: erase a user with this many messages while others send.
    pub erase: Option<i64>,
    /// Events mode: where to listen as the webhook receiver of the chatd under test.
    pub events_receiver: Option<String>,
    /// Events mode: the NATS server the chatd under test publishes events to.
    pub events_nats: Option<String>,
    /// Polling mode: a cached-answer ceiling server (`--serve-cached-summaries`) to poll
    /// over gRPC beside chatd, in the same run.
    pub ceiling_target: Option<String>,
}

pub async fn run(
    config: BenchConfig,
    store: Option<Store>,
    signer: TokenSigner,
) -> Result<(), String> {
    let dataset = config.dataset;
    dataset.validate()?;
    if config.seed {
        let store = store.as_ref().ok_or("--seed needs --database-url")?;
        let started = Instant::now();
        store.migrate().await?;
        seed::seed(store, dataset).await?;
        eprintln!(
            "seeded {} users, {} threads, {} messages in {:.1?}",
            dataset.users,
            dataset.threads,
            dataset.threads * dataset.messages_per_thread(),
            started.elapsed()
        );
    }
    if let Some(messages) = config.erase {
        let store = store.ok_or("--erase needs --database-url")?;
        return erase::run(&config, &store, &signer, messages).await;
    }
    if let Some(listen) = &config.events_receiver {
        return events::run(&config, &signer, listen).await;
    }
    if config.watchers > 0 {
        return watchers::run(&config, &signer, watchers::Watched::Summary).await;
    }
    if config.windows > 0 {
        return watchers::run(&config, &signer, watchers::Watched::Thread).await;
    }
    if config.poll {
        return poll::run(&config, &signer).await;
    }
    rpcs::run(&config, &signer).await
}

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

/// What one client of a run measured.
struct ClientRun {
    latencies: Latencies,
    errors: usize,
    first_error: Option<String>,
}

impl ClientRun {
    fn new(empty: &Latencies) -> Self {
        Self {
            latencies: empty.clone(),
            errors: 0,
            first_error: None,
        }
    }

    /// Records one call: its latency when it succeeded, else the error.
    fn record<T, E: std::fmt::Display>(&mut self, started: Instant, result: Result<T, E>) {
        match result {
            Ok(_) => self.latencies.record(started.elapsed()),
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Results of one phase of a run: what every client measured, merged.
struct Report {
    name: String,
    errors: usize,
    first_error: Option<String>,
    latencies: Latencies,
    elapsed: Duration,
}

impl Report {
    fn rps(&self) -> f64 {
        self.latencies.count() as f64 / self.elapsed.as_secs_f64()
    }

    /// Adds another run of the same phase (a later slice of it).
    fn merge(&mut self, other: Report) {
        self.latencies.add(&other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
    }

    /// Merges the clients' runs of a phase that started at `started`.
    async fn collect(
        name: impl Into<String>,
        started: Instant,
        clients: Vec<tokio::task::JoinHandle<ClientRun>>,
        empty: &Latencies,
    ) -> Self {
        let mut report = Report {
            name: name.into(),
            errors: 0,
            first_error: None,
            latencies: empty.clone(),
            elapsed: Duration::ZERO,
        };
        for client in clients {
            match client.await {
                Ok(run) => {
                    report.latencies.add(&run.latencies);
                    report.errors += run.errors;
                    if report.first_error.is_none() {
                        report.first_error = run.first_error;
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
}

/// Prints one line per phase; `reference` (Check's RPS) gives the ratio column.
fn print_reports(reports: &[Report], reference: Option<f64>) {
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "phase", "rps", "p50 ms", "p99 ms", "max ms", "errors", "vs Check"
    );
    for report in reports {
        let ratio = reference
            .filter(|check| *check > 0.0)
            .map_or("-".to_string(), |check| {
                format!("{:.2}", report.rps() / check)
            });
        println!(
            "{:<28} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>9}",
            report.name,
            report.rps(),
            report.latencies.quantile_ms(0.50),
            report.latencies.quantile_ms(0.99),
            report.latencies.quantile_ms(1.0),
            report.errors,
            ratio
        );
        if let Some(error) = &report.first_error {
            println!("  first error: {error}");
            if error.starts_with("ResourceExhausted: too many messages") {
                println!(
                    "  the server's limit per user refused writes: the dataset's writers are \
                     few users, so run the server under test with --user-send-rate 0"
                );
            }
        }
    }
}

/// Opens `count` HTTP/2 connections to `target`, one per client.
async fn connect(target: &str, count: usize) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let endpoint = Endpoint::from_shared(target.to_owned())
            .map_err(|e| format!("bad target {target}: {e}"))?
            .tcp_nodelay(true);
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {target}: {e}"))?,
        );
    }
    Ok(channels)
}

/// `Bearer <token>` for a user in a role, as gRPC metadata.
fn bearer(signer: &TokenSigner, user_id: i64, role: Role) -> Result<MetadataValue<Ascii>, String> {
    format!(
        "Bearer {}",
        signer.sign(user_id, role, Duration::from_secs(3600))?
    )
    .parse()
    .map_err(|_| "token is not ASCII".to_string())
}

fn authed<T>(message: T, header: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", header.clone());
    request
}

/// A codec for load generation: requests encoded with prost, each response taken as
/// its raw bytes. A benchmark of the server should not charge the load generator's
/// decoding (here on the same two cores) to the server: h2load decodes nothing either.
struct RawResponses<T>(std::marker::PhantomData<T>);

impl<T: prost::Message + Send + 'static> tonic::codec::Codec for RawResponses<T> {
    type Encode = T;
    type Decode = prost::bytes::Bytes;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl tonic::codec::Decoder for RawDecoder {
    type Item = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, Self::Error> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// GetUnreadSummary as `header`'s caller, taking the answer as raw bytes.
async fn poll_summary(
    grpc: &mut tonic::client::Grpc<Channel>,
    header: &MetadataValue<Ascii>,
) -> Result<(), tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = crate::proto::GetUnreadSummaryRequest {
        limit: 50,
        if_none_match: String::new(),
    };
    let path = http::uri::PathAndQuery::from_static("/chat.v1.ChatService/GetUnreadSummary");
    grpc.unary(
        authed(request, header),
        path,
        RawResponses(std::marker::PhantomData),
    )
    .await
    .map(drop)
}

/// A minimal gRPC client for load generation, on one HTTP/2 connection: requests go
/// as prepared bytes and answers are read as bytes, checked for grpc-status 0. It costs
/// the generator about what h2load costs, the same for every call, so a figure shows
/// the server's cost rather than the client's.
#[derive(Clone)]
struct RawGrpc {
    send: h2::client::SendRequest<prost::bytes::Bytes>,
    authority: String,
}

impl RawGrpc {
    async fn connect(target: &str) -> Result<Self, String> {
        let authority = target
            .strip_prefix("http://")
            .ok_or_else(|| format!("--target must be http://host:port, got {target:?}"))?
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, connection) = h2::client::handshake(stream)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {authority}: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { send, authority })
    }

    /// Calls `path` with an encoded request message, as `authorization` when given.
    async fn call(
        &mut self,
        path: &str,
        authorization: Option<&http::HeaderValue>,
        message: &prost::bytes::Bytes,
    ) -> Result<(), String> {
        let mut request = http::Request::post(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let request = request.body(()).map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
        let (response, mut stream) = send
            .send_request(request, false)
            .map_err(|e| e.to_string())?;
        stream
            .send_data(message.clone(), true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        let (parts, mut body) = response.into_parts();
        let status_of = |headers: &http::HeaderMap| {
            headers
                .get("grpc-status")
                .map(|status| status.to_str().unwrap_or("?").to_owned())
        };
        // An error answers with no body: grpc-status in the headers (trailers-only).
        if let Some(status) = status_of(&parts.headers).filter(|status| status != "0") {
            return Err(format!("grpc-status {status}"));
        }
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(|e| e.to_string())?;
        match trailers
            .as_ref()
            .and_then(status_of)
            .or_else(|| status_of(&parts.headers))
        {
            Some(status) if status == "0" => Ok(()),
            Some(status) => Err(format!("grpc-status {status}")),
            None => Err("no grpc-status".into()),
        }
    }
}

/// A gRPC message as sent on the wire: uncompressed flag, length, then the message.
fn framed(message: &impl prost::Message) -> prost::bytes::Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame.into()
}

/// A fresh idempotency key, as a well-behaved client sends with every message (and as
/// `tests/bench/pgbench.sh` sends): writes pay for the key's unique index like real ones.
fn idempotency_key() -> String {
    format!("bench-{:016x}", fastrand::u64(..))
}
