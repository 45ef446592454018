//! Events out through faults: two PostgreSQL replicas relay to NATS JetStream and to a
//! webhook while a send load runs and, in turn, the relaying replica is killed with
//! SIGKILL, nats-server is stopped and started again, the webhook receiver answers 500,
//! then hangs, then comes back, and PostgreSQL is stopped with `-m immediate` and
//! started again. Afterwards: every acknowledged message has exactly one
//! `chat.message.created` in the log and nothing else does; positions run 1..=n with no
//! gap; each sink received every event at least once, each thread's in version order,
//! and a repeat only with the same id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;

use crate::nats_server::NatsServer;
use crate::processes::{Chatd, TempDir, ThrowawayPostgres, free_port};
use crate::workload::{self, Caller};

/// How the webhook receiver answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mood {
    Accept,
    Refuse,
    Hang,
}

impl Mood {
    fn name(self) -> &'static str {
        match self {
            Mood::Accept => "accept",
            Mood::Refuse => "refuse",
            Mood::Hang => "hang",
        }
    }
}

/// One event as a sink received it: id, position, thread and version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    id: String,
    position: i64,
    thread_id: i64,
    thread_version: i64,
}

fn received(event: &serde_json::Value) -> Received {
    Received {
        id: event["id"].as_str().expect("an id").to_owned(),
        position: event["position"].as_i64().expect("a position"),
        thread_id: event["subject"]
            .as_str()
            .map_or(0, |subject| subject.parse().expect("a thread id")),
        thread_version: event["threadversion"].as_i64().expect("a version"),
    }
}

struct Receiver {
    url: String,
    mood: Arc<Mutex<Mood>>,
    accepted: Arc<Mutex<Vec<Received>>>,
    /// Requests answered in each mood.
    answered: Arc<Mutex<HashMap<&'static str, usize>>>,
}

impl Receiver {
    async fn start() -> Self {
        let mood = Arc::new(Mutex::new(Mood::Accept));
        let accepted: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answered: Arc<Mutex<HashMap<&'static str, usize>>> = Arc::default();
        let (now, kept, counted) = (mood.clone(), accepted.clone(), answered.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let (now, kept, counted) = (now.clone(), kept.clone(), counted.clone());
                async move {
                    let mood = *now.lock().unwrap();
                    *counted.lock().unwrap().entry(mood.name()).or_insert(0) += 1;
                    match mood {
                        Mood::Refuse => return StatusCode::INTERNAL_SERVER_ERROR,
                        // Longer than chatd waits (10 s): the batch counts as not delivered.
                        Mood::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
                        Mood::Accept => {}
                    }
                    let batch: Vec<serde_json::Value> =
                        serde_json::from_str(&body).expect("a JSON batch");
                    if mood == Mood::Accept {
                        kept.lock().unwrap().extend(batch.iter().map(received));
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", free_port()))
            .await
            .expect("the receiver listens");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            mood,
            accepted,
            answered,
        }
    }

    fn set(&self, mood: Mood) {
        *self.mood.lock().unwrap() = mood;
    }

    /// Waits until chatd has tried the receiver `times` times in `mood`.
    async fn tried(&self, mood: Mood, times: usize) {
        let tried = tokio::time::timeout(Duration::from_secs(60), async {
            while self
                .answered
                .lock()
                .unwrap()
                .get(mood.name())
                .copied()
                .unwrap_or(0)
                < times
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            tried.is_ok(),
            "chatd tried the receiver {times} times while it was {mood:?}"
        );
    }
}

/// Every event in `nats`' JetStream stream, in stream order.
async fn jetstream_events(nats: &NatsServer) -> Vec<Received> {
    let client = async_nats::connect(nats.url()).await.expect("NATS answers");
    let jetstream = async_nats::jetstream::new(client);
    let Ok(mut stream) = jetstream.get_stream("CHATD_EVENTS").await else {
        return Vec::new();
    };
    let last = stream
        .info()
        .await
        .map_or(0, |info| info.state.last_sequence);
    let mut events = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            let event: serde_json::Value =
                serde_json::from_slice(&message.payload).expect("a JSON event");
            let id = message.headers.get("Nats-Msg-Id").map(ToString::to_string);
            assert_eq!(id.as_deref(), event["id"].as_str(), "Nats-Msg-Id is the id");
            events.push(received(&event));
        }
    }
    events
}

/// The log as stored: every event's id, position, thread and version, and the
/// `chat.message.created` events per (thread, seq).
async fn log(url: &str) -> (Vec<Received>, HashMap<(i64, i64), usize>) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    // The replicas number what they wrote right after each write: wait for the last.
    let numbered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let row = client
                .query_one("SELECT count(*) FROM events WHERE position IS NULL", &[])
                .await
                .expect("the log");
            if row.get::<_, i64>(0) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(numbered.is_ok(), "every event numbered within 10 s");
    let rows = client
        .query(
            "SELECT event_id, position, thread_id, COALESCE(thread_version, 0), kind, seq \
             FROM events ORDER BY position",
            &[],
        )
        .await
        .expect("the log");
    let mut events = Vec::new();
    let mut created = HashMap::new();
    for row in rows {
        let position: Option<i64> = row.get(1);
        events.push(Received {
            id: row.get::<_, i64>(0).to_string(),
            position: position.expect("every event numbered"),
            thread_id: row.get(2),
            thread_version: row.get(3),
        });
        if row.get::<_, String>(4) == "chat.message.created" {
            *created.entry((row.get(2), row.get(5))).or_insert(0) += 1;
        }
    }
    (events, created)
}

/// Every logged event reached the sink, a repeat only with the same position, and each
/// thread's events first arrived in version order.
fn assert_sink_got(sink: &str, got: &[Received], log: &[Received]) {
    let by_id: HashMap<&str, &Received> = log.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut first = HashSet::new();
    let mut versions: BTreeMap<i64, i64> = BTreeMap::new();
    for event in got {
        let logged = by_id
            .get(event.id.as_str())
            .unwrap_or_else(|| panic!("{sink}: {event:?} is not in the log"));
        assert_eq!(*logged, event, "{sink}: a repeat is the same event");
        if first.insert(event.id.clone()) && event.thread_version > 0 {
            let last = versions.insert(event.thread_id, event.thread_version);
            assert!(
                last.is_none_or(|last| last < event.thread_version),
                "{sink}: thread {} in version order",
                event.thread_id
            );
        }
    }
    let missing: Vec<&Received> = log.iter().filter(|e| !first.contains(&e.id)).collect();
    assert!(
        missing.is_empty(),
        "{sink} never got {} events: {missing:?}",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_event_reaches_every_sink_through_faults() {
    let test = "faults::postgres_every_event_reaches_every_sink_through_faults";
    let Some(postgres) = ThrowawayPostgres::start(test).await else {
        return;
    };
    let Some(mut nats) = NatsServer::start_jetstream(test).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let dir = TempDir::new();
    let nats_url = nats.url();
    let flags = [
        "--call-timeout",
        "2s",
        "--db-timeout",
        "1s",
        "--events-url",
        &nats_url,
        "--webhook-url",
        &receiver.url,
        "--webhook-secret",
        "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    ];
    // A relays first (it takes the free lease); the load writes through B.
    let mut a = Chatd::start(&dir.0, &postgres.url(), &flags, None).await;
    let b = Chatd::start(&dir.0, &postgres.url(), &flags, None).await;
    let writer = Caller::new(b.grpc);
    let pairs = workload::pairs(&writer, 4).await;
    let mut load = workload::start(&writer, &pairs, 8, 60);

    load.until(|acknowledged, _| acknowledged >= 60).await;
    a.kill().await;
    receiver.set(Mood::Refuse);
    load.until(|acknowledged, _| acknowledged >= 120).await;
    postgres.stop_immediately().await;
    postgres.start_again().await;
    let mut seen = load.finish().await;
    // B took the lease over and met the refusals, then a receiver that hangs.
    receiver.tried(Mood::Refuse, 2).await;
    receiver.set(Mood::Hang);
    receiver.tried(Mood::Hang, 1).await;
    // Messages written while NATS is down reach it once it is back.
    nats.stop().await;
    let pair = pairs[0];
    for n in 0..10 {
        let client_message_id = format!("during-outage-{n}");
        let message = writer
            .chat(pair.student, chatd::domain::Role::Student)
            .send_message(chatd::grpc::pb::SendMessageRequest {
                thread_id: pair.thread_id,
                body: format!("during the NATS outage {n}"),
                client_message_id: client_message_id.clone(),
            })
            .await
            .expect("sends work while NATS is down")
            .into_inner()
            .message
            .expect("the message");
        seen.acknowledged.push(workload::Acknowledged {
            thread_id: pair.thread_id,
            client_message_id,
            message_id: message.message_id,
            seq: message.seq,
        });
    }
    nats.restart().await;
    receiver.set(Mood::Accept);
    workload::audit(&writer, &pairs, &seen.acknowledged).await;

    // Every acknowledged message is logged once; nothing else is.
    let (logged, created) = log(&postgres.url()).await;
    for message in &seen.acknowledged {
        assert_eq!(
            created.get(&(message.thread_id, message.seq)),
            Some(&1),
            "{message:?} logged once"
        );
    }
    assert_eq!(
        created.len(),
        seen.acknowledged.len(),
        "no event for a message not acknowledged"
    );
    let positions: Vec<i64> = logged.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=logged.len() as i64).collect::<Vec<_>>(),
        "no gap"
    );

    // B relays now; both sinks catch up with the whole log.
    let newest = logged.last().map(|e| e.position).unwrap_or_default();
    let caught_up = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let webhook = receiver
                .accepted
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.position)
                .max();
            let stream = jetstream_events(&nats).await;
            if webhook >= Some(newest) && stream.iter().map(|e| e.position).max() >= Some(newest) {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "both sinks caught up with position {newest} within 120 s; chatd B's log: {}",
            b.log.display()
        )
    });
    assert_sink_got("webhook", &receiver.accepted.lock().unwrap(), &logged);
    assert_sink_got("nats", &caught_up, &logged);
}
