//! The alert rules (`deploy/prometheus/alerts.yaml`) and the dashboard
//! (`deploy/grafana/chatd.json`) speak of series chatd really exports: a renamed metric
//! would silence an alert without a word, so every `chatd_…` name they use must be in a
//! live server's /metrics.

use std::collections::BTreeSet;

use chatd::domain::Role;

use crate::gateway::client;
use crate::helpers::{Backend, ChatClientExt, TestApp};

/// Every `chatd_…` metric name in `text`.
fn series_named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("chatd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_name_only_exported_series() {
    // With a sink configured (nothing listens there), so its series are exported too.
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.events.webhook = Some(
            chatd::config::WebhookConfig::parse(
                "http://127.0.0.1:9/hook",
                "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            )
            .expect("a webhook"),
        );
    })
    .await;
    // One of each kind of call, so every labelled family has a sample.
    let thread = app.contact_thread(10, 42, 7).await;
    app.student(7).say(thread.thread_id, "counted").await;
    app.tutor(42).unread().await;
    let rest = client()
        .get(app.url("/api/v1/chat/unread-summary/"))
        .header("authorization", app.bearer(42, Role::Tutor))
        .send()
        .await
        .expect("the gateway answers");
    assert!(rest.status().is_success());
    let exported: BTreeSet<String> = reqwest::get(&app.metrics)
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    for (file, text) in [
        (
            "deploy/prometheus/alerts.yaml",
            include_str!("../../deploy/prometheus/alerts.yaml"),
        ),
        (
            "deploy/grafana/chatd.json",
            include_str!("../../deploy/grafana/chatd.json"),
        ),
    ] {
        let named = series_named(text);
        assert!(named.len() >= 5, "{file} names series: {named:?}");
        let missing: Vec<_> = named.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names series chatd does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}
