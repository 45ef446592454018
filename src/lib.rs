//! chatd: chat threads between tutors and students, and their unread counts, over gRPC.
//!
//! Layers, each depending only on the ones after it:
//! - `cli`: the command line and its environment variables, into config structs.
//! - `app`: builds and runs the server (migrations, health, reflection, shutdown).
//! - `http`: the REST/JSON edge gateway, translating the web API into gRPC calls.
//! - `grpc`: tonic services, the auth interceptor, proto ↔ domain conversion, and the
//!   one `DomainError` → `Status` mapping.
//! - `bench`: the load generator behind `chatd bench`.
//! - `auth`: JWT verification into a typed `Caller`, and development token signing.
//! - `domain`: the rules and guards of threads, messages, unread counts and facts.
//! - `metrics`: Prometheus counters and histograms, served at `/metrics`.
//! - `telemetry`: logs (text or JSON) and OpenTelemetry traces over OTLP, with W3C
//!   trace context carried across the gateway, chatd and storage.
//! - `storage`: schema, migrations and queries on PostgreSQL or embedded SQLite.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod storage;
pub mod telemetry;
