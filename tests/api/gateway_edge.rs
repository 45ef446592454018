//! The gateway at the edge on its own: chatd going away and coming back, large headers
//! passed on, CORS for configured origins only, a trickled body cut off.

use std::time::Duration;

use chatd::domain::Role;
use chatd::http::{Gateway, GatewayConfig};
use chatd::metrics::Metrics;
use reqwest::StatusCode;
use serde_json::Value;

use crate::gateway::{assert_api_error, call, client};
use crate::harness::{Proxy, Route};
use crate::helpers::{Backend, SECRET, TestApp};

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

/// chatd down → 503 with the JSON error; chatd back → the gateway recovers by itself.
/// The gateway's upstream is a proxy on a port of its own, refusing until chatd is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_503_then_recovers() {
    let proxy = Proxy::start(Route::Refuse).await;
    let gateway = Gateway::build(
        &GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: format!("http://{}", proxy.addr),
            upstream_timeout: Duration::from_secs(5),
            cors_allowed_origins: Vec::new(),
            connections: chatd::net::ConnectionLimits::default(),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(std::future::pending()));

    let signer = chatd::auth::TokenSigner::from_secret(SECRET.as_bytes(), None, None);
    let token = format!(
        "Bearer {}",
        signer
            .sign(TUTOR, Role::Tutor, Duration::from_secs(60))
            .unwrap()
    );
    let summary = || {
        client()
            .get(format!("{base}/api/v1/chat/unread-summary/"))
            .header("authorization", &token)
    };

    let down = call(summary()).await;
    assert_api_error(&down, 503, "UPSTREAM_UNAVAILABLE", "UNAVAILABLE");
    let not_ready = call(client().get(format!("{base}/readyz"))).await;
    assert_api_error(&not_ready, 503, "UPSTREAM_UNAVAILABLE", "UNAVAILABLE");
    let (status, _) = call(client().get(format!("{base}/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "the gateway itself is alive");

    let chatd = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.http = None;
    })
    .await;
    proxy.set(Route::Forward(
        chatd.grpc.trim_start_matches("http://").parse().unwrap(),
    ));
    let (status, body) = call(summary()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 0);
}

/// A standalone gateway forwards headers up to its own limit, and chatd reads them: a
/// token just under the limit reaches chatd's authentication (refused as a token, not a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_gateway_forwards_large_headers_chatd_reads() {
    let chatd = TestApp::spawn_with(Backend::Sqlite, |config| config.http = None).await;
    let gateway = Gateway::build(
        &GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: chatd.grpc.clone(),
            upstream_timeout: Duration::from_secs(5),
            cors_allowed_origins: Vec::new(),
            connections: chatd::net::ConnectionLimits::default(),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(std::future::pending()));
    let large_token = format!("Bearer {}", "a".repeat(16 * 1024 - 450));
    let refused = call(
        client()
            .get(format!("{base}/api/v1/chat/unread-summary/"))
            .header("authorization", large_token),
    )
    .await;
    assert_api_error(&refused, 401, "TOKEN_INVALID", "UNAUTHENTICATED");
}

/// CORS is off by default and answers preflights for configured origins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let preflight = |base: String, origin: &'static str| {
        client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{base}/api/v1/chat/unread-summary/"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,if-none-match",
            )
    };
    let default = preflight(app.http.clone(), "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(
        default
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "off by default"
    );
    // Refused as CORS, saying which flag allows it, not as a wrong method or route.
    let default = (default.status(), default.json::<Value>().await.unwrap());
    assert_api_error(&default, 403, "CORS_NOT_ALLOWED", "PERMISSION_DENIED");
    let message = default.1["message"].as_str().unwrap();
    assert!(
        message.contains("--cors-allow-origin https://app.example"),
        "{message}"
    );
    // An OPTIONS that is no preflight is still a method the path does not take.
    let plain = call(client().request(
        reqwest::Method::OPTIONS,
        app.url("/api/v1/chat/unread-summary/"),
    ))
    .await;
    assert_api_error(&plain, 405, "METHOD_NOT_ALLOWED", "UNIMPLEMENTED");

    let gateway = Gateway::build(
        &GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: app.grpc.clone(),
            upstream_timeout: Duration::from_secs(5),
            cors_allowed_origins: vec!["https://app.example".into()],
            connections: chatd::net::ConnectionLimits::default(),
        },
        Metrics::new(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(std::future::pending()));
    let allowed = preflight(base.clone(), "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "if-none-match"] {
        assert!(
            allowed_headers.contains(name),
            "a browser may send {name}: {allowed_headers}"
        );
    }
    // The actual request: the page's script may read the ETag.
    let answered = client()
        .get(format!("{base}/api/v1/chat/unread-summary/"))
        .header("origin", "https://app.example")
        .header("authorization", app.bearer(TUTOR, Role::Tutor))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(
        answered.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    // Every header the docs tell a browser to read: the ETag of a poll, the
    // Retry-After of a 429.
    let exposed = answered.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["etag", "retry-after"] {
        assert!(exposed.contains(header), "{header} in {exposed}");
    }
    let other = preflight(base, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let other = (other.status(), other.json::<Value>().await.unwrap());
    assert_api_error(&other, 403, "CORS_NOT_ALLOWED", "PERMISSION_DENIED");
    assert!(
        other.1["message"]
            .as_str()
            .unwrap()
            .contains("allows only https://app.example"),
        "{}",
        other.1
    );
}

/// A body sent a byte at a time cannot hold its connection: each byte resets the idle
/// timeout, but the whole body must arrive within the body timeout, or the answer is
/// 408 REQUEST_TIMEOUT in the usual JSON, long before the trickle would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.connections.body_timeout = Duration::from_secs(1);
    })
    .await;
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    let addr = app.http.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = socket.into_split();
    // 100 bytes promised, one sent every 200 ms: 20 s to finish.
    let head = format!(
        "POST /api/v1/chat/threads/{}/messages/ HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        thread.thread_id,
        app.bearer(TUTOR, Role::Tutor)
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 10 s, not after the 20 s trickle");
    assert!(read.is_ok(), "{read:?}");
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or(""))
        .unwrap_or_else(|e| panic!("a JSON body ({e}): {answer}"));
    assert_eq!(body["code"], "REQUEST_TIMEOUT", "{body}");
    assert_eq!(body["grpc_status"], "DEADLINE_EXCEEDED", "{body}");
}
