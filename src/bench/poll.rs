//! The polling mix: the load chatd exists for. `--online-users` tutors poll their unread
//! summary as fast as the clients allow, over gRPC and then over REST with the ETag of
//! their last answer in If-None-Match (as the web frontend's bell does), while their
//! students write `--send-rate` messages per second, so the cache sees real
//! invalidations. Health/Check runs in the same run as the reference, and Check again
//! carrying the users' bearer tokens (what the tokens alone cost HTTP/2); the gRPC
//! phases run in turn, in slices (`--poll-slices`).
//!
//! It reports each phase's rate and latency, the cache's hit ratio during each polling
//! phase (read from the server's /metrics), REST answers by status, and the messages
//! sent per second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tonic::metadata::{Ascii, MetadataValue};
use tonic_health::pb::HealthCheckRequest;

use super::Dataset;
use super::gateway::HttpTarget;
use super::{BenchConfig, ClientRun, Latencies, RawGrpc, Report, authed, bearer, connect, framed};
use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;

const CHECK: &str = "/grpc.health.v1.Health/Check";
const SUMMARY: &str = "/chat.v1.ChatService/GetUnreadSummary";

pub async fn run(config: &BenchConfig, signer: &TokenSigner) -> Result<(), String> {
    let dataset = config.dataset;
    let online = (config.online_users as i64).clamp(1, dataset.tutors());
    let tokens: Arc<Vec<MetadataValue<Ascii>>> = Arc::new(
        (1..=online)
            .map(|tutor| bearer(signer, tutor, Role::Tutor))
            .collect::<Result<_, _>>()?,
    );
    let http = HttpTarget::parse(&config.http_target)?;
    let channels = connect(&config.target, config.concurrency).await?;
    let mut raw = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency {
        raw.push(RawGrpc::connect(&config.target).await?);
    }
    let headers: Arc<Vec<http::HeaderValue>> = Arc::new(
        tokens
            .iter()
            .map(|token| http::HeaderValue::from_bytes(token.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
    );
    println!(
        "chatd bench --poll: {online} online tutors, {} clients, {:?} per phase, {} messages/s from their students; gRPC {}, REST {}",
        config.concurrency, config.duration, config.send_rate, config.target, config.http_target
    );
    let empty = Latencies::new()?;

    // Every online user polls once first, as a browser that was already open would
    // have: the phases measure the steady state, not the first poll of each user.
    let warm_up = Instant::now();
    let warmers: Vec<_> = channels
        .iter()
        .enumerate()
        .map(|(client, channel)| {
            let mut chat = ChatServiceClient::new(channel.clone());
            let (tokens, concurrency) = (tokens.clone(), channels.len());
            tokio::spawn(async move {
                for token in tokens.iter().skip(client).step_by(concurrency) {
                    let request = pb::GetUnreadSummaryRequest {
                        limit: 50,
                        if_none_match: String::new(),
                    };
                    chat.get_unread_summary(authed(request, token))
                        .await
                        .map_err(|status| format!("warm-up poll: {}", status.message()))?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for warmer in warmers {
        warmer.await.map_err(|e| e.to_string())??;
    }
    println!(
        "warm-up: every online user polled once, in {:.1?}",
        warm_up.elapsed()
    );

    let ceiling_clients = match &config.ceiling_target {
        Some(target) => {
            let mut clients = Vec::with_capacity(config.concurrency);
            for _ in 0..config.concurrency {
                clients.push(RawGrpc::connect(target).await?);
            }
            Some(clients)
        }
        None => None,
    };
    let mut phases = vec![GrpcPhase::new(
        "GetUnreadSummary (gRPC)",
        &raw,
        Call::summary(&headers),
        &empty,
    )];
    if let Some(clients) = &ceiling_clients {
        let name = "cached-answer ceiling (gRPC)";
        phases.push(GrpcPhase::new(
            name,
            clients,
            Call::summary(&headers),
            &empty,
        ));
    }
    phases.push(GrpcPhase::new(
        "Health/Check",
        &raw,
        Call::check(None),
        &empty,
    ));
    // What the users' bearer tokens alone cost the transport: Check does not read them,
    // but HTTP/2 carries and HPACK decodes each one, as for every poll.
    let check_as_users = Call::check(Some(&headers));
    phases.push(GrpcPhase::new(
        "Health/Check + bearer",
        &raw,
        check_as_users,
        &empty,
    ));

    let sender = Sender::start(config, signer.clone(), dataset, online);
    let before = http.cache_reads().await?;
    let slices = config.poll_slices.max(1);
    let slice = config.duration / slices;
    for _ in 0..slices {
        for (at, phase) in phases.iter_mut().enumerate() {
            // The students write all along, so every phase shares the machine with the
            // writes; to the polled tutors only while chatd's polls (the first) run, so
            // what the other phases' time writes does not stale what chatd answers next.
            sender.to_online(at == 0);
            let name = phase.report.name.clone();
            let run = call_grpc(name, phase.clients, phase.call.clone(), slice, &empty);
            phase.report.merge(run.await);
        }
    }
    sender.to_online(true);
    println!(
        "gRPC phases: {slices} slice(s) of {slice:.1?} each, in turn, so a drift in the machine's speed falls on all alike"
    );
    let between = http.cache_reads().await?;
    let has_ceiling = ceiling_clients.is_some();
    let mut reports = phases.into_iter().map(|phase| phase.report);
    let grpc = reports.next();
    let ceiling = if has_ceiling { reports.next() } else { None };
    let (Some(grpc), Some(check), Some(check_as_users)) = (grpc, reports.next(), reports.next())
    else {
        return Err("a gRPC phase of the mix did not run".into());
    };

    let started = Instant::now();
    let deadline = started + config.duration;
    let statuses = Arc::new(RestStatuses::default());
    let clients = (0..config.concurrency)
        .map(|client| {
            let (http, tokens, statuses) = (http.clone(), tokens.clone(), statuses.clone());
            let concurrency = config.concurrency;
            let mut run = ClientRun::new(&empty);
            tokio::spawn(async move {
                // Each client polls its own share of the users, keeping their ETags as
                // a browser keeps its cache.
                let mine: Vec<usize> = (client..tokens.len()).step_by(concurrency).collect();
                if mine.is_empty() {
                    return run;
                }
                let mut etags: HashMap<usize, String> = HashMap::new();
                let mut connection = None;
                while Instant::now() < deadline {
                    let user = mine[fastrand::usize(..mine.len())];
                    let call = Instant::now();
                    let polled = http
                        .poll(&mut connection, &tokens[user], etags.get(&user))
                        .await;
                    if let Ok((status, Some(etag))) = &polled {
                        statuses.count(*status);
                        etags.insert(user, etag.clone());
                    }
                    run.record(call, polled);
                }
                run
            })
        })
        .collect();
    let rest = Report::collect("unread-summary (REST, INM)", started, clients, &empty).await;
    let after = http.cache_reads().await?;
    let sent = sender.stop().await;

    let reference = Some(check.rps());
    let against_ceiling = ceiling.as_ref().map(|ceiling| {
        format!(
            "chatd's gRPC polls: {:.2} × the cached-answer ceiling's rate, p99 {:.2} × its",
            grpc.rps() / ceiling.rps().max(f64::MIN_POSITIVE),
            grpc.latencies.quantile_ms(0.99) / ceiling.latencies.quantile_ms(0.99).max(0.001)
        )
    });
    let reports: Vec<Report> = [
        Some(check),
        Some(check_as_users),
        Some(grpc),
        ceiling,
        Some(rest),
    ]
    .into_iter()
    .flatten()
    .collect();
    super::print_reports(&reports, reference);
    if let Some(line) = against_ceiling {
        println!("{line}");
    }
    for (phase, from, to) in [("gRPC", &before, &between), ("REST", &between, &after)] {
        println!(
            "summary cache during the {phase} phase: {}",
            from.ratio_until(to)
        );
    }
    println!(
        "summary cache sweep (chatd_summary_cache_sweep_seconds): {}",
        before.sweeps_until(&after)
    );
    println!(
        "REST answers: {} 304 Not Modified, {} 200",
        statuses.not_modified.load(Ordering::Relaxed),
        statuses.ok.load(Ordering::Relaxed)
    );
    println!("{sent}");
    Ok(())
}

/// What the clients of a gRPC phase call: a path with a framed request, as a random one
/// of the online users (their bearer headers) when `callers` is given.
#[derive(Clone)]
struct Call {
    path: &'static str,
    request: Bytes,
    callers: Option<Arc<Vec<http::HeaderValue>>>,
}

impl Call {
    fn check(callers: Option<&Arc<Vec<http::HeaderValue>>>) -> Self {
        let request = framed(&HealthCheckRequest {
            service: String::new(),
        });
        Call {
            path: CHECK,
            request,
            callers: callers.cloned(),
        }
    }

    fn summary(callers: &Arc<Vec<http::HeaderValue>>) -> Self {
        let request = framed(&pb::GetUnreadSummaryRequest {
            limit: 50,
            if_none_match: String::new(),
        });
        Call {
            path: SUMMARY,
            request,
            callers: Some(callers.clone()),
        }
    }

    /// The next call's path, caller's header (if any) and framed request.
    fn next(&self) -> (&'static str, Option<&http::HeaderValue>, &Bytes) {
        let caller = self
            .callers
            .as_ref()
            .map(|callers| &callers[fastrand::usize(..callers.len())]);
        (self.path, caller, &self.request)
    }
}

/// A gRPC phase of the mix: its clients, what they call, and its report so far.
struct GrpcPhase<'a> {
    clients: &'a [RawGrpc],
    call: Call,
    report: Report,
}

impl<'a> GrpcPhase<'a> {
    fn new(name: &str, clients: &'a [RawGrpc], call: Call, empty: &Latencies) -> Self {
        let report = Report {
            name: name.to_owned(),
            errors: 0,
            first_error: None,
            latencies: empty.clone(),
            elapsed: Duration::ZERO,
        };
        GrpcPhase {
            clients,
            call,
            report,
        }
    }
}

/// One gRPC phase: each client makes `call` over its own connection, one at a time,
/// for `duration`.
async fn call_grpc(
    name: String,
    raw: &[RawGrpc],
    call: Call,
    duration: Duration,
    empty: &Latencies,
) -> Report {
    let started = Instant::now();
    let deadline = started + duration;
    let clients = raw
        .iter()
        .map(|client| {
            let (mut client, call) = (client.clone(), call.clone());
            let mut run = ClientRun::new(empty);
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let (path, header, request) = call.next();
                    let started = Instant::now();
                    let result = client.call(path, header, request).await;
                    run.record(started, result);
                }
                run
            })
        })
        .collect();
    Report::collect(name, started, clients, empty).await
}

#[derive(Default)]
struct RestStatuses {
    ok: AtomicU64,
    not_modified: AtomicU64,
}

impl RestStatuses {
    fn count(&self, status: u16) {
        let counter = if status == 304 {
            &self.not_modified
        } else {
            &self.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Messages from the online tutors' students, at a steady rate, to random threads of
/// those tutors: each invalidates the tutor's summary.
struct Sender {
    stop: Arc<AtomicBool>,
    /// Writes to the online tutors' threads while set (chatd's polls); to the others'
    /// while not (the ceiling, Check): the same load on the machine, without staling the
    /// summaries chatd's polls will read later.
    to_online: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<String>,
}

impl Sender {
    fn start(
        config: &BenchConfig,
        signer: crate::auth::TokenSigner,
        dataset: Dataset,
        online: i64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let to_online = Arc::new(AtomicBool::new(true));
        let online_now = to_online.clone();
        let (target, rate) = (config.target.clone(), config.send_rate.max(1));
        let task = tokio::spawn(async move {
            let channel = match connect(&target, 1).await {
                Ok(mut channels) => channels.remove(0),
                Err(error) => return format!("messages: none sent ({error})"),
            };
            let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
            let period = Duration::from_secs_f64(1.0 / f64::from(rate));
            let mut ticker = tokio::time::interval(period);
            let started = Instant::now();
            let mut in_flight = Vec::new();
            let offline = dataset.tutors() - online;
            while !stopping.load(Ordering::Relaxed) {
                ticker.tick().await;
                let tutor = if online_now.load(Ordering::Relaxed) || offline <= 0 {
                    1 + fastrand::i64(0..online)
                } else {
                    online + 1 + fastrand::i64(0..offline)
                };
                let thread = thread_of(&dataset, tutor);
                let student = dataset.student_of(thread);
                let Ok(token) = bearer(&signer, student, Role::Student) else {
                    continue;
                };
                let mut chat = ChatServiceClient::new(channel.clone());
                let (sent, failed, first_error) =
                    (sent.clone(), failed.clone(), first_error.clone());
                in_flight.push(tokio::spawn(async move {
                    let request = pb::SendMessageRequest {
                        thread_id: thread,
                        body: "poll bench".into(),
                        client_message_id: super::idempotency_key(),
                    };
                    match chat.send_message(authed(request, &token)).await {
                        Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            if let Ok(mut first) = first_error.lock() {
                                first.get_or_insert_with(|| {
                                    format!("{:?}: {}", status.code(), status.message())
                                });
                            }
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }));
                in_flight.retain(|task| !task.is_finished());
            }
            for task in in_flight {
                let _ = task.await;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let sent = sent.load(Ordering::Relaxed);
            let mut line = format!(
                "messages: {sent} sent in {elapsed:.1} s ({:.0}/s, asked {rate}/s), {} failed",
                sent as f64 / elapsed,
                failed.load(Ordering::Relaxed)
            );
            if let Ok(first) = first_error.lock()
                && let Some(error) = first.as_ref()
            {
                line.push_str(&format!("; first failure: {error}"));
            }
            line
        });
        Self {
            stop,
            to_online,
            task,
        }
    }

    /// Writes to the online tutors' threads (`true`) or to the others' from now on.
    fn to_online(&self, online: bool) {
        self.to_online.store(online, Ordering::Relaxed);
    }

    async fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .unwrap_or_else(|e| format!("messages: the sender failed: {e}"))
    }
}

/// A random thread of `tutor` in the seeded dataset (thread x belongs to tutor
/// `1 + x % tutors`).
fn thread_of(dataset: &Dataset, tutor: i64) -> i64 {
    let tutors = dataset.tutors();
    let first = if tutor == 1 { tutors } else { tutor - 1 };
    let count = (dataset.threads - first) / tutors + 1;
    first + fastrand::i64(0..count.max(1)) * tutors
}
