//! Prometheus metrics: one registry per application (two applications in one process
//! never report each other's series), the counters and histograms chatd keeps, and
//! gauges read from their owners at scrape time. A leaf: callers hand it plain values
//! and closures; it names nothing else of chatd.
//!
//! Every series whose labels are known in advance exists from the first scrape, at
//! zero, so an alert on `rate()` sees a series before the first event. `render` speaks
//! the Prometheus text format, or OpenMetrics when the scraper asks for it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Upper bounds (seconds) of the SQLite write phases' buckets: finer than requests',
/// down where a commit without a checkpoint lives.
const WRITE_PHASE_BUCKETS: [f64; 20] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn write_phase_histogram() -> Histogram {
    Histogram::new(WRITE_PHASE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// The phases of a write on SQLite's one writer (`WritePhases` records them).
pub mod write_phase {
    /// From the call to its group's transaction beginning: behind other groups, and
    /// behind the writer's own checkpoints.
    pub const QUEUED: &str = "queued";
    /// Its own statements.
    pub const STATEMENTS: &str = "statements";
    /// The other statements of its group, before the commit.
    pub const GROUP: &str = "group";
    /// The group's COMMIT (with `--sqlite-synchronous full`, its fsync).
    pub const COMMIT: &str = "commit";
    /// From the commit to the caller waking up with the answer.
    pub const ANSWER: &str = "answer";
    /// A checkpoint the writer ran between two groups (one observation per checkpoint,
    /// not per write): the pause the writes queued meanwhile saw.
    pub const CHECKPOINT: &str = "checkpoint";
    pub const ALL: [&str; 6] = [QUEUED, STATEMENTS, GROUP, COMMIT, ANSWER, CHECKPOINT];
}

/// How long SQLite writes spent in each phase (`write_phase`).
#[derive(Clone, Debug)]
pub struct WritePhases {
    family: Family<PhaseLabel, Histogram, fn() -> Histogram>,
}

impl WritePhases {
    pub fn observe(&self, phase: &'static str, elapsed: Duration) {
        self.family
            .get_or_create(&PhaseLabel { phase })
            .observe(elapsed.as_secs_f64());
    }
}

/// A gRPC call: the method's full name and the status code's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: &'static str,
    pub code: &'static str,
}

/// A REST request: method, matched route (never the raw path) and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// Requests of one kind: a counter and a latency histogram per label set.
#[derive(Clone, Debug)]
pub struct RequestMetrics<L: Clone + std::hash::Hash + Eq> {
    total: Family<L, Counter>,
    duration: Family<L, Histogram, fn() -> Histogram>,
}

impl<L> RequestMetrics<L>
where
    L: Clone + std::fmt::Debug + std::hash::Hash + Eq + EncodeLabelSet + Send + Sync + 'static,
{
    fn new() -> Self {
        Self {
            total: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        }
    }

    fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.total.clone());
        registry.register_with_unit(
            format!("{name}_duration"),
            format!("Latency of {help}"),
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// Counts one request and its latency.
    pub fn observe(&self, labels: &L, elapsed: Duration) {
        self.total.get_or_create(labels).inc();
        self.duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The series of `labels`, made to exist now (at zero), for counting into without
    /// looking it up again.
    pub fn series(&self, labels: &L) -> RequestSeries {
        RequestSeries {
            total: self.total.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
        }
    }

    /// Makes a series exist (at zero) before its first request.
    pub fn declare(&self, labels: &L) {
        drop(self.series(labels));
    }

    /// How many requests with `labels` were counted.
    pub fn count(&self, labels: &L) -> u64 {
        self.total.get(labels).map_or(0, |counter| counter.get())
    }
}

/// One label set's counter and histogram, held by whoever counts into them on every
/// request: no hashing of the labels and no lock of the family per request.
#[derive(Clone, Debug)]
pub struct RequestSeries {
    total: Counter,
    duration: Histogram,
}

impl RequestSeries {
    pub fn observe(&self, elapsed: Duration) {
        self.total.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CreatedLabel {
    created: bool,
}

/// What the chat domain counts. Cloning is shallow; every clone counts into the same
/// series.
#[derive(Clone, Debug)]
pub struct ChatCounters {
    messages_sent: Counter,
    streams_too_slow: Counter,
    threads_created: Family<KindLabel, Counter>,
    thread_ensured: Family<CreatedLabel, Counter>,
}

impl ChatCounters {
    /// A message was stored (a retry that returned the first message is not counted).
    pub fn message_sent(&self) {
        self.messages_sent.inc();
    }

    /// A thread stream was ended because its reader left its buffer full too long.
    pub fn stream_too_slow(&self) {
        self.streams_too_slow.inc();
    }

    /// EnsureThread answered a thread of `kind`, created by this call or not: the
    /// seed's rollout event `chat_thread_ensured`.
    pub fn thread_ensured(&self, kind: &'static str, created: bool) {
        self.thread_ensured
            .get_or_create(&CreatedLabel { created })
            .inc();
        if created {
            self.threads_created
                .get_or_create(&KindLabel { kind })
                .inc();
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// How unread-summary reads were answered: from the cache, from the database after a
/// miss, or from the database because the cache could not be trusted at that moment.
#[derive(Clone, Debug)]
pub struct CacheCounters {
    requests: Family<OutcomeLabel, Counter>,
    stale: Counter,
    evictions: Counter,
    sweep: Histogram,
    sweep_failures: Counter,
}

/// The outcomes `CacheCounters` counts, as their label values.
pub mod cache_outcome {
    pub const HIT: &str = "hit";
    pub const MISS: &str = "miss";
    pub const BYPASS: &str = "bypass";
    pub const ALL: [&str; 3] = [HIT, MISS, BYPASS];
}

impl CacheCounters {
    pub fn count(&self, outcome: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Cached summaries the sweep found stale: a notification that never came.
    pub fn count_stale(&self, entries: u64) {
        self.stale.inc_by(entries);
    }

    pub fn stale(&self) -> u64 {
        self.stale.get()
    }

    /// A summary evicted to keep the cache within its budget.
    pub fn count_eviction(&self) {
        self.evictions.inc();
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }

    /// One sweep compared the cached versions with the database's in `elapsed`.
    pub fn observe_sweep(&self, elapsed: Duration) {
        self.sweep.observe(elapsed.as_secs_f64());
    }

    /// A sweep failed (the database did not answer): entries may stay stale past the
    /// sweep interval until one succeeds.
    pub fn count_sweep_failure(&self) {
        self.sweep_failures.inc();
    }

    /// How many reads had `outcome` so far.
    pub fn get(&self, outcome: &'static str) -> u64 {
        self.requests
            .get(&OutcomeLabel { outcome })
            .map_or(0, |counter| counter.get())
    }
}

/// A sink of events (`nats`, `webhook`) and how a delivery went (`ok`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

/// The relay's deliveries of events to its sinks.
#[derive(Clone, Debug)]
pub struct EventCounters {
    delivered: Family<SinkLabels, Counter>,
    lag: Family<
        SinkLabel,
        prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    >,
}

impl EventCounters {
    /// `events` delivered to `sink` (outcome `ok`), or a delivery of them that failed
    /// (`failed`: they are retried).
    pub fn count(&self, sink: &'static str, outcome: &'static str, events: u64) {
        self.delivered
            .get_or_create(&SinkLabels { sink, outcome })
            .inc_by(events);
    }

    /// Makes `sink`'s series exist, at zero, before its first delivery (a configured
    /// sink is scraped, and alerted on, from the start).
    pub fn declare(&self, sink: &'static str) {
        for outcome in ["ok", "failed"] {
            drop(self.delivered.get_or_create(&SinkLabels { sink, outcome }));
        }
        drop(self.lag.get_or_create(&SinkLabel { sink }));
    }

    /// How far `sink` is behind: the age of the oldest event it has not acknowledged
    /// (0 when it has them all).
    pub fn set_lag(&self, sink: &'static str, lag: Duration) {
        self.lag
            .get_or_create(&SinkLabel { sink })
            .set(lag.as_secs_f64());
    }

    pub fn delivered(&self, sink: &'static str, outcome: &'static str) -> u64 {
        self.delivered
            .get(&SinkLabels { sink, outcome })
            .map_or(0, |counter| counter.get())
    }
}

/// The metrics of one application. Cloning is shallow.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub rpc: RequestMetrics<RpcLabels>,
    pub http: RequestMetrics<HttpLabels>,
    pub chat: ChatCounters,
    pub cache: CacheCounters,
    pub events: EventCounters,
    registry: Arc<RwLock<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series chatd keeps, the label sets known in advance
    /// already at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let rpc = RequestMetrics::new();
        rpc.register(&mut registry, "chatd_rpc_requests", "chat.v1 calls");
        let http = RequestMetrics::new();
        http.register(&mut registry, "chatd_http_requests", "REST requests");
        let chat = ChatCounters {
            messages_sent: Counter::default(),
            streams_too_slow: Counter::default(),
            threads_created: Family::default(),
            thread_ensured: Family::default(),
        };
        for created in [true, false] {
            drop(chat.thread_ensured.get_or_create(&CreatedLabel { created }));
        }
        for kind in ["contact", "negotiation"] {
            drop(chat.threads_created.get_or_create(&KindLabel { kind }));
        }
        registry.register(
            "chatd_messages_sent",
            "Messages stored (retries returning the first message excluded)",
            chat.messages_sent.clone(),
        );
        registry.register(
            "chatd_thread_streams_too_slow",
            "Thread streams ended with STREAM_TOO_SLOW: their reader left the buffer full for \
             --watch-stall-timeout",
            chat.streams_too_slow.clone(),
        );
        registry.register(
            "chatd_threads_created",
            "Threads created, by kind",
            chat.threads_created.clone(),
        );
        registry.register(
            "chat_thread_ensured",
            "EnsureThread answers, by whether the call created the thread",
            chat.thread_ensured.clone(),
        );
        let cache = CacheCounters {
            requests: Family::default(),
            stale: Counter::default(),
            evictions: Counter::default(),
            sweep: latency_histogram(),
            sweep_failures: Counter::default(),
        };
        for outcome in cache_outcome::ALL {
            drop(cache.requests.get_or_create(&OutcomeLabel { outcome }));
        }
        registry.register(
            "chatd_summary_cache_requests",
            "Unread summary reads, by how they were answered (hit, miss, bypass)",
            cache.requests.clone(),
        );
        registry.register(
            "chatd_summary_cache_stale",
            "Cached summaries the sweep found stale (a change no notification reported); \
             above 0, notifications are being lost",
            cache.stale.clone(),
        );
        registry.register(
            "chatd_summary_cache_evictions",
            "Summaries evicted to keep the cache within its budget; a steady rate means \
             it holds fewer users than poll (raise --summary-cache-mib)",
            cache.evictions.clone(),
        );
        registry.register_with_unit(
            "chatd_summary_cache_sweep",
            "How long one sweep took to compare every cached summary's version with the \
             database's (the grace it then gives late notifications not included)",
            Unit::Seconds,
            cache.sweep.clone(),
        );
        registry.register(
            "chatd_summary_cache_sweep_failures",
            "Sweeps that failed; while they fail, an entry a lost notification left stale \
             can outlive --summary-cache-sweep",
            cache.sweep_failures.clone(),
        );
        let events = EventCounters {
            delivered: Family::default(),
            lag: Family::default(),
        };
        registry.register(
            "chatd_events_delivered",
            "Events the relay delivered to a sink (outcome ok) or failed to and retries \
             (outcome failed), by sink",
            events.delivered.clone(),
        );
        registry.register_with_unit(
            "chatd_events_lag",
            "How far a sink is behind: the age of the oldest event it has not acknowledged \
             (0 when it has them all); reported by the replica that relays",
            Unit::Seconds,
            events.lag.clone(),
        );
        Self {
            rpc,
            http,
            chat,
            cache,
            events,
            registry: Arc::new(RwLock::new(registry)),
        }
    }

    /// Registers the SQLite writer's phase histograms, every phase's series present from
    /// the first scrape (a SQLite server calls it once; PostgreSQL has no such writer).
    pub fn sqlite_write_phases(&self) -> WritePhases {
        let phases = WritePhases {
            family: Family::new_with_constructor(write_phase_histogram),
        };
        for phase in write_phase::ALL {
            let _ = phases.family.get_or_create(&PhaseLabel { phase });
        }
        self.registry_mut().register_with_unit(
            "chatd_sqlite_write_phase",
            "Where SQLite writes spend their time, by phase: queued for the one writer, \
             their own statements, their group's other statements, the commit, the answer \
             back to the caller; checkpoint is the writer's own WAL checkpoints",
            Unit::Seconds,
            phases.family.clone(),
        );
        phases
    }

    /// Registers a gauge whose value `read` gives at each scrape.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.gauge_family(name, help, "", move || vec![("", read())]);
    }

    /// Registers a gauge with one label, `label`, whose series and values `read` gives
    /// at each scrape (an empty label name registers a gauge without labels).
    pub fn gauge_family(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: impl Fn() -> Vec<(&'static str, i64)> + Send + Sync + 'static,
    ) {
        let gauge = ScrapeGauge {
            name,
            help,
            label,
            read: Box::new(read),
        };
        self.registry_mut().register_collector(Box::new(gauge));
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        // Registration cannot leave the registry half-changed: ignore poisoning.
        self.registry
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every series, and the content type to send them with: OpenMetrics when the
    /// scraper's `Accept` asks for it, else the Prometheus text format.
    pub fn render(&self, accept: Option<&str>) -> (&'static str, String) {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut body = String::new();
        let openmetrics =
            accept.is_some_and(|accept| accept.contains("application/openmetrics-text"));
        // Writing into a String cannot fail.
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
            (OPENMETRICS_CONTENT_TYPE, body)
        } else {
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, &registry);
            (
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
            )
        }
    }
}

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge read from its owner at scrape time, so nothing samples in the background.
struct ScrapeGauge {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    read: Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>,
}

impl std::fmt::Debug for ScrapeGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeGauge")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for ScrapeGauge {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        let series = (self.read)();
        if self.label.is_empty() {
            let value = series.first().map_or(0, |(_, value)| *value);
            return ConstGauge::new(value).encode(metric);
        }
        for (label_value, value) in series {
            let labels = [(self.label, label_value)];
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
