//! The metrics' unit tests: series present from the first scrape, and their formats.

use super::*;

#[test]
fn known_series_exist_at_zero_with_help() {
    let metrics = Metrics::new();
    let (content_type, text) = metrics.render(None);
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    for line in [
        "# HELP chatd_messages_sent_total Messages stored",
        "# TYPE chatd_messages_sent_total counter",
        "chatd_messages_sent_total 0",
        "chat_thread_ensured_total{created=\"true\"} 0",
        "chat_thread_ensured_total{created=\"false\"} 0",
        "chatd_threads_created_total{kind=\"negotiation\"} 0",
        "chatd_summary_cache_requests_total{outcome=\"bypass\"} 0",
    ] {
        assert!(text.contains(line), "lacks {line}:\n{text}");
    }
}

#[test]
fn requests_count_with_latency_buckets() {
    let metrics = Metrics::new();
    let labels = RpcLabels {
        rpc: "chat.v1.ChatService/SendMessage",
        code: "OK",
    };
    metrics.rpc.observe(&labels, Duration::from_millis(3));
    let (_, text) = metrics.render(None);
    assert!(
        text.contains(
            "chatd_rpc_requests_total{rpc=\"chat.v1.ChatService/SendMessage\",code=\"OK\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("chatd_rpc_requests_duration_seconds_bucket{le=\"0.005\",rpc=\"chat.v1.ChatService/SendMessage\",code=\"OK\"} 1")
            || text.contains("chatd_rpc_requests_duration_seconds_bucket{rpc=\"chat.v1.ChatService/SendMessage\",code=\"OK\",le=\"0.005\"} 1"),
        "{text}"
    );
    assert_eq!(metrics.rpc.count(&labels), 1);
}

#[test]
fn label_values_are_escaped() {
    let metrics = Metrics::new();
    let labels = HttpLabels {
        method: "GET",
        route: "a\"b\\c\nd".into(),
        status: 200,
    };
    metrics.http.observe(&labels, Duration::from_millis(1));
    let (_, text) = metrics.render(None);
    assert!(text.contains(r#"route="a\"b\\c\nd""#), "{text}");
}

#[test]
fn gauges_are_read_at_scrape_time_and_openmetrics_on_request() {
    let metrics = Metrics::new();
    let value = Arc::new(std::sync::atomic::AtomicI64::new(3));
    let read = value.clone();
    metrics.gauge("chatd_watch_streams", "Open streams", move || {
        read.load(std::sync::atomic::Ordering::Relaxed)
    });
    metrics.gauge_family("chatd_db_pool_connections", "Pool", "state", || {
        vec![("in_use", 1), ("idle", 2)]
    });
    assert!(metrics.render(None).1.contains("chatd_watch_streams 3"));
    value.store(5, std::sync::atomic::Ordering::Relaxed);
    let (content_type, text) = metrics.render(Some("application/openmetrics-text; version=1.0.0"));
    assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
    assert!(text.contains("chatd_watch_streams 5"), "{text}");
    assert!(
        text.contains("chatd_db_pool_connections{state=\"idle\"} 2"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn registries_are_separate() {
    let (a, b) = (Metrics::new(), Metrics::new());
    a.chat.message_sent();
    assert!(a.render(None).1.contains("chatd_messages_sent_total 1"));
    assert!(b.render(None).1.contains("chatd_messages_sent_total 0"));
}
