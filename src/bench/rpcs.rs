//! The per-RPC mode: N clients call one RPC at a time for T seconds each, over threads
//! sampled from the dataset; Health/Check first, as the reference.

use std::time::{Duration, Instant};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::Dataset;
use super::gateway::HttpTarget;
use super::phases::WritePhases;
use super::{BenchConfig, ClientRun, Latencies, Report, authed, bearer, connect};
use crate::auth::TokenSigner;
use crate::domain::Role;
use crate::proto as pb;
use crate::proto::chat_service_client::ChatServiceClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    Check,
    GetUnreadSummary,
    EnsureThread,
    SendMessage,
    MarkRead,
    /// Deletes one of a random thread's seeded messages (the student's), across the
    /// whole dataset, so nearly every call deletes a message not deleted yet.
    DeleteMessage,
    /// Marks a random thread unread from one of its newest seeded messages (the tutor).
    MarkUnread,
    /// The first page of a sampled tutor's inbox (all their threads, newest first).
    ListThreads,
}

impl Rpc {
    pub const ALL: [Rpc; 8] = [
        Rpc::Check,
        Rpc::GetUnreadSummary,
        Rpc::EnsureThread,
        Rpc::SendMessage,
        Rpc::MarkRead,
        Rpc::DeleteMessage,
        Rpc::MarkUnread,
        Rpc::ListThreads,
    ];

    fn name(self) -> &'static str {
        match self {
            Rpc::Check => "Health/Check",
            Rpc::GetUnreadSummary => "GetUnreadSummary",
            Rpc::EnsureThread => "EnsureThread",
            Rpc::SendMessage => "SendMessage",
            Rpc::MarkRead => "MarkRead",
            Rpc::DeleteMessage => "DeleteMessage",
            Rpc::MarkUnread => "MarkUnread",
            Rpc::ListThreads => "ListThreads",
        }
    }
}

/// One sampled thread with bearer headers for both of its participants.
#[derive(Clone)]
struct Participants {
    thread: i64,
    tutor: MetadataValue<Ascii>,
    student: MetadataValue<Ascii>,
}

/// How many threads the load samples from (tokens are minted once per sampled thread).
const SAMPLE: i64 = 2048;

pub async fn run(config: &BenchConfig, signer: &TokenSigner) -> Result<(), String> {
    let dataset = config.dataset;
    let sample = sample_participants(&dataset, signer)?;
    let channels = connect(&config.target, config.concurrency).await?;
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
    // A SQLite server's writer phases, when its /metrics can be read.
    let http = HttpTarget::parse(&config.http_target).ok();
    let mut reports = Vec::new();
    let mut phases = Vec::new();
    for rpc in &config.rpcs {
        let anywhere = Anywhere {
            dataset,
            signer: signer.clone(),
        };
        let before = WritePhases::read(http.as_ref()).await;
        reports.push(drive(*rpc, &channels, &sample, anywhere, config.duration, &empty).await);
        let lines = before.report_until(&WritePhases::read(http.as_ref()).await);
        if !lines.is_empty() {
            phases.push((rpc.name(), lines));
        }
    }
    let check = reports
        .iter()
        .find(|report| report.name == Rpc::Check.name())
        .map(Report::rps);
    super::print_reports(&reports, check);
    for (rpc, lines) in phases {
        println!(
            "{rpc} on the SQLite writer, by phase (the server's /metrics; a quantile is its bucket's bound):"
        );
        lines.iter().for_each(|line| println!("{line}"));
    }
    Ok(())
}

fn sample_participants(
    dataset: &Dataset,
    signer: &TokenSigner,
) -> Result<Vec<Participants>, String> {
    (0..SAMPLE.min(dataset.threads))
        .map(|_| {
            let thread = 1 + fastrand::i64(0..dataset.threads);
            Ok(Participants {
                thread,
                tutor: bearer(signer, dataset.tutor_of(thread), Role::Tutor)?,
                student: bearer(signer, dataset.student_of(thread), Role::Student)?,
            })
        })
        .collect()
}

/// Random threads over the whole dataset, with bearer headers minted as needed (a
/// client keeps the few it meets: the dataset's students are few).
#[derive(Clone)]
struct Anywhere {
    dataset: Dataset,
    signer: TokenSigner,
}

impl Anywhere {
    fn header(
        &self,
        minted: &mut std::collections::HashMap<(i64, Role), MetadataValue<Ascii>>,
        user: i64,
        role: Role,
    ) -> Result<MetadataValue<Ascii>, String> {
        if let Some(header) = minted.get(&(user, role)) {
            return Ok(header.clone());
        }
        let header = bearer(&self.signer, user, role)?;
        minted.insert((user, role), header.clone());
        Ok(header)
    }
}

/// Runs `rpc` from every channel at once until `duration` has passed.
async fn drive(
    rpc: Rpc,
    channels: &[Channel],
    sample: &[Participants],
    anywhere: Anywhere,
    duration: Duration,
    empty: &Latencies,
) -> Report {
    let started = Instant::now();
    let deadline = started + duration;
    let clients = channels
        .iter()
        .cloned()
        .map(|channel| {
            let sample = sample.to_vec();
            let anywhere = anywhere.clone();
            let mut minted = std::collections::HashMap::new();
            let mut run = ClientRun::new(empty);
            tokio::spawn(async move {
                let mut health = HealthClient::new(channel.clone());
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                let mut chat = ChatServiceClient::new(channel);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let Participants {
                        thread,
                        tutor,
                        student,
                    } = &sample[fastrand::usize(..sample.len())];
                    n += 1;
                    let call_started = Instant::now();
                    let result = match rpc {
                        Rpc::Check => health
                            .check(HealthCheckRequest {
                                service: String::new(),
                            })
                            .await
                            .map(drop),
                        Rpc::GetUnreadSummary => super::poll_summary(&mut grpc, tutor).await,
                        Rpc::ListThreads => chat
                            .list_threads(authed(pb::ListThreadsRequest::default(), tutor))
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
                                    client_message_id: super::idempotency_key(),
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
                        Rpc::DeleteMessage | Rpc::MarkUnread => {
                            let dataset = anywhere.dataset;
                            let thread = 1 + fastrand::i64(0..dataset.threads);
                            let seeded = dataset.messages_per_thread();
                            let seq = seeded - fastrand::i64(0..seeded.min(100));
                            let (user, role) = match rpc {
                                Rpc::DeleteMessage => (dataset.student_of(thread), Role::Student),
                                _ => (dataset.tutor_of(thread), Role::Tutor),
                            };
                            let call_started = Instant::now();
                            let result = match anywhere.header(&mut minted, user, role) {
                                Err(error) => Err(tonic::Status::internal(error)),
                                Ok(header) if rpc == Rpc::DeleteMessage => chat
                                    .delete_message(authed(
                                        pb::DeleteMessageRequest {
                                            thread_id: thread,
                                            seq,
                                        },
                                        &header,
                                    ))
                                    .await
                                    .map(drop),
                                Ok(header) => chat
                                    .mark_unread(authed(
                                        pb::MarkUnreadRequest {
                                            thread_id: thread,
                                            from_seq: seq,
                                        },
                                        &header,
                                    ))
                                    .await
                                    .map(drop),
                            };
                            run.record(
                                call_started,
                                result.map_err(|status| {
                                    format!("{:?}: {}", status.code(), status.message())
                                }),
                            );
                            continue;
                        }
                    };
                    run.record(
                        call_started,
                        result
                            .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
                    );
                }
                run
            })
        })
        .collect();
    Report::collect(rpc.name(), started, clients, empty).await
}
