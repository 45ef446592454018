//! The relay's sinks: a webhook endpoint gets every event in signed CloudEvents
//! batches, in order, a failed batch retried as it was; NATS JetStream gets every event
//! with its id as Nats-Msg-Id, through an outage of the NATS server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::helpers::{Backend, ChatClientExt, TestApp};
use crate::nats_server::NatsServer;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;
const SECRET_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// One POST the receiver got: its headers and body.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: String,
}

/// A webhook receiver that refuses the first `refuse` deliveries with 500.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(Delivery, u16)>>>,
}

impl Receiver {
    async fn start(refuse: usize) -> Self {
        let got: Arc<Mutex<Vec<(Delivery, u16)>>> = Arc::default();
        let recorded = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let recorded = recorded.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let delivery = Delivery {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        content_type: header("content-type"),
                        body,
                    };
                    let mut got = recorded.lock().unwrap();
                    let status = if got.len() < refuse { 500 } else { 200 };
                    got.push((delivery, status));
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, got }
    }

    fn deliveries(&self) -> Vec<(Delivery, u16)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until an accepted batch holds an event of `kind` whose data has `body`.
    async fn wait_for_body(&self, body: &str) {
        let needle = format!("\"body\":\"{body}\"");
        tokio::time::timeout(Duration::from_secs(30), async {
            while !self
                .deliveries()
                .iter()
                .any(|(d, status)| *status == 200 && d.body.contains(&needle))
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("delivered within 30 s");
    }
}

/// What a receiver computes to verify a delivery (Standard Webhooks: HMAC-SHA256 of
/// "<id>.<timestamp>.<body>", base64).
fn expected_signature(delivery: &Delivery) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET_KEY).unwrap();
    mac.update(format!("{}.{}.{}", delivery.id, delivery.timestamp, delivery.body).as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET_KEY)
    )
}

/// Every event reaches the endpoint in signed batches, in position order; the
/// endpoint's refusals make chatd retry the same batch with the same id and body.
async fn a_webhook_gets_every_event_signed_in_order_through_refusals(backend: Backend) {
    let receiver = Receiver::start(2).await;
    let (url, secret) = (receiver.url.clone(), secret());
    let app = TestApp::spawn_with(backend, |config| {
        config.events.webhook = Some(chatd::config::WebhookConfig::parse(&url, &secret).unwrap());
        config.metrics = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut tutor = app.tutor(TUTOR);
    for body in ["one", "two", "three"] {
        tutor.say(thread.thread_id, body).await;
    }
    receiver.wait_for_body("three").await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries[0].1, 500);
    assert_eq!(deliveries[1].1, 500);
    assert_eq!(
        (&deliveries[0].0.id, &deliveries[0].0.body),
        (&deliveries[2].0.id, &deliveries[2].0.body),
        "a refused batch is sent again as it was"
    );
    let mut positions = Vec::new();
    for (delivery, status) in &deliveries {
        assert_eq!(delivery.signature, expected_signature(delivery), "signed");
        assert_eq!(delivery.content_type, "application/cloudevents-batch+json");
        if *status != 200 {
            continue;
        }
        let batch: Vec<serde_json::Value> = serde_json::from_str(&delivery.body).unwrap();
        for event in batch {
            assert_eq!(event["specversion"], "1.0");
            assert_eq!(event["source"], "chatd");
            positions.push(event["position"].as_i64().unwrap());
        }
    }
    assert!(
        positions.windows(2).all(|p| p[0] < p[1]),
        "in order, each once: {positions:?}"
    );
    let failed = app
        .series("chatd_events_delivered_total{sink=\"webhook\",outcome=\"failed\"}")
        .await;
    assert!(failed >= 2, "both refusals counted: {failed}");
    // thread.created, then each send's message.created and the sender's thread.read:
    // the batch holding "three" held all before it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while app
            .series("chatd_events_delivered_total{sink=\"webhook\",outcome=\"ok\"}")
            .await
            < 6
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the accepted events are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_webhook_gets_every_event_signed_in_order_through_refusals() {
    a_webhook_gets_every_event_signed_in_order_through_refusals(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_webhook_gets_every_event_signed_in_order_through_refusals() {
    a_webhook_gets_every_event_signed_in_order_through_refusals(Backend::Postgres).await;
}

/// Every event is published to JetStream with its id as Nats-Msg-Id, also those
/// written while the NATS server was down.
async fn jetstream_gets_every_event_through_an_outage(backend: Backend, test: &str) {
    let Some(mut nats) = NatsServer::start_jetstream(test).await else {
        return;
    };
    let url = nats.url();
    let app = TestApp::spawn_with(backend, |config| {
        config.events.nats_url = Some(url.clone());
    })
    .await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let mut tutor = app.tutor(TUTOR);
    tutor.say(thread.thread_id, "before").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let count_in_stream = |jetstream: async_nats::jetstream::Context| async move {
        match jetstream.get_stream("CHATD_EVENTS").await {
            Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
            Err(_) => 0,
        }
    };
    // thread.created, message.created and thread.read
    wait_until(|| count_in_stream(jetstream.clone()), 3).await;
    nats.stop().await;
    tutor.say(thread.thread_id, "during").await;
    nats.restart().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    wait_until(|| count_in_stream(jetstream.clone()), 5).await;
    let stream = jetstream.get_stream("CHATD_EVENTS").await.unwrap();
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for seq in 1..=5 {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message.headers.get("Nats-Msg-Id").unwrap().to_string();
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["id"].as_str().unwrap(), id);
        assert_eq!(
            message.subject.as_str(),
            format!("chat.events.{}", event["type"].as_str().unwrap())
        );
        ids.push(id);
        if let Some(body) = event["data"]["body"].as_str() {
            bodies.push(body.to_owned());
        }
    }
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 5, "each event once");
    assert_eq!(bodies, ["before", "during"]);
}

async fn wait_until<F, Fut>(mut count: F, at_least: u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    tokio::time::timeout(Duration::from_secs(60), async {
        while count().await < at_least {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{at_least} events in JetStream within 60 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_jetstream_gets_every_event_through_an_outage() {
    jetstream_gets_every_event_through_an_outage(Backend::Sqlite, "sinks::sqlite_jetstream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_jetstream_gets_every_event_through_an_outage() {
    jetstream_gets_every_event_through_an_outage(Backend::Postgres, "sinks::postgres_jetstream")
        .await;
}
