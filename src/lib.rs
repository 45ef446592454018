//! chatd: chat threads between tutors and students, and their unread counts, over gRPC.
//!
//! The house, top floor first; each module depends only on ones below it:
//! - `cli`, `config`: the command line and its environment variables, into a checked
//!   `ServeConfig`.
//! - `app`: assembles and runs the server (migrations, health, reflection, metrics,
//!   the change fan-out, background tasks, shutdown).
//! - `bench`: the load generator behind `chatd bench`, and its seeded dataset.
//! - Transports: `http` (the REST/JSON edge gateway, calling chatd over gRPC like any
//!   client) and `grpc` (tonic services, the authentication, proto ↔ domain
//!   conversion, the one `DomainError` → `Status` mapping); `proto` (the generated code).
//! - `domain`: the operations, transport-free.
//! - Infrastructure the domain keeps in memory: `summaries` (the cache of unread
//!   summaries, their watchers, etags), `live` (the open windows' watchers and
//!   typing), `limits` (the send rate per user), `tickets` (stream tickets' secrets),
//!   and `fanout` (telling other replicas, after commit).
//! - `storage`: schema, migrations, and every read and write on PostgreSQL or embedded
//!   SQLite, each write deciding with the rules under its locks.
//! - Beside the transports, for both of them: `auth` (JWT verification into the
//!   domain's `Caller`), `status` (the one table of the domain's error reasons with
//!   their gRPC code and HTTP status), `net` (accepting connections within limits),
//!   `telemetry` (logs and OpenTelemetry traces), `metrics` (a Prometheus registry per
//!   application; a leaf).
//! - The ground floor: `rules` (every rule, as plain functions) and `model` (the nouns
//!   every layer names: roles, sides, kinds, statuses, ids, records).
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod domain;
pub mod fanout;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod model;
pub mod net;
pub mod outbox;
pub mod proto;
pub mod relay;
pub mod rules;
pub mod status;
pub mod storage;
pub mod summaries;
pub mod telemetry;
pub mod tickets;
