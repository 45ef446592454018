//! The stage the browser flows play on: chatd and its gateway as processes, the
//! reference page served from an origin of its own, WebDriver sessions, and what the
//! page shows, read the way a person reads it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatd::auth::TokenSigner;
use chatd::domain::Role;
use chatd::grpc::pb;
use chatd::grpc::pb::chat_service_client::ChatServiceClient;
use chatd::grpc::pb::sync_service_client::SyncServiceClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use crate::processes::{Chatd, SECRET, TempDir};
use crate::webdriver::{Browser, Driver};

/// What the page shows, read the way a person reads it.
pub(crate) const BADGE: &str =
    "const b = document.getElementById('badge'); return b.hidden ? '' : b.textContent;";
pub(crate) const CHAT_BUTTON_DISABLED: &str =
    "return document.getElementById('chat-button').disabled;";
pub(crate) const CHAT_REASON: &str = "const r = document.getElementById('chat-reason'); \
     return r.hidden ? null : [r.dataset.code, r.textContent];";
pub(crate) const MESSAGES: &str =
    "return [...document.querySelectorAll('#messages li')].map((li) => li.textContent);";
pub(crate) const CHAT_OPEN: &str = "return !document.getElementById('chat-window').hidden;";
pub(crate) const STREAMS_OPENED: &str =
    "return Number(document.getElementById('streams-opened').textContent);";
pub(crate) const POLLS: &str = "return Number(document.getElementById('poll-count').textContent);";
pub(crate) const TRANSPORT: &str = "return document.getElementById('transport-state').textContent;";
pub(crate) const COMPOSER_DISABLED: &str = "return document.getElementById('compose').disabled;";
pub(crate) const TYPING: &str = "return !document.getElementById('typing').hidden;";
pub(crate) const SEEN: &str =
    "return [...document.querySelectorAll('#messages li.seen')].map((li) => li.textContent);";
pub(crate) const WINDOW_STREAMS: &str =
    "return Number(document.getElementById('window-streams').textContent);";
pub(crate) const LIST_FETCHES: &str =
    "return Number(document.getElementById('list-fetches').textContent);";
pub(crate) const BELL_ITEMS: &str = "return [...document.querySelectorAll('#bell-menu li[data-thread-id]')]\
     .map((li) => (li.classList.contains('muted') ? 'muted:' : '') + li.textContent);";

/// chatd, a gateway in front of it, the page's own web server, and a chromedriver.
pub(crate) struct Stage {
    /// Kept running for the stage's life; the test talks to it through `channel`.
    pub(crate) _chatd: Chatd,
    pub(crate) gateway: Chatd,
    pub(crate) page: String,
    pub(crate) channel: Channel,
    pub(crate) signer: TokenSigner,
    pub(crate) driver: Driver,
    pub(crate) screenshots: PathBuf,
    pub(crate) _dir: TempDir,
}

impl Stage {
    pub(crate) async fn start(flow: &str) -> Self {
        let dir = TempDir::new();
        let page_port = serve_page().await;
        let origin = format!("http://localhost:{page_port}");
        let database = format!("sqlite://{}", dir.join("chatd.db").display());
        // Its in-process gateway is left alone: the page talks to the edge gateway.
        let chatd = Chatd::start(&dir.0, &database, &[], None).await;
        let gateway = Chatd::gateway(&dir.0, chatd.grpc, &["--cors-allow-origin", &origin]).await;
        let channel = Endpoint::from_shared(format!("http://{}", chatd.grpc))
            .expect("an endpoint")
            .connect_lazy();
        let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("e2e")
            .join(flow);
        let _ = std::fs::remove_dir_all(&screenshots);
        Self {
            _chatd: chatd,
            gateway,
            page: origin,
            channel,
            signer: TokenSigner::from_secret(SECRET.as_bytes(), None, None),
            driver: Driver::start().await,
            screenshots,
            _dir: dir,
        }
    }

    pub(crate) fn token(&self, user: i64, role: Role) -> String {
        self.signer
            .sign(user, role, Duration::from_secs(3600))
            .expect("a token")
    }

    pub(crate) fn metadata<T>(&self, message: T, user: i64, role: Role) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {}", self.token(user, role));
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().expect("ASCII"));
        request
    }

    /// The relation service reports a relation's status.
    pub(crate) async fn relation(
        &self,
        id: i64,
        tutor: i64,
        student: i64,
        status: pb::RelationStatus,
        version: i64,
    ) {
        let request = pb::UpsertRelationRequest {
            relation_id: id,
            tutor_id: tutor,
            student_id: student,
            status: status.into(),
            version,
        };
        SyncServiceClient::new(self.channel.clone())
            .upsert_relation(self.metadata(request, 1, Role::Service))
            .await
            .expect("the relation is upserted");
    }

    /// The contact service reports a tutor's access to a student.
    pub(crate) async fn contact(
        &self,
        tutor: i64,
        student: i64,
        state: pb::ContactAccessState,
        version: i64,
    ) {
        let request = pb::UpsertContactAccessRequest {
            tutor_id: tutor,
            student_id: student,
            state: state.into(),
            version,
        };
        SyncServiceClient::new(self.channel.clone())
            .upsert_contact_access(self.metadata(request, 1, Role::Service))
            .await
            .expect("the contact access is upserted");
    }

    /// An active relation with contact unlocked: both sides may chat.
    pub(crate) async fn may_chat(&self, relation: i64, tutor: i64, student: i64) {
        self.relation(relation, tutor, student, pb::RelationStatus::Active, 1)
            .await;
        self.contact(tutor, student, pb::ContactAccessState::Unlocked, 1)
            .await;
    }

    /// A student writes through another client (a phone, say), not the page.
    pub(crate) async fn student_says(&self, relation: i64, student: i64, body: &str) {
        let mut chat = ChatServiceClient::new(self.channel.clone());
        let ensure = pb::EnsureThreadRequest {
            target: Some(pb::ensure_thread_request::Target::RelationId(relation)),
        };
        let thread = chat
            .ensure_thread(self.metadata(ensure, student, Role::Student))
            .await
            .expect("the student's thread")
            .into_inner()
            .thread
            .expect("a thread");
        let send = pb::SendMessageRequest {
            thread_id: thread.thread_id,
            body: body.to_owned(),
            client_message_id: String::new(),
        };
        chat.send_message(self.metadata(send, student, Role::Student))
            .await
            .expect("the message is sent");
    }

    /// A browser signed in on the page as `user`, looking at `relation`.
    pub(crate) async fn signed_in(
        &self,
        name: &str,
        user: i64,
        role: Role,
        relation: i64,
        transport: &str,
    ) -> Browser {
        let browser = self.driver.browser(name, &self.screenshots).await;
        let url = format!(
            "{}/?api=http://{}/api/v1/chat&role={}&relation={relation}&transport={transport}&poll_ms=200",
            self.page,
            self.gateway.http,
            role.as_str(),
        );
        browser.goto(&url).await;
        browser.type_into("#token", &self.token(user, role)).await;
        browser.click("#sign-in-button").await;
        browser
            .wait_for(
                "the signed-in view",
                "return !document.getElementById('profile').hidden;",
                json!(true),
            )
            .await;
        browser
    }

    /// The gateway's count of GET /unread-summary/ answers with `status`.
    pub(crate) async fn summary_answers(&self, status: u16) -> u64 {
        self.answers("GET", "/api/v1/chat/unread-summary/", status)
            .await
    }

    /// The gateway's count of stream-ticket mints answered with `status`.
    pub(crate) async fn ticket_answers(&self, status: u16) -> u64 {
        self.answers("POST", "/api/v1/chat/unread-summary/stream-ticket", status)
            .await
    }

    /// The gateway's count of `method route` answers with `status`, from its metrics.
    pub(crate) async fn answers(&self, method: &str, route: &str, status: u16) -> u64 {
        let text = reqwest::get(format!("http://{}/metrics", self.gateway.http))
            .await
            .expect("the gateway's metrics")
            .text()
            .await
            .expect("metrics text");
        let series = format!(
            "chatd_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} "
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |count| count.trim().parse().expect("a count"))
    }
}

/// Serves the reference page on a port of its own; the page's origin is
/// `http://localhost:<port>`, the gateway's `http://127.0.0.1:<port>`.
pub(crate) async fn serve_page() -> u16 {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let page = axum::Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [(CONTENT_TYPE, "text/html; charset=utf-8")],
                    include_str!("page/index.html"),
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    include_str!("page/app.js"),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the page");
    let addr: SocketAddr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, page).await });
    addr.port()
}

/// The end of a flow: each browser's screenshot, then the browsers closed.
pub(crate) async fn finish<const N: usize>(pages: [Browser; N]) {
    for page in pages {
        page.screenshot("end").await;
        page.close().await;
    }
}

/// Writes `text` in the open chat window and sends it.
pub(crate) async fn write(page: &Browser, text: &str) {
    page.type_into("#compose", text).await;
    page.click("#send").await;
}

pub(crate) async fn assert_reason(browser: &Browser, code: &str, text: &str) {
    browser
        .wait_for(
            &format!("the chat button disabled for {code}"),
            CHAT_BUTTON_DISABLED,
            json!(true),
        )
        .await;
    browser
        .wait_for(
            &format!("the reason {code}"),
            CHAT_REASON,
            json!([code, text]),
        )
        .await;
}
