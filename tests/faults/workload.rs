//! The load fault tests run and the audit after it: concurrent senders, each message
//! retried with the same `client_message_id` until acknowledged, readers marking
//! threads read; then every thread is read back and checked against what was
//! acknowledged.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatd::auth::TokenSigner;
use chatd::domain::Role;
use chatd::grpc::pb;
use chatd::grpc::pb::chat_service_client::ChatServiceClient;
use chatd::grpc::pb::sync_service_client::SyncServiceClient;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::processes::SECRET;

type Client = ChatServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// How the test reaches chatd: one lazily connected channel, which reconnects by
/// itself when chatd comes back, and tokens for anyone.
#[derive(Clone)]
pub struct Caller {
    channel: Channel,
    signer: Arc<TokenSigner>,
}

impl Caller {
    pub fn new(grpc: SocketAddr) -> Self {
        let channel = Endpoint::from_shared(format!("http://{grpc}"))
            .expect("an endpoint")
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        Self {
            channel,
            signer: Arc::new(TokenSigner::from_secret(SECRET.as_bytes(), None, None)),
        }
    }

    fn bearer(&self, user: i64, role: Role) -> Bearer {
        let token = self
            .signer
            .sign(user, role, Duration::from_secs(3600))
            .expect("a token");
        Bearer(format!("Bearer {token}").parse().expect("an ASCII header"))
    }

    pub fn chat(&self, user: i64, role: Role) -> Client {
        ChatServiceClient::with_interceptor(self.channel.clone(), self.bearer(user, role))
    }

    pub fn sync(&self) -> SyncServiceClient<InterceptedService<Channel, Bearer>> {
        SyncServiceClient::with_interceptor(self.channel.clone(), self.bearer(1, Role::Service))
    }
}

/// Retries `call` until it succeeds, for at most a minute (a fault test's database or
/// server is down for seconds, not minutes), telling `tally` of each failure.
async fn until_ok<T, F, Fut>(what: &str, tally: Option<&Tally>, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return value,
            Err(status) => {
                if let Some(tally) = tally {
                    tally.failed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{what} still fails after a minute: {status:?}"
                );
                // Not a synchronisation: the pause between a client's retries.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A tutor, a student and their contact thread.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub tutor: i64,
    pub student: i64,
    pub thread_id: i64,
}

/// `count` pairs, each with an open contact thread.
pub async fn pairs(caller: &Caller, count: i64) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for n in 1..=count {
        let (tutor, student) = (100 + n, 1000 + n);
        until_ok("upsert relation", None, || {
            let mut client = caller.sync();
            let request = pb::UpsertRelationRequest {
                relation_id: n,
                tutor_id: tutor,
                student_id: student,
                status: pb::RelationStatus::Active.into(),
                version: 1,
            };
            async move { client.upsert_relation(request).await }
        })
        .await;
        until_ok("upsert contact access", None, || {
            let mut client = caller.sync();
            let request = pb::UpsertContactAccessRequest {
                tutor_id: tutor,
                student_id: student,
                state: pb::ContactAccessState::Unlocked.into(),
                version: 1,
            };
            async move { client.upsert_contact_access(request).await }
        })
        .await;
        let thread = until_ok("ensure thread", None, || {
            let mut client = caller.chat(tutor, Role::Tutor);
            let request = pb::EnsureThreadRequest {
                target: Some(pb::ensure_thread_request::Target::RelationId(n)),
            };
            async move { client.ensure_thread(request).await }
        })
        .await;
        let thread_id = thread.into_inner().thread.expect("a thread").thread_id;
        pairs.push(Pair {
            tutor,
            student,
            thread_id,
        });
    }
    pairs
}

/// A message chatd acknowledged.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub thread_id: i64,
    pub client_message_id: String,
    pub message_id: i64,
    pub seq: i64,
}

/// What the load saw, shared while it runs.
#[derive(Default)]
pub struct Seen {
    pub acknowledged: Vec<Acknowledged>,
    /// When each call succeeded, to find the first success after an outage.
    pub successes: Vec<Instant>,
    pub failures: usize,
}

/// Where senders count what happens, as it happens.
struct Tally {
    seen: Mutex<Seen>,
    progress: watch::Sender<(usize, usize)>,
}

impl Tally {
    fn failed(&self) {
        let mut seen = self.seen.lock().unwrap();
        seen.failures += 1;
        self.progress
            .send_replace((seen.acknowledged.len(), seen.failures));
    }

    fn succeeded(&self, acknowledged: Option<Acknowledged>) {
        let mut seen = self.seen.lock().unwrap();
        seen.successes.push(Instant::now());
        seen.acknowledged.extend(acknowledged);
        self.progress
            .send_replace((seen.acknowledged.len(), seen.failures));
    }
}

/// The running load: its progress (acknowledged, failed attempts) to wait on.
pub struct Load {
    pub progress: watch::Receiver<(usize, usize)>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Waits until `enough(acknowledged, failures)` holds.
    pub async fn until(&mut self, enough: impl Fn(usize, usize) -> bool) {
        let waited = tokio::time::timeout(
            Duration::from_secs(120),
            self.progress
                .wait_for(|(acknowledged, failures)| enough(*acknowledged, *failures)),
        )
        .await
        .is_ok_and(|reached| reached.is_ok());
        assert!(
            waited,
            "the load never got there: {:?}",
            *self.progress.borrow()
        );
    }

    /// Waits for every sender to finish; returns what was seen.
    pub async fn finish(self) -> Seen {
        for task in self.tasks {
            task.await.expect("a sender finished");
        }
        std::mem::take(&mut *self.tally.seen.lock().unwrap())
    }
}

/// Starts `senders` concurrent senders, each sending `messages` messages to a thread
/// of `pairs` (students and tutors in turn), and after each, the other side marking
/// the thread read every third time.
pub fn start(caller: &Caller, pairs: &[Pair], senders: usize, messages: usize) -> Load {
    let (progress_tx, progress) = watch::channel((0, 0));
    let tally = Arc::new(Tally {
        seen: Mutex::new(Seen::default()),
        progress: progress_tx,
    });
    let tasks = (0..senders)
        .map(|sender| {
            let pair = pairs[sender % pairs.len()];
            let caller = caller.clone();
            let tally = tally.clone();
            tokio::spawn(async move {
                let (from, from_role, to, to_role) = if sender % 2 == 0 {
                    (pair.student, Role::Student, pair.tutor, Role::Tutor)
                } else {
                    (pair.tutor, Role::Tutor, pair.student, Role::Student)
                };
                for n in 0..messages {
                    let client_message_id = format!("s{sender}-m{n}");
                    let sent = until_ok("send", Some(&tally), || {
                        let mut client = caller.chat(from, from_role);
                        let request = pb::SendMessageRequest {
                            thread_id: pair.thread_id,
                            body: format!("message {n} of sender {sender}"),
                            client_message_id: client_message_id.clone(),
                        };
                        async move { client.send_message(request).await }
                    })
                    .await;
                    let message = sent.into_inner().message.expect("the message");
                    tally.succeeded(Some(Acknowledged {
                        thread_id: pair.thread_id,
                        client_message_id,
                        message_id: message.message_id,
                        seq: message.seq,
                    }));
                    if n % 3 == 2 {
                        until_ok("mark read", Some(&tally), || {
                            let mut client = caller.chat(to, to_role);
                            let request = pb::MarkReadRequest {
                                thread_id: pair.thread_id,
                                up_to_seq: None,
                            };
                            async move { client.mark_read(request).await }
                        })
                        .await;
                        tally.succeeded(None);
                    }
                }
            })
        })
        .collect();
    Load {
        progress,
        tally,
        tasks,
    }
}

/// How long after `back` the first call succeeded.
pub fn recovery(seen: &Seen, back: Instant) -> Duration {
    seen.successes
        .iter()
        .filter(|at| **at >= back)
        .min()
        .map(|first| first.duration_since(back))
        .expect("calls succeeded after the fault")
}

/// Every thread read back: every acknowledged message stored once with its id and
/// seq, seqs 1..=n with no gap, nothing stored that was not acknowledged, and each
/// side's unread count equal to a recount of the other side's messages after its read
/// cursor.
pub async fn audit(caller: &Caller, pairs: &[Pair], acknowledged: &[Acknowledged]) {
    for pair in pairs {
        let mut stored = Vec::new();
        let mut before_seq = None;
        let mut cursors;
        loop {
            let page = until_ok("list messages", None, || {
                let mut client = caller.chat(pair.tutor, Role::Tutor);
                let request = pb::ListMessagesRequest {
                    thread_id: pair.thread_id,
                    before_seq,
                    after_seq: None,
                    limit: 200,
                };
                async move { client.list_messages(request).await }
            })
            .await;
            let page = page.into_inner();
            cursors = (page.last_read_seq, page.peer_last_read_seq);
            before_seq = page.messages.iter().map(|m| m.seq).min();
            stored.extend(page.messages);
            if !page.has_more {
                break;
            }
        }
        let (tutor_read, student_read) = cursors;
        stored.sort_by_key(|m| m.seq);
        let seqs: Vec<i64> = stored.iter().map(|m| m.seq).collect();
        let expected: Vec<i64> = (1..=stored.len() as i64).collect();
        assert_eq!(
            seqs, expected,
            "thread {}: seqs are 1..=n, no gap",
            pair.thread_id
        );
        let ids: HashSet<&str> = stored
            .iter()
            .map(|m| m.client_message_id.as_str())
            .collect();
        assert_eq!(
            ids.len(),
            stored.len(),
            "thread {}: no duplicates",
            pair.thread_id
        );
        let by_id: BTreeMap<&str, &pb::Message> = stored
            .iter()
            .map(|m| (m.client_message_id.as_str(), m))
            .collect();
        let mine: Vec<&Acknowledged> = acknowledged
            .iter()
            .filter(|a| a.thread_id == pair.thread_id)
            .collect();
        for ack in &mine {
            let message = by_id
                .get(ack.client_message_id.as_str())
                .unwrap_or_else(|| {
                    panic!(
                        "thread {}: acknowledged {ack:?} is not stored",
                        pair.thread_id
                    )
                });
            assert_eq!(
                (message.message_id, message.seq),
                (ack.message_id, ack.seq),
                "thread {}: stored as acknowledged",
                pair.thread_id
            );
        }
        assert_eq!(
            stored.len(),
            mine.len(),
            "thread {}: only acknowledged messages are stored",
            pair.thread_id
        );
        for (reader, role, read_up_to, writer) in [
            (pair.tutor, Role::Tutor, tutor_read, pair.student),
            (pair.student, Role::Student, student_read, pair.tutor),
        ] {
            let recount = stored
                .iter()
                .filter(|m| m.sender_id == writer && m.seq > read_up_to)
                .count() as i64;
            let summary = until_ok("unread summary", None, || {
                let mut client = caller.chat(reader, role);
                let request = pb::GetUnreadSummaryRequest {
                    limit: 200,
                    if_none_match: String::new(),
                };
                async move { client.get_unread_summary(request).await }
            })
            .await;
            let counted = summary
                .into_inner()
                .threads
                .iter()
                .find(|t| t.thread_id == pair.thread_id)
                .map_or(0, |t| t.unread_count);
            assert_eq!(
                counted, recount,
                "thread {}: {role:?} {reader}'s unread count is a recount",
                pair.thread_id
            );
        }
    }
}
