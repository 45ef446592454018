//! Builds and runs the chatd server: migrations, the gRPC services behind auth, health
//! that follows the database, reflection, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{AuthConfig, TokenVerifier};
use crate::domain::{Chat, Role, SummaryHub, WatchLimits};
use crate::grpc::pb::chat_service_server::ChatServiceServer;
use crate::grpc::pb::sync_service_server::SyncServiceServer;
use crate::grpc::{self, Authenticate};
use crate::http::{Gateway, GatewayConfig};
use crate::storage::{DatabaseUrl, PoolConfig, Store};

/// Everything `chatd serve` needs to know.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    pub pool: PoolConfig,
    pub auth: AuthConfig,
    /// How often health re-checks that the database answers.
    pub health_interval: Duration,
    /// The in-process REST gateway's address; `None` serves gRPC only.
    pub http: Option<SocketAddr>,
    /// CORS origins and upstream timeout of the in-process gateway.
    pub cors_allowed_origins: Vec<String>,
    pub upstream_timeout: Duration,
    /// Limits on WatchUnreadSummary streams.
    pub watch_limits: WatchLimits,
    /// How long a watcher lets a burst of changes gather before it sends.
    pub watch_coalesce: Duration,
    /// A listener serving only Prometheus `/metrics`; `None` for none (the REST port
    /// serves `/metrics` too).
    pub metrics: Option<SocketAddr>,
}

/// A built server: migrated database, bound listener, ready to `run`.
pub struct Application {
    listener: TcpListener,
    gateway: Option<Gateway>,
    metrics: Option<TcpListener>,
    database: DatabaseUrl,
    hub: SummaryHub,
    watch_coalesce: Duration,
    store: Store,
    verifier: Arc<TokenVerifier>,
    health_interval: Duration,
}

impl Application {
    /// Connects and migrates the database, loads the token keys and binds the listener
    /// (port 0 picks a free port: see `local_addr`).
    pub async fn build(config: ServeConfig) -> Result<Self, String> {
        let store = Store::connect(&config.database, &config.pool)?;
        let applied = store
            .migrate()
            .await
            .map_err(|e| format!("cannot migrate the {} database: {e}", store.backend()))?;
        tracing::info!(
            backend = store.backend(),
            applied = applied.len(),
            "database migrated"
        );
        let verifier = Arc::new(TokenVerifier::new(&config.auth, &config.database)?);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let gateway = match config.http {
            Some(listen) => {
                let grpc = listener.local_addr().map_err(|e| e.to_string())?;
                // The gateway calls this server over loopback gRPC, as an edge would.
                let upstream = if grpc.ip().is_unspecified() {
                    format!("http://127.0.0.1:{}", grpc.port())
                } else {
                    format!("http://{grpc}")
                };
                let gateway_config = GatewayConfig {
                    listen,
                    upstream,
                    upstream_timeout: config.upstream_timeout,
                    cors_allowed_origins: config.cors_allowed_origins.clone(),
                };
                Some(Gateway::build(&gateway_config).await?)
            }
            None => None,
        };
        let metrics = match config.metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            gateway,
            metrics,
            database: config.database.clone(),
            hub: SummaryHub::new(config.watch_limits),
            watch_coalesce: config.watch_coalesce,
            store,
            verifier,
            health_interval: config.health_interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address; fall back to unspecified rather than panic.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where the metrics-only listener listens, if configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Where the in-process REST gateway listens, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(Gateway::local_addr)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, lets in-flight calls
    /// finish and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let addr = self.local_addr();
        let chat = Chat::new(self.store.clone(), self.hub.clone(), self.watch_coalesce);
        crate::metrics::global().set_sources(self.store.clone(), self.hub.clone());
        let (stop_metrics, metrics_stopping) = oneshot::channel::<()>();
        if let Some(listener) = self.metrics {
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
            tokio::spawn(crate::metrics::serve(listener, async move {
                let _ = metrics_stopping.await;
            }));
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        // `build` has just migrated the database, so it answers: start SERVING, and let
        // the monitor follow it from here.
        set_health(&health, ServingStatus::Serving).await;
        // For liveness probes: SERVING while the process serves, whatever the database
        // does (restarting chatd would not bring a database back).
        health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;

        // Both reflection versions: grpcurl 1.8 and older clients only ask v1alpha. The
        // google.rpc types are served too, so clients can decode ErrorInfo details.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| format!("reflection: {e}"))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| format!("reflection: {e}"))?;

        let chat_service = ChatServiceServer::with_interceptor(
            grpc::ChatService::new(chat.clone()),
            Authenticate::new(
                self.verifier.clone(),
                ChatServiceServer::<grpc::ChatService>::NAME,
                &[Role::Tutor, Role::Student],
            ),
        );
        let sync_service = SyncServiceServer::with_interceptor(
            grpc::SyncService::new(chat),
            Authenticate::new(
                self.verifier.clone(),
                SyncServiceServer::<grpc::SyncService>::NAME,
                &[Role::Service],
            ),
        );

        let (stopping_tx, stopping_rx) = watch::channel(false);
        let monitor = tokio::spawn(monitor_database(
            self.store.clone(),
            health.clone(),
            self.health_interval,
            stopping_rx.clone(),
        ));
        // Replicas share PostgreSQL: changes committed by any of them arrive by NOTIFY.
        let listener = match &self.database {
            DatabaseUrl::Postgres(url) => Some(tokio::spawn(listen_for_changes(
                url.clone(),
                self.hub.clone(),
                stopping_rx,
            ))),
            DatabaseUrl::Sqlite(_) => None,
        };
        let hub = self.hub.clone();
        // The gateway drains first: its in-flight requests still need their gRPC calls.
        let (stop_gateway, gateway_stopping) = oneshot::channel::<()>();
        let gateway = self.gateway.map(|gateway| {
            tokio::spawn(gateway.run(async move {
                let _ = gateway_stopping.await;
            }))
        });
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: not serving, finishing in-flight calls");
            let _ = stopping_tx.send(true);
            set_health(&health, ServingStatus::NotServing).await;
            // Summary streams never end by themselves: end them, or draining would wait forever.
            hub.close();
            let _ = stop_gateway.send(());
            let _ = stop_metrics.send(());
            if let Some(gateway) = gateway {
                match gateway.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "REST gateway stopped with an error"),
                    Err(e) => tracing::error!(error = %e, "REST gateway task failed"),
                }
            }
        };

        tracing::info!(%addr, backend = self.store.backend(), "chatd gRPC listening");
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let served = Server::builder()
            .layer(grpc::RpcTraceLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(chat_service)
            .add_service(sync_service)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .map_err(|e| format!("gRPC server failed: {e}"));
        monitor.abort();
        if let Some(listener) = listener {
            listener.abort();
        }
        served
    }
}

/// The health service name that only says the process is alive.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The services whose health follows the database ("" is the whole server).
const HEALTH_SERVICES: [&str; 3] = [
    "",
    ChatServiceServer::<grpc::ChatService>::NAME,
    SyncServiceServer::<grpc::SyncService>::NAME,
];

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

/// Pings the database every `interval`: SERVING while it answers, NOT_SERVING while it
/// does not. One task for the whole server; stops when shutdown begins.
async fn monitor_database(
    store: Store,
    health: HealthReporter,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = Some(true);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.changed() => return,
        }
        let reachable = store.ping().await;
        if *stopping.borrow() {
            return;
        }
        let now_serving = reachable.is_ok();
        if serving != Some(now_serving) {
            match &reachable {
                Ok(()) => tracing::info!("database reachable: serving"),
                Err(e) => tracing::warn!(error = %e, "database unreachable: not serving"),
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, status).await;
            serving = Some(now_serving);
        }
    }
}

/// Keeps one connection LISTENing on the summary channel and wakes this process's
/// watchers for every change any replica commits. When the connection is lost it is
/// re-established, and every watcher re-reads its summary, since notifications sent
/// meanwhile are gone.
async fn listen_for_changes(url: String, hub: SummaryHub, mut stopping: watch::Receiver<bool>) {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    use futures_util::StreamExt;

    let retry_after = Duration::from_secs(1);
    loop {
        let connected = async {
            let mut conn = AsyncPgConnection::establish(&url)
                .await
                .map_err(|e| e.to_string())?;
            conn.batch_execute(&format!("LISTEN {}", crate::storage::SUMMARY_CHANNEL))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        };
        let mut conn = tokio::select! {
            connected = connected => match connected {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for summary changes; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry_after) => continue,
                        _ = stopping.changed() => return,
                    }
                }
            },
            _ = stopping.changed() => return,
        };
        tracing::info!("listening for summary changes");
        hub.notify_all();
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                notification = notifications.next() => match notification {
                    Some(Ok(notification)) => {
                        if let Some((user_id, side)) = crate::storage::parse_summary_payload(&notification.payload) {
                            hub.notify(user_id, &side);
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "summary listener lost its connection; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("summary listener connection closed; reconnecting");
                        break;
                    }
                },
                _ = stopping.changed() => return,
            }
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
