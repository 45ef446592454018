//! `chatd bench --events-receiver ADDR`: how fast events leave chatd. Listens as a
//! webhook receiver at ADDR (start the chatd under test with `--webhook-url
//! http://ADDR/hook`), and with `--events-nats URL` also subscribes to its JetStream
//! subjects; sends --send-rate messages per second for --duration, each to another
//! thread, and reports for each sink how long an event took from its commit to the
//! sink's receipt (p50, p99, max), and the relay's throughput against the write rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;

use super::{BenchConfig, Latencies, authed, bearer};
use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;

/// What a sink received: per message sent (by its index), the lag from the event's
/// time (its statement's start: before the commit) to its receipt, and when it arrived;
/// and when each event arrived.
#[derive(Default)]
struct Arrivals {
    lag: HashMap<usize, Duration>,
    arrived: HashMap<usize, Instant>,
    events: usize,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Arrivals {
    /// Notes the CloudEvents in `batch` received now.
    fn note(&mut self, batch: &[serde_json::Value]) {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.events += batch.len();
        for event in batch {
            let index = event["data"]["body"]
                .as_str()
                .and_then(|body| body.strip_prefix("events bench "))
                .and_then(|n| n.parse::<usize>().ok());
            let time = event["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if let (Some(index), Some(time), Some("chat.message.created")) =
                (index, time, event["type"].as_str())
            {
                let lag = (wall - time.with_timezone(&chrono::Utc))
                    .to_std()
                    .unwrap_or_default();
                self.lag.entry(index).or_insert(lag);
                self.arrived.entry(index).or_insert(now);
            }
        }
    }
}

type Shared = Arc<Mutex<Arrivals>>;

fn lock(arrivals: &Shared) -> std::sync::MutexGuard<'_, Arrivals> {
    arrivals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn receive_webhooks(listen: String, arrivals: Shared) -> Result<(), String> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let arrivals = arrivals.clone();
            async move {
                let batch: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
                lock(&arrivals).note(&batch);
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for webhooks: {e}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

async fn receive_nats(url: String, arrivals: Shared) -> Result<(), String> {
    use futures_util::StreamExt;
    let client = async_nats::connect(url.as_str())
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let mut messages = client
        .subscribe("chat.events.>")
        .await
        .map_err(|e| format!("cannot subscribe on {url}: {e}"))?;
    tokio::spawn(async move {
        let _client = client;
        while let Some(message) = messages.next().await {
            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&message.payload) {
                lock(&arrivals).note(&[event]);
            }
        }
    });
    Ok(())
}

pub async fn run(config: &BenchConfig, signer: &TokenSigner, listen: &str) -> Result<(), String> {
    let dataset = config.dataset;
    let webhook: Shared = Arc::default();
    receive_webhooks(listen.to_owned(), webhook.clone()).await?;
    let nats: Option<Shared> = match &config.events_nats {
        Some(url) => {
            let arrivals: Shared = Arc::default();
            receive_nats(url.clone(), arrivals.clone()).await?;
            Some(arrivals)
        }
        None => None,
    };
    // What the relay still had to deliver from before is not this run's: wait until
    // nothing has arrived for two seconds in a row (at most a minute; the relay may
    // take a second to start), then start counting.
    let all: Vec<Shared> = std::iter::once(webhook.clone())
        .chain(nats.clone())
        .collect();
    let drained = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < drained {
        let before: usize = all.iter().map(|a| lock(a).events).sum();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after: usize = all.iter().map(|a| lock(a).events).sum();
        quiet = if after == before { quiet + 1 } else { 0 };
    }
    for arrivals in &all {
        *lock(arrivals) = Arrivals::default();
    }
    let channel = Endpoint::from_shared(config.target.clone())
        .map_err(|e| format!("bad --target: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", config.target))?;
    let sends = ((config.send_rate as f64 * config.duration.as_secs_f64()) as usize)
        .min(dataset.threads as usize);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / config.send_rate.max(1) as f64,
    ));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sends);
    let acknowledged: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    for i in 0..sends {
        ticker.tick().await;
        let acknowledged = acknowledged.clone();
        let thread = i as i64 + 1;
        let header = bearer(signer, dataset.student_of(thread), Role::Student)?;
        let mut chat = ChatServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let request = pb::SendMessageRequest {
                thread_id: thread,
                body: format!("events bench {i}"),
                client_message_id: super::idempotency_key(),
            };
            let sent = chat.send_message(authed(request, &header)).await.is_ok();
            acknowledged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(i, Instant::now());
            sent
        }));
    }
    let mut sent = 0;
    for task in tasks {
        if matches!(task.await, Ok(true)) {
            sent += 1;
        }
    }
    let written_in = started.elapsed();
    // Each send logs two events (the message and its sender's horizon).
    let expected = 2 * sent;
    let deadline = Instant::now() + Duration::from_secs(30);
    let sinks: Vec<(&str, Shared)> = std::iter::once(("webhook", webhook))
        .chain(nats.map(|nats| ("nats", nats)))
        .collect();
    while Instant::now() < deadline && sinks.iter().any(|(_, a)| lock(a).lag.len() < sent) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "chatd bench --events-receiver: sent {sent} of {sends} messages at {}/s to {} in {written_in:.1?} \
         ({:.0} events/s written)",
        config.send_rate,
        config.target,
        expected as f64 / written_in.as_secs_f64()
    );
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (name, arrivals) in sinks {
        let arrivals = lock(&arrivals);
        let mut latencies = Latencies::new()?;
        for lag in arrivals.lag.values() {
            latencies.record(*lag);
        }
        // From the sender's acknowledgement, which comes after the commit: a lower
        // bound (an event that beats the acknowledgement counts as 0).
        let mut after_ack = Latencies::new()?;
        for (index, arrived) in &arrivals.arrived {
            if let Some(acked) = acknowledged.get(index) {
                after_ack.record(arrived.saturating_duration_since(*acked));
            }
        }
        let relayed = match (arrivals.first, arrivals.last) {
            (Some(first), Some(last)) if last > first => {
                format!(
                    "{:.0} events/s",
                    arrivals.events as f64 / (last - first).as_secs_f64()
                )
            }
            _ => "-".to_owned(),
        };
        println!(
            "{name}: received {} of {sent} messages' events ({} events in all, relayed at {relayed}); \
             from the statement's start p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             from the acknowledgement p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            arrivals.lag.len(),
            arrivals.events,
            latencies.quantile_ms(0.5),
            latencies.quantile_ms(0.99),
            latencies.quantile_ms(1.0),
            after_ack.quantile_ms(0.5),
            after_ack.quantile_ms(0.99),
            after_ack.quantile_ms(1.0)
        );
    }
    Ok(())
}
