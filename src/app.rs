//! Builds and runs the chatd server: migrations, the gRPC services behind auth, health
//! that follows the database, reflection, the change fan-out between replicas, the
//! application's metrics, and graceful shutdown. This is where the parts are assembled;
//! none of them knows the others beyond what is handed to it here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower_layer::Layer;

use crate::auth::TokenVerifier;
use crate::domain::{Chat, Role};
use crate::fanout::{Fanout, Local, Publisher, Queued, QueuedPublisher};
use crate::grpc::{self, Authenticate, RpcTraceLayer};
use crate::http::{Gateway, GatewayConfig};
use crate::limits::SendLimits;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::net::{self, Protocol};
use crate::outbox::Outbox;
use crate::proto::chat_service_server::ChatServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::sync_service_server::SyncServiceServer;
use crate::storage::{DatabaseUrl, PoolConfig, Pooler, Store};
use crate::summaries::{CacheTrust, Summaries};

mod background;
mod health;

pub use crate::config::ServeConfig;
pub use health::{FANOUT_SERVICE, LIVENESS_SERVICE};
use health::{FanoutHealth, follow_fanout, monitor_database, set_fanout_health, set_health};

/// A built server: migrated database, bound listeners, services assembled, ready to `run`.
pub struct Application {
    listener: TcpListener,
    gateway: Option<Gateway>,
    metrics_listener: Option<TcpListener>,
    metrics: Metrics,
    rpc_trace: RpcTraceLayer,
    /// Every gRPC service, behind its authentication.
    routes: Routes,
    health: HealthReporter,
    chat: Chat,
    /// The fan-out's queue, until `run` starts its notifier (PostgreSQL).
    queued: Option<Queued>,
    /// Whether this replica hears other replicas' changes (the fan-out is connected).
    fanout_up: (watch::Sender<bool>, watch::Receiver<bool>),
    config: ServeConfig,
    store: Store,
    /// Stops the outbox's sequencer once the server has drained.
    stop_outbox: watch::Sender<bool>,
}

impl Application {
    /// Connects and migrates the database, loads the token keys and binds the listeners
    /// (port 0 picks a free port: see `local_addr`).
    pub async fn build(config: ServeConfig) -> Result<Self, String> {
        let listener = crate::net::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        Self::build_on(config, listener).await
    }

    /// The same on a listener bound already (tests bind port 0 and keep it, so no other
    /// process can take the port between choosing and serving).
    pub async fn build_on(config: ServeConfig, listener: TcpListener) -> Result<Self, String> {
        config.validate()?;
        // Keys first: a configuration that cannot verify tokens fails before it
        // touches the database.
        let verifier = Arc::new(TokenVerifier::new(&config.auth, &config.database)?);
        let store = Store::connect(&config.database, &config.pool)?;
        let applied = migrator(&config, &store)?
            .migrate()
            .await
            .map_err(|e| format!("cannot migrate the {} database: {e}", store.backend()))?;
        tracing::info!(
            backend = store.backend(),
            applied = applied.len(),
            "database migrated"
        );
        let metrics = Metrics::new();
        if matches!(config.database, DatabaseUrl::Sqlite(_)) {
            store.time_writes(metrics.sqlite_write_phases());
        }
        if config.events.nats_url.is_some() {
            metrics.events.declare("nats");
        }
        if config.events.webhook.is_some() {
            metrics.events.declare("webhook");
        }
        // Everything a scrape shows exists from here on, before the first call.
        let rpc_trace = RpcTraceLayer::new(metrics.rpc.clone(), config.call_timeout);
        // One SQLite process hears every change it makes; PostgreSQL replicas wait for
        // their fan-out to connect.
        let one_process = matches!(config.database, DatabaseUrl::Sqlite(_));
        let (publisher, queued): (Arc<dyn Publisher>, _) = if one_process {
            (Arc::new(Local), None)
        } else {
            let (publisher, queued) = QueuedPublisher::new();
            (Arc::new(publisher), Some(queued))
        };
        tracing::info!(
            mib = config.summary_cache.budget_bytes >> 20,
            "summary cache budget (--summary-cache-mib)"
        );
        let live = Live::new(publisher.clone(), config.watch_stall_timeout);
        // Stopped when `run` ends: it numbers events while the server drains.
        let (stop_outbox, outbox_stopping) = watch::channel(false);
        let outbox = Outbox::start(store.clone(), outbox_stopping);
        let summaries = Summaries::new(
            config.summary_cache,
            config.watch_limits,
            publisher,
            metrics.cache.clone(),
            if one_process {
                CacheTrust::FromStart
            } else {
                CacheTrust::OnceFanoutConnects
            },
        );
        let fanout_up = watch::channel(one_process);
        register_gauges(
            &metrics,
            &store,
            (&summaries, live.clone()),
            fanout_up.1.clone(),
        );
        let chat = Chat::new(
            store.clone(),
            (summaries, live),
            metrics.chat.clone(),
            config.watch_coalesce,
            SendLimits::new(config.send_limit)?,
            outbox.clone(),
        );
        let (health, routes) = services(&chat, &verifier, *fanout_up.1.borrow()).await?;

        let gateway = match config.http {
            Some(listen) => {
                let gateway_config = GatewayConfig {
                    listen,
                    upstream: format!(
                        "http://{}",
                        listener.local_addr().map_err(|e| e.to_string())?
                    ),
                    upstream_timeout: config.upstream_timeout,
                    cors_allowed_origins: config.cors_allowed_origins.clone(),
                    connections: config.connections,
                };
                // In process, the gateway calls the same service stack the network
                // listener serves (authentication, tracing, metrics), with no hop between.
                let upstream = crate::http::in_process(
                    rpc_trace.layer(routes.clone()),
                    config.upstream_timeout,
                );
                Some(Gateway::build_with(&gateway_config, metrics.clone(), upstream).await?)
            }
            None => None,
        };
        let metrics_listener = match config.metrics {
            Some(addr) => Some(
                crate::net::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            gateway,
            metrics_listener,
            metrics,
            rpc_trace,
            routes,
            health,
            chat,
            queued,
            fanout_up,
            config,
            store,
            stop_outbox,
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
        self.metrics_listener
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

    /// This application's metrics (each application has its own registry).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, lets in-flight calls
    /// finish and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let addr = self.local_addr();
        let config = self.config;
        let health = self.health;
        let chat = self.chat;
        let (stopping_tx, stopping_rx) = watch::channel(false);

        // Replicas share PostgreSQL: changes committed by any of them arrive through the
        // fan-out. One SQLite process has nothing to hear.
        let (fanout_state, fanout_followed) = self.fanout_up;
        let fanout = match (&config.database, self.queued) {
            (DatabaseUrl::Postgres(url), Some(queued)) => {
                let sink = Arc::new(FanoutHealth {
                    summaries: chat.summaries().clone(),
                    live: chat.live().clone(),
                    state: fanout_state,
                });
                Some(
                    Fanout::start(
                        url,
                        config.fanout_url.as_deref(),
                        config.fanout_heartbeat,
                        queued,
                        sink,
                        stopping_rx.clone(),
                    )
                    .await?,
                )
            }
            _ => None,
        };
        let sweeper = tokio::spawn(background::sweep_summaries(
            chat.clone(),
            config.summary_cache.sweep,
            stopping_rx.clone(),
        ));
        let limits = tokio::spawn(background::forget_idle_senders(
            chat.clone(),
            stopping_rx.clone(),
        ));
        let fanout_health = tokio::spawn(follow_fanout(health.clone(), fanout_followed));
        // Stopped last, once calls have drained: it gives its lease up to another replica.
        let (stop_relay, relay_stopping) = watch::channel(false);
        let relay = tokio::spawn(crate::relay::run(
            chat.clone(),
            self.store.clone(),
            config.events.clone(),
            self.metrics.events.clone(),
            relay_stopping,
        ));
        let (stop_metrics, metrics_stopping) = oneshot::channel::<()>();
        if let Some(listener) = self.metrics_listener {
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
            tokio::spawn(crate::http::serve_metrics(
                listener,
                config.connections,
                self.metrics.clone(),
                async move {
                    let _ = metrics_stopping.await;
                },
            ));
        }
        let monitor = tokio::spawn(monitor_database(
            self.store.clone(),
            health.clone(),
            config.health_interval,
            config.pool.timeout,
            stopping_rx,
        ));
        // The gateway drains first: its in-flight requests still need their gRPC calls.
        let (stop_gateway, gateway_stopping) = oneshot::channel::<()>();
        let gateway = self.gateway.map(|gateway| {
            tokio::spawn(gateway.run(async move {
                let _ = gateway_stopping.await;
            }))
        });
        let hub = chat.summaries().hub().clone();
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
        net::serve(
            self.listener,
            config.connections,
            Protocol::Grpc,
            self.rpc_trace.layer(self.routes.prepare()),
            signal,
        )
        .await;
        monitor.abort();
        sweeper.abort();
        limits.abort();
        fanout_health.abort();
        if let Some(fanout) = fanout {
            fanout.abort();
        }
        let _ = stop_relay.send(true);
        let _ = relay.await;
        let _ = self.stop_outbox.send(true);
        Ok(())
    }
}

/// Every gRPC service of chatd: health (SERVING: `build` has just migrated the
/// database; the monitor follows it from there), reflection, and ChatService and
/// SyncService behind their authentication.
async fn services(
    chat: &Chat,
    verifier: &Arc<TokenVerifier>,
    fanout_up: bool,
) -> Result<(HealthReporter, Routes), String> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    // For liveness probes: SERVING while the process serves, whatever the database does
    // (restarting chatd would not bring a database back).
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    set_fanout_health(&health, fanout_up).await;

    // Both reflection versions: grpcurl 1.8 and older clients only ask v1alpha. The
    // google.rpc types are served too, so clients can decode ErrorInfo details.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;

    let chat_service = Authenticate::new(
        verifier.clone(),
        ChatServiceServer::<grpc::ChatService>::NAME,
        &[Role::Tutor, Role::Student],
    )
    .with_stream_tickets()
    .service(
        ChatServiceServer::new(grpc::ChatService::new(chat.clone()))
            .max_decoding_message_size(grpc::MAX_REQUEST_BYTES),
    );
    let sync_service = Authenticate::new(
        verifier.clone(),
        SyncServiceServer::<grpc::SyncService>::NAME,
        &[Role::Service],
    )
    .service(
        SyncServiceServer::new(grpc::SyncService::new(chat.clone()))
            .max_decoding_message_size(grpc::MAX_REQUEST_BYTES),
    );
    let event_service = Authenticate::new(
        verifier.clone(),
        EventServiceServer::<grpc::EventService>::NAME,
        &[Role::Service],
    )
    .service(
        EventServiceServer::new(grpc::EventService::new(chat.clone()))
            .max_decoding_message_size(grpc::MAX_REQUEST_BYTES),
    );
    let routes = Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(chat_service)
        .add_service(sync_service)
        .add_service(event_service);
    Ok((health, routes))
}

/// The store migrations run on: the server's own, or, behind a transaction-mode pooler
/// (where the migration lock, a session's advisory lock, would not hold), a connection
/// to the direct URL the fan-out uses.
fn migrator(config: &ServeConfig, store: &Store) -> Result<Store, String> {
    let (DatabaseUrl::Postgres(_), Pooler::Transaction, Some(direct)) =
        (&config.database, config.pool.pooler, &config.fanout_url)
    else {
        return Ok(store.clone());
    };
    Store::connect(
        &DatabaseUrl::Postgres(direct.clone()),
        &PoolConfig {
            max_size: 1,
            timeout: config.pool.timeout,
            statement_timeout: None,
            pooler: Pooler::None,
            sqlite_sync: Default::default(),
        },
    )
}

/// The gauges read from their owners at scrape time.
fn register_gauges(
    metrics: &Metrics,
    store: &Store,
    (summaries, live): (&Summaries, Live),
    fanout_up: watch::Receiver<bool>,
) {
    let pool = store.clone();
    metrics.gauge_family(
        "chatd_db_pool_connections",
        "Database connections of the pool, in use or idle",
        "state",
        move || {
            let status = pool.pool_status();
            vec![
                ("in_use", (status.open - status.idle) as i64),
                ("idle", status.idle as i64),
            ]
        },
    );
    let pool = store.clone();
    metrics.gauge(
        "chatd_db_pool_max_connections",
        "Most connections the pool opens",
        move || pool.pool_status().max as i64,
    );
    let pool = store.clone();
    metrics.gauge(
        "chatd_db_pool_waiting",
        "Calls waiting for a pooled connection now",
        move || pool.pool_status().waiting as i64,
    );
    let space = store.clone();
    metrics.gauge(
        "chatd_storage_full",
        "1 while writes fail because the database has no room (STORAGE_FULL); reads still work",
        move || i64::from(space.episodes().is_full()),
    );
    let cache = summaries.clone();
    metrics.gauge(
        "chatd_summary_cache_entries",
        "Unread summaries held by the cache",
        move || cache.cache_usage().0 as i64,
    );
    let cache = summaries.clone();
    metrics.gauge(
        "chatd_summary_cache_bytes",
        "Estimated memory of the cached summaries",
        move || cache.cache_usage().1 as i64,
    );
    let streams = summaries.hub().clone();
    metrics.gauge(
        "chatd_watch_streams",
        "Open streams, summary and thread, gRPC and SSE",
        move || streams.open_streams() as i64,
    );
    metrics.gauge(
        "chatd_watched_threads",
        "Threads with an open window (WatchThread) on this replica",
        move || live.watched_threads() as i64,
    );
    let streams = summaries.hub().clone();
    metrics.gauge(
        "chatd_watch_streams_max",
        "Most streams this server holds (--watch-max-total); past it, TOO_MANY_STREAMS",
        move || streams.stream_cap() as i64,
    );
    metrics.gauge(
        "chatd_fanout_up",
        "1 while this replica hears other replicas' changes (always 1 on SQLite)",
        move || i64::from(*fanout_up.borrow()),
    );
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
