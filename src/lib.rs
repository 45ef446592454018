//! chatd: chat threads between tutors and students, and their unread counts, over gRPC.
//!
//! Modules, each depending only on ones listed after it (never on one before it):
//! - `cli`: the command line and its environment variables, into config structs.
//! - `app`: assembles and runs the server (migrations, health, reflection, metrics,
//!   the change fan-out, shutdown).
//! - `bench`: the load generator behind `chatd bench`, and its seeded dataset.
//! - `http`: the REST/JSON edge gateway, calling chatd over gRPC like any client.
//! - `grpc`: tonic services, the auth interceptor, proto ↔ domain conversion, and the
//!   one `DomainError` → `Status` mapping.
//! - `proto`: the code generated from `proto/chat/v1/chat.proto`, and its codec.
//! - `status`: the one table of error reasons with their gRPC code and HTTP status,
//!   below both transports and the codec.
//! - `auth`: JWT verification into a typed `Caller`, and development token signing.
//! - `domain`: the operations, transport-free.
//! - `fanout`: telling other replicas, after commit, which summaries changed.
//! - `storage`: schema, migrations, reads and writes on PostgreSQL or embedded SQLite.
//! - `domain::rules`: every rule, as plain functions. A file of `domain`, but a leaf
//!   that names only `model`, so storage calls the rules it applies.
//! - `net`: accepting connections within limits (a cap, deadlines, backoff).
//! - `telemetry`: logs (text or JSON) and OpenTelemetry traces over OTLP, with W3C
//!   trace context carried across the gateway, chatd and storage.
//! - `metrics`: a Prometheus registry per application (a leaf: it names no other module).
//! - `model`: the nouns every layer names (roles, sides, kinds, statuses, summary keys).
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod domain;
pub mod fanout;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod net;
pub mod proto;
pub mod rules;
pub mod status;
pub mod storage;
pub mod telemetry;
