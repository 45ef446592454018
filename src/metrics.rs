//! Prometheus metrics: a small registry of counters and latency histograms, rendered
//! as the text exposition format at `/metrics`. Gauges (pool, streams) are read from
//! their owners at scrape time, so nothing is sampled in the background.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;

use crate::domain::SummaryHub;
use crate::storage::Store;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// Labels rendered in order, e.g. `rpc="…",code="OK"`.
type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Series {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<(&'static str, String), Histogram>,
}

/// What `/metrics` reads at scrape time.
#[derive(Clone)]
struct Sources {
    store: Store,
    hub: SummaryHub,
}

/// The process's metrics. One per process, like the Prometheus registry it feeds.
pub struct Metrics {
    series: Mutex<Series>,
    sources: Mutex<Option<Sources>>,
}

static GLOBAL: LazyLock<Arc<Metrics>> = LazyLock::new(|| {
    Arc::new(Metrics {
        series: Mutex::new(Series::default()),
        sources: Mutex::new(None),
    })
});

/// The process's metrics registry.
pub fn global() -> Arc<Metrics> {
    GLOBAL.clone()
}

fn render_labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(name, value)| {
            format!(
                "{name}=\"{}\"",
                value.replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `{labels}`, or nothing for a series without labels.
fn braced(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        // Counters stay meaningful after a panic elsewhere: ignore poisoning.
        self.series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds one to a counter.
    pub fn increment(&self, name: &'static str, labels: Labels) {
        *self
            .series()
            .counters
            .entry((name, render_labels(&labels)))
            .or_default() += 1;
    }

    /// Counts a request and its latency: `<name>_total` and `<name>_duration_seconds`.
    pub fn observe(&self, name: &'static str, labels: Labels, elapsed: Duration) {
        let labels = render_labels(&labels);
        let mut series = self.series();
        *series.counters.entry((name, labels.clone())).or_default() += 1;
        series
            .histograms
            .entry((name, labels))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Where the pool and stream gauges come from (set by `chatd serve`).
    pub fn set_sources(&self, store: Store, hub: SummaryHub) {
        *self.sources.lock().unwrap_or_else(|p| p.into_inner()) = Some(Sources { store, hub });
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let series = self.series();
        let mut last = "";
        for ((name, labels), value) in &series.counters {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name}_total counter");
                last = name;
            }
            let _ = writeln!(out, "{name}_total{} {value}", braced(labels));
        }
        last = "";
        for ((name, labels), histogram) in &series.histograms {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name}_duration_seconds histogram");
                last = name;
            }
            let sep = if labels.is_empty() { "" } else { "," };
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(
                    out,
                    "{name}_duration_seconds_bucket{{{labels}{sep}le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_duration_seconds_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "{name}_duration_seconds_sum{} {}",
                braced(labels),
                histogram.sum
            );
            let _ = writeln!(
                out,
                "{name}_duration_seconds_count{} {}",
                braced(labels),
                histogram.count
            );
        }
        drop(series);
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(sources) = sources {
            let pool = sources.store.pool_status();
            let _ = writeln!(out, "# TYPE chatd_db_pool_connections gauge");
            let _ = writeln!(
                out,
                "chatd_db_pool_connections{{state=\"in_use\"}} {}",
                pool.size - pool.available
            );
            let _ = writeln!(
                out,
                "chatd_db_pool_connections{{state=\"idle\"}} {}",
                pool.available
            );
            let _ = writeln!(out, "# TYPE chatd_db_pool_max_connections gauge");
            let _ = writeln!(out, "chatd_db_pool_max_connections {}", pool.max_size);
            let _ = writeln!(out, "# TYPE chatd_db_pool_waiting gauge");
            let _ = writeln!(out, "chatd_db_pool_waiting {}", pool.waiting);
            let _ = writeln!(out, "# TYPE chatd_watch_streams gauge");
            let _ = writeln!(out, "chatd_watch_streams {}", sources.hub.open_streams());
        }
        out
    }
}

/// `GET /metrics`.
pub async fn endpoint() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        global().render(),
    )
}

/// Serves `/metrics` alone on `listen` until `shutdown` (the `--metrics` port of serve).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let router = axum::Router::new().route("/metrics", axum::routing::get(endpoint));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("metrics listener failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let metrics = Metrics {
            series: Mutex::new(Series::default()),
            sources: Mutex::new(None),
        };
        metrics.observe(
            "chatd_rpc",
            vec![("rpc", "a/B".into()), ("code", "OK".into())],
            Duration::from_millis(3),
        );
        metrics.increment("chat_thread_ensured", vec![("created", "true".into())]);
        let text = metrics.render();
        assert!(
            text.contains("chatd_rpc_total{rpc=\"a/B\",code=\"OK\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "chatd_rpc_duration_seconds_bucket{rpc=\"a/B\",code=\"OK\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "chatd_rpc_duration_seconds_bucket{rpc=\"a/B\",code=\"OK\",le=\"0.0025\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("chat_thread_ensured_total{created=\"true\"} 1"),
            "{text}"
        );
        metrics.increment("chatd_messages_sent", Vec::new());
        assert!(metrics.render().contains("\nchatd_messages_sent_total 1\n"));
    }
}
