//! `chatd bench`'s flags, and the one place they become a checked `BenchConfig`.

use std::time::Duration;

use clap::Args;

use super::{AuthArgs, DatabaseArgs};
use crate::bench::{BenchConfig, Dataset, Rpc};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The running chatd to drive (it must use the same database and token secret).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Seed the dataset into --database-url first (the database must have no threads).
    #[arg(long)]
    pub seed: bool,
    /// Users in the dataset: half tutors, half students.
    #[arg(long, default_value_t = 100_000)]
    pub users: i64,
    /// Threads in the dataset, one per tutor-student relation.
    #[arg(long, default_value_t = 1_000_000)]
    pub threads: i64,
    /// Messages in the dataset, spread evenly over the threads.
    #[arg(long, default_value_t = 10_000_000)]
    pub messages: i64,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long each RPC is driven.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Polling mode: --online-users tutors poll their unread summary (gRPC, then REST
    /// with If-None-Match) while their students send --send-rate messages per second;
    /// reports poll rates and latency, the cache hit ratio, and Check in the same run.
    #[arg(long)]
    pub poll: bool,
    /// Polling mode: how many users are online and poll.
    #[arg(long, default_value_t = 20_000)]
    pub online_users: usize,
    /// Polling mode: the gRPC phases (chatd's polls, the ceiling's, Check, Check with the
    /// users' tokens) run in turn in this many slices of --duration / N each, so a drift
    /// in the machine's speed during the run falls on all of them alike; 1 runs each
    /// whole, chatd's polls first.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub poll_slices: u32,
    /// Polling mode: the REST gateway to poll, whose /metrics gives the hit ratio.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub http_target: String,
    /// Watcher mode: open this many WatchUnreadSummary streams (one per tutor), send
    /// messages to them at --send-rate, and report delivery latency and server RSS.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Window mode: open this many WatchThread streams (one per thread, each watched by
    /// its tutor: open chat windows), send messages into them at --send-rate, and report
    /// delivery latency and server RSS per stream.
    #[arg(long, default_value_t = 0)]
    pub windows: usize,
    /// Polling, watcher and window modes: messages per second (in watcher and window
    /// modes each stream receives at most one).
    #[arg(long, default_value_t = 200)]
    pub send_rate: u32,
    /// Watcher and window modes: pid of the chatd under test, to report its resident
    /// memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Watcher and window modes: send messages through this replica instead of --target,
    /// to measure delivery across replicas (the fan-out).
    #[arg(long)]
    pub send_target: Option<String>,
    /// Erasure mode: insert this many messages of a new user into --database-url, then
    /// erase the user (EraseUser) while --concurrency clients send as other users;
    /// reports how long it took and the others' SendMessage before and during it.
    #[arg(long)]
    pub erase: Option<i64>,
    /// Events mode: listen here as a webhook receiver (start the chatd under test with
    /// --webhook-url http://ADDR/hook), send --send-rate messages per second for
    /// --duration, and report each event's lag from commit to receipt and the relay's
    /// throughput.
    #[arg(long)]
    pub events_receiver: Option<String>,
    /// Events mode: also subscribe to chat.events.> on this NATS server (the chatd
    /// under test's --events-url) and report its lag.
    #[arg(long)]
    pub events_nats: Option<String>,
    /// Polling mode: also poll this cached-answer ceiling (a `chatd bench
    /// --serve-cached-summaries` of its own) over gRPC, right after chatd, and report
    /// chatd's gRPC polls as a fraction of its.
    #[arg(long)]
    pub ceiling_target: Option<String>,
    /// Serve the polling mix's cached-answer ceiling on this address until stopped: chat.v1
    /// GetUnreadSummary over the stack chatd serves gRPC with, the same bearer token
    /// verified, the summaries of tutors 1 to --online-users answered from a map (read
    /// from the database once at start, as chatd answers them). Drives no load.
    #[arg(long)]
    pub serve_cached_summaries: Option<std::net::SocketAddr>,
    /// RPCs to drive, in order (default: all, starting with the Health/Check reference).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub rpcs: Vec<Rpc>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

impl BenchArgs {
    pub fn config(&self) -> Result<BenchConfig, String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        let modes = [
            self.poll,
            self.watchers > 0,
            self.windows > 0,
            self.erase.is_some(),
            self.events_receiver.is_some(),
            self.serve_cached_summaries.is_some(),
        ];
        if modes.iter().filter(|on| **on).count() > 1 {
            return Err(
                "choose one mode: --poll, --watchers, --windows, --erase, --events-receiver \
                 or --serve-cached-summaries"
                    .into(),
            );
        }
        if self.events_nats.is_some() && self.events_receiver.is_none() {
            return Err("--events-nats goes with --events-receiver (events mode)".into());
        }
        if self.ceiling_target.is_some() && !self.poll {
            return Err("--ceiling-target goes with --poll (polling mode)".into());
        }
        if self.erase.is_some_and(|n| n < 1) {
            return Err("--erase takes how many messages to erase: at least 1".into());
        }
        let dataset = Dataset {
            users: self.users,
            threads: self.threads,
            messages: self.messages,
        };
        dataset.validate()?;
        Ok(BenchConfig {
            target: self.target.clone(),
            dataset,
            seed: self.seed,
            concurrency: self.concurrency,
            duration: self.duration,
            rpcs: if self.rpcs.is_empty() {
                Rpc::ALL.to_vec()
            } else {
                self.rpcs.clone()
            },
            poll: self.poll,
            online_users: self.online_users,
            poll_slices: self.poll_slices,
            http_target: self.http_target.clone(),
            watchers: self.watchers,
            windows: self.windows,
            send_rate: self.send_rate,
            server_pid: self.server_pid,
            send_target: self.send_target.clone(),
            erase: self.erase,
            events_receiver: self.events_receiver.clone(),
            events_nats: self.events_nats.clone(),
            ceiling_target: self.ceiling_target.clone(),
        })
    }
}
