//! One REST call, one trace: an OTLP/gRPC receiver inside the test collects the spans
//! chatd exports and checks that the gateway span, the chatd RPC span and the storage
//! spans share the caller's trace id, are parented in that order, and carry the
//! OpenTelemetry attributes operators query by.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chatd::domain::Role;
use chatd::telemetry::{LogFormat, Telemetry};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

#[expect(
    dead_code,
    reason = "shared with the api tests; this binary uses a part"
)]
#[path = "api/harness.rs"]
mod harness;
#[expect(
    dead_code,
    reason = "shared with the api tests; this binary uses a part"
)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::{Backend, TestApp};

/// Collects every span exported to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rest_call_is_one_trace_through_gateway_chatd_and_storage() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    let telemetry = Telemetry::init_with(LogFormat::Text, Some(exporter)).unwrap();

    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::spawn(backend).await;
        let thread = app.contact_thread(10, 42, 7).await;
        let trace_id = format!("{:032x}", rand_u128());
        let caller_span = "00f067aa0ba902b7";
        let response = reqwest::Client::new()
            .post(app.url(&format!(
                "/api/v1/chat/threads/{}/messages/",
                thread.thread_id
            )))
            .header("authorization", app.bearer(7, Role::Student))
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .json(&serde_json::json!({ "body": "traced" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        telemetry.flush();

        let spans: Vec<Span> = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| hex(&span.trace_id) == trace_id)
            .cloned()
            .collect();
        let find = |name: &str| {
            spans
                .iter()
                .find(|span| span.name == name)
                .unwrap_or_else(|| {
                    panic!(
                        "no span {name:?} in {:?}",
                        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                    )
                })
        };
        let http = find("POST /api/v1/chat/threads/{thread_id}/messages/");
        assert_eq!(
            hex(&http.parent_span_id),
            caller_span,
            "the gateway continues the caller's trace"
        );
        assert_eq!(http.kind, SpanKind::Server as i32);
        let http_attributes = attributes(http);
        assert_eq!(http_attributes["http.request.method"], "POST");
        assert_eq!(
            http_attributes["http.route"],
            "/api/v1/chat/threads/{thread_id}/messages/"
        );
        assert_eq!(http_attributes["http.response.status_code"], "201");

        let rpc = find("chat.v1.ChatService/SendMessage");
        assert_eq!(
            rpc.parent_span_id, http.span_id,
            "chatd's span is the gateway span's child"
        );
        assert_eq!(rpc.kind, SpanKind::Server as i32);
        let rpc_attributes = attributes(rpc);
        assert_eq!(rpc_attributes["rpc.system"], "grpc");
        assert_eq!(rpc_attributes["rpc.service"], "chat.v1.ChatService");
        assert_eq!(rpc_attributes["rpc.method"], "SendMessage");
        assert_eq!(rpc_attributes["rpc.grpc.status_code"], "0");

        let storage: Vec<&Span> = spans
            .iter()
            .filter(|span| span.parent_span_id == rpc.span_id)
            .collect();
        let operations: Vec<String> = storage
            .iter()
            .map(|span| attributes(span)["db.operation.name"].clone())
            .collect();
        assert_eq!(
            operations,
            ["send_message"],
            "SendMessage is one storage call (one statement on PostgreSQL)"
        );
        let expected_system = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        };
        for span in &storage {
            assert_eq!(span.kind, SpanKind::Client as i32);
            let attributes = attributes(span);
            assert_eq!(attributes["db.system"], expected_system);
            assert!(
                !attributes
                    .values()
                    .any(|v| v.contains("traced") || v.contains("Bearer")),
                "no user data or tokens"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    u128::from_le_bytes(bytes) | 1
}
