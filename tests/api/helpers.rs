//! Spawns chatd for one test on a database of its own, and gives typed clients.

pub use crate::harness::TestDatabase;

use std::time::{Duration, SystemTime};

use chatd::app::{Application, ServeConfig};
use chatd::auth::{AuthConfig, TokenSigner};
use chatd::domain::Role;
use chatd::grpc::pb;
use chatd::grpc::pb::chat_service_client::ChatServiceClient;
use chatd::grpc::pb::sync_service_client::SyncServiceClient;
use chatd::storage::{DatabaseUrl, PoolConfig, Store};
use chatd::summaries::WatchLimits;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Stream limits of test servers: small, so tests can reach them.
pub const WATCH_LIMITS: WatchLimits = WatchLimits {
    per_user: 3,
    total: 50,
};

pub const SECRET: &str = "test-secret-test-secret-test-secret!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub type ChatClient = ChatServiceClient<InterceptedService<Channel, Bearer>>;
pub type SyncClient = SyncServiceClient<InterceptedService<Channel, Bearer>>;
pub type EventClient =
    pb::event_service_client::EventServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (or nothing, for `None`).
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii header"));
        }
        Ok(request)
    }
}

/// A running chatd with its own database; dropping it drops the database.
pub struct TestApp {
    /// Base URL of chatd's gRPC listener.
    pub grpc: String,
    /// Base URL of the in-process REST gateway.
    pub http: String,
    /// URL of the metrics-only listener's `/metrics`.
    pub metrics: String,
    pub store: Store,
    signer: TokenSigner,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), String>>>,
    channel: Channel,
    database: TestDatabase,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns chatd with `adjust` applied to the test configuration.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
        let database = match backend {
            Backend::Sqlite => TestDatabase::sqlite().await,
            Backend::Postgres => TestDatabase::postgres().await,
        };
        let mut config = Self::config(database.url());
        adjust(&mut config);
        Self::start(database, config).await
    }

    /// Spawns chatd on a database the test made, with `adjust` applied.
    pub async fn spawn_on(database: TestDatabase, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let mut config = Self::config(database.url());
        adjust(&mut config);
        Self::start(database, config).await
    }

    /// The URL of this app's database.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database.url()
    }

    /// Another chatd on this one's database: a second replica.
    pub async fn replica(&self) -> TestApp {
        self.replica_with(|_| {}).await
    }

    /// A second replica, with `adjust` applied to its configuration.
    pub async fn replica_with(&self, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let mut config = Self::config(self.database.url());
        adjust(&mut config);
        Self::start(TestDatabase::Shared(self.database.url()), config).await
    }

    /// The configuration of test servers: every listener on port 0, fast health and
    /// fan-out heartbeats, small stream limits.
    pub fn config(database: DatabaseUrl) -> ServeConfig {
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database,
            pool: PoolConfig {
                max_size: 8,
                timeout: Duration::from_secs(5),
                statement_timeout: Some(Duration::from_secs(15)),
                pooler: Default::default(),
                sqlite_sync: Default::default(),
            },
            auth: AuthConfig {
                secret: Some(SECRET.into()),
                ..AuthConfig::default()
            },
            health_interval: Duration::from_millis(100),
            http: Some("127.0.0.1:0".parse().unwrap()),
            cors_allowed_origins: Vec::new(),
            upstream_timeout: Duration::from_secs(10),
            watch_limits: WATCH_LIMITS,
            watch_coalesce: Duration::from_millis(20),
            watch_stall_timeout: Duration::from_secs(10),
            metrics: Some("127.0.0.1:0".parse().unwrap()),
            fanout_url: None,
            fanout_heartbeat: Duration::from_millis(200),
            summary_cache: chatd::summaries::CacheConfig {
                budget_bytes: 8 << 20,
                sweep: Duration::from_millis(200),
            },
            connections: chatd::net::ConnectionLimits::default(),
            call_timeout: Duration::from_secs(15),
            // Tests send as fast as they can; the limit has tests of its own.
            send_limit: chatd::limits::SendLimit::OFF,
            events: chatd::config::EventsConfig::default(),
        }
    }

    async fn start(database: TestDatabase, config: ServeConfig) -> Self {
        let app = Application::build(config).await.expect("chatd builds");
        let addr = app.local_addr();
        // Empty when the test turned the gateway off.
        let http = app
            .http_addr()
            .map_or_else(String::new, |addr| format!("http://{addr}"));
        let metrics = app
            .metrics_addr()
            .map_or_else(String::new, |addr| format!("http://{addr}/metrics"));
        let store = app.store().clone();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run(async move {
            let _ = stop.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connects to chatd");
        Self {
            metrics,
            grpc: format!("http://{addr}"),
            http,
            store,
            signer: TokenSigner::from_secret(SECRET.as_bytes(), None, None),
            shutdown: Some(shutdown),
            server: Some(server),
            channel,
            database,
        }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn token(&self, user_id: i64, role: Role) -> String {
        self.signer
            .sign(user_id, role, Duration::from_secs(600))
            .unwrap()
    }

    pub fn chat_with_header(&self, header: Option<String>) -> ChatClient {
        ChatServiceClient::with_interceptor(self.channel(), Bearer(header))
    }

    /// `Bearer <token>` for a user in a role, with its `exp` at `expires`.
    pub fn bearer_until(&self, user_id: i64, role: Role, expires: SystemTime) -> String {
        format!(
            "Bearer {}",
            self.signer.sign_until(user_id, role, expires).unwrap()
        )
    }

    /// `Bearer <token>` for a user in a role.
    pub fn bearer(&self, user_id: i64, role: Role) -> String {
        format!("Bearer {}", self.token(user_id, role))
    }

    /// A URL on the REST gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub fn tutor(&self, user_id: i64) -> ChatClient {
        self.chat_with_header(Some(format!("Bearer {}", self.token(user_id, Role::Tutor))))
    }

    pub fn student(&self, user_id: i64) -> ChatClient {
        self.chat_with_header(Some(format!(
            "Bearer {}",
            self.token(user_id, Role::Student)
        )))
    }

    pub fn sync(&self) -> SyncClient {
        SyncServiceClient::with_interceptor(
            self.channel(),
            Bearer(Some(format!("Bearer {}", self.token(1, Role::Service)))),
        )
    }

    /// An EventService client with a service token.
    pub fn events(&self) -> EventClient {
        pb::event_service_client::EventServiceClient::with_interceptor(
            self.channel(),
            Bearer(Some(format!("Bearer {}", self.token(1, Role::Service)))),
        )
    }

    pub async fn relation(
        &self,
        relation_id: i64,
        tutor: i64,
        student: i64,
        status: pb::RelationStatus,
        version: i64,
    ) -> bool {
        self.sync()
            .upsert_relation(pb::UpsertRelationRequest {
                relation_id,
                tutor_id: tutor,
                student_id: student,
                status: status.into(),
                version,
            })
            .await
            .expect("upsert relation")
            .into_inner()
            .applied
    }

    pub async fn contact_access(
        &self,
        tutor: i64,
        student: i64,
        state: pb::ContactAccessState,
        version: i64,
    ) -> bool {
        self.sync()
            .upsert_contact_access(pb::UpsertContactAccessRequest {
                tutor_id: tutor,
                student_id: student,
                state: state.into(),
                version,
            })
            .await
            .expect("upsert contact access")
            .into_inner()
            .applied
    }

    pub async fn inquiry(
        &self,
        inquiry_id: i64,
        tutor: i64,
        student: i64,
        status: pb::InquiryStatus,
        version: i64,
    ) -> bool {
        self.sync()
            .upsert_inquiry(pb::UpsertInquiryRequest {
                inquiry_id,
                tutor_id: tutor,
                student_id: student,
                status: status.into(),
                version,
            })
            .await
            .expect("upsert inquiry")
            .into_inner()
            .applied
    }

    /// An ACTIVE relation with unlocked contact access, and its contact thread.
    pub async fn contact_thread(&self, relation_id: i64, tutor: i64, student: i64) -> pb::Thread {
        self.relation(relation_id, tutor, student, pb::RelationStatus::Active, 1)
            .await;
        self.contact_access(tutor, student, pb::ContactAccessState::Unlocked, 1)
            .await;
        self.tutor(tutor)
            .ensure_thread(ensure_relation(relation_id))
            .await
            .expect("ensure contact thread")
            .into_inner()
            .thread
            .expect("thread")
    }

    /// Opens a WatchUnreadSummary stream as `client`'s caller.
    pub async fn watch(
        client: &mut ChatClient,
    ) -> tonic::Streaming<pb::WatchUnreadSummaryResponse> {
        client
            .watch_unread_summary(pb::WatchUnreadSummaryRequest::default())
            .await
            .expect("watch opens")
            .into_inner()
    }

    /// The value of one series of this app's /metrics, as an operator reads it.
    pub async fn series(&self, name: &str) -> u64 {
        let text = reqwest::get(&self.metrics)
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    /// Stops the server gracefully and returns what `run` returned.
    pub async fn stop(&mut self) -> Result<(), String> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("server task"),
            None => Ok(()),
        }
    }

    pub fn database(&self) -> &TestDatabase {
        &self.database
    }
}

/// A token with exactly `claims`, signed with the test secret: for tokens chatd's own
/// signer would never make.
pub fn signed(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("claims sign")
}

/// Seconds since the epoch, `offset` from now.
pub fn epoch_seconds(offset: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
        + offset
}

pub fn ensure_relation(relation_id: i64) -> pb::EnsureThreadRequest {
    pb::EnsureThreadRequest {
        target: Some(pb::ensure_thread_request::Target::RelationId(relation_id)),
    }
}

pub fn ensure_inquiry(inquiry_id: i64) -> pb::EnsureThreadRequest {
    pb::EnsureThreadRequest {
        target: Some(pb::ensure_thread_request::Target::InquiryId(inquiry_id)),
    }
}

pub fn send(thread_id: i64, body: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        thread_id,
        body: body.into(),
        client_message_id: String::new(),
    }
}

pub fn summary(limit: i32) -> pb::GetUnreadSummaryRequest {
    pb::GetUnreadSummaryRequest {
        limit,
        if_none_match: String::new(),
    }
}

pub fn mark_read(thread_id: i64, up_to_seq: Option<i64>) -> pb::MarkReadRequest {
    pb::MarkReadRequest {
        thread_id,
        up_to_seq,
    }
}

/// Asserts a call failed with `code` and ErrorInfo `reason`; returns the status.
#[track_caller]
pub fn assert_error<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
) -> Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "code of {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "reason of {status:?}");
    status
}

/// The calls tests make most, on a client that is expected to succeed.
pub trait ChatClientExt {
    /// Sends a message request and returns the message.
    async fn send(&mut self, request: pb::SendMessageRequest) -> pb::Message;
    /// Sends `body` to a thread and returns the message.
    async fn say(&mut self, thread_id: i64, body: &str) -> pb::Message;
    /// The caller's unread summary (default page).
    async fn unread(&mut self) -> pb::GetUnreadSummaryResponse;
}

impl ChatClientExt for ChatClient {
    async fn send(&mut self, request: pb::SendMessageRequest) -> pb::Message {
        self.send_message(request)
            .await
            .expect("send succeeds")
            .into_inner()
            .message
            .expect("a message")
    }

    async fn say(&mut self, thread_id: i64, body: &str) -> pb::Message {
        self.send(send(thread_id, body)).await
    }

    async fn unread(&mut self) -> pb::GetUnreadSummaryResponse {
        self.get_unread_summary(summary(0))
            .await
            .expect("summary succeeds")
            .into_inner()
    }
}
