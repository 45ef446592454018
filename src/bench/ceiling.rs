//! The cached-answer ceiling of the polling mix (`chatd bench --serve-cached-summaries`):
//! a server that speaks chat.v1 GetUnreadSummary over the stack chatd serves gRPC with
//! (tonic's routes on `net::serve`'s hyper, the same codec), verifies the same bearer
//! token with the same verifier, and answers a fixed summary (eight threads, about 750 bytes
//! encoded) from a map.
//! Polled beside chatd in the same `--poll` run (`--ceiling-target`), chatd's polls as a
//! fraction of its polls are what chatd's own work costs, apart from HTTP/2, HPACK and
//! protobuf, which both pay alike.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::server::NamedService;

use crate::auth::TokenVerifier;
use crate::net::{self, ConnectionLimits, Protocol};
use crate::proto as pb;

const PATH: &str = "/chat.v1.ChatService/GetUnreadSummary";

/// Summaries kept: one per user id, the id taken modulo this.
const USERS: i64 = 1024;

/// Serves cached summaries on `listen` until the process is stopped.
pub async fn serve(listen: SocketAddr, verifier: TokenVerifier) -> Result<(), String> {
    let answers: HashMap<i64, pb::GetUnreadSummaryResponse> =
        (0..USERS).map(|user| (user, summary_of(user))).collect();
    let size = prost::Message::encoded_len(&answers[&0]);
    let service = CachedSummaries {
        verifier: Arc::new(verifier),
        answers: Arc::new(answers),
    };
    let listener = net::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!(
        "cached-answer ceiling: GetUnreadSummary on {listen}, a {size}-byte summary per user from a map"
    );
    let routes = tonic::service::Routes::new(service).prepare();
    net::serve(
        listener,
        ConnectionLimits::default(),
        Protocol::Grpc,
        routes,
        crate::app::shutdown_signal(),
    )
    .await;
    Ok(())
}

/// A summary like a tutor's with eight unread threads: about 750 bytes encoded.
fn summary_of(user: i64) -> pb::GetUnreadSummaryResponse {
    let threads = (0..8)
        .map(|i| pb::ThreadUnread {
            thread_id: user * 8 + i,
            kind: pb::ThreadKind::Contact as i32,
            relation_id: Some(user * 8 + i),
            inquiry_id: None,
            tutor_id: user,
            student_id: 100_000 + i,
            unread_count: 1 + i,
            last_message_at: Some(prost_types::Timestamp {
                seconds: 1_764_000_000 + i,
                nanos: 0,
            }),
            last_message_preview: "Hello! Could we move Thursday's lesson to 5 pm? I have an exam"
                .into(),
            last_message_sender_id: 100_000 + i,
            is_writable: true,
            muted: false,
            muted_until: None,
        })
        .collect();
    pb::GetUnreadSummaryResponse {
        threads,
        total: 36,
        etag: format!("\"s{user}-1234567890\""),
        not_modified: false,
        muted_total: 0,
    }
}

#[derive(Clone)]
struct CachedSummaries {
    verifier: Arc<TokenVerifier>,
    answers: Arc<HashMap<i64, pb::GetUnreadSummaryResponse>>,
}

impl NamedService for CachedSummaries {
    const NAME: &'static str = "chat.v1.ChatService";
}

impl tonic::server::UnaryService<pb::GetUnreadSummaryRequest> for CachedSummaries {
    type Response = pb::GetUnreadSummaryResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<pb::GetUnreadSummaryRequest>) -> Self::Future {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let answer = match self.verifier.verify_header(header) {
            Ok(verified) => self
                .answers
                .get(&verified.user_id.rem_euclid(USERS))
                .cloned()
                .map(tonic::Response::new)
                .ok_or_else(|| tonic::Status::not_found("no summary")),
            Err(refused) => Err(tonic::Status::unauthenticated(refused.to_string())),
        };
        std::future::ready(answer)
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for CachedSummaries {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if request.uri().path() != PATH {
                return Ok(tonic::Status::unimplemented("only GetUnreadSummary").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(crate::proto::LeanCodec::default());
            Ok(grpc.unary(service, request).await)
        })
    }
}
