//! The cached-answer ceiling of the polling mix (`chatd bench --serve-cached-summaries`):
//! a server that speaks chat.v1 GetUnreadSummary over the stack chatd serves gRPC with
//! (tonic's routes on `net::serve`'s hyper, the same codec), verifies the same bearer
//! token with the same verifier, and answers each online tutor's summary from a map:
//! the very answers chatd gives, read once from the database at start.
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
use crate::grpc::convert;
use crate::model::{Side, SummaryKey};
use crate::net::{self, ConnectionLimits, Protocol};
use crate::proto as pb;
use crate::storage::Store;
use crate::summaries::Etag;

const PATH: &str = "/chat.v1.ChatService/GetUnreadSummary";

/// The page size the polling mix asks for.
const LIMIT: i64 = 50;

/// Serves on `listen`, until the process is stopped, the unread summaries of tutors 1 to
/// `tutors` (the polling mix's online users) as chatd answers them: read once from
/// `store` at start, so the ceiling sends the same bytes chatd sends, from a map.
pub async fn serve(
    listen: SocketAddr,
    verifier: TokenVerifier,
    store: Store,
    tutors: i64,
) -> Result<(), String> {
    let answers = read_answers(&store, tutors).await?;
    let bytes: usize = answers.values().map(prost::Message::encoded_len).sum();
    let service = CachedSummaries {
        verifier: Arc::new(verifier),
        answers: Arc::new(answers),
    };
    let listener = net::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!(
        "cached-answer ceiling: GetUnreadSummary on {listen}, the summaries of tutors 1 to \
         {tutors} from a map, {} bytes each on average",
        bytes / (tutors.max(1) as usize)
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

/// Each tutor's first page of their summary, as chatd's GetUnreadSummary answers it.
async fn read_answers(
    store: &Store,
    tutors: i64,
) -> Result<HashMap<i64, pb::GetUnreadSummaryResponse>, String> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut answers = HashMap::with_capacity(usize::try_from(tutors).unwrap_or_default());
    for tutor in 1..=tutors {
        let key = SummaryKey::new(tutor, Side::Tutor);
        let page = store
            .unread_summary(key, LIMIT, now_ms)
            .await
            .map_err(|e| format!("cannot read tutor {tutor}'s summary: {e}"))?;
        let etag = Etag {
            key,
            version: page.version.unwrap_or_default(),
            limit: LIMIT,
            changes_at: page.changes_at,
        };
        let answer = pb::GetUnreadSummaryResponse {
            threads: convert::threads_unread(&page.rows),
            total: page.total,
            etag: etag.to_string(),
            not_modified: false,
            muted_total: page.muted_total,
        };
        answers.insert(tutor, answer);
    }
    Ok(answers)
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
                .get(&verified.user_id)
                .cloned()
                .map(tonic::Response::new)
                .ok_or_else(|| tonic::Status::not_found("not one of the tutors read at start")),
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
