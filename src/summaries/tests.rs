//! The summary cache's fills, invalidations and trust.

use super::*;
use crate::metrics::Metrics;
use crate::model::Side;

fn summaries(trust: CacheTrust) -> Summaries {
    Summaries::new(
        CacheConfig {
            budget_bytes: 1 << 20,
            sweep: std::time::Duration::from_secs(5),
        },
        WatchLimits {
            per_user: 1,
            total: 1,
        },
        Arc::new(crate::fanout::Local),
        Metrics::new().cache,
        trust,
    )
}

fn summary(version: i64) -> Arc<CachedSummary> {
    Arc::new(CachedSummary::new(version, UnreadPage::default()))
}

const KEY: SummaryKey = SummaryKey {
    user_id: 42,
    side: Side::Tutor,
};

/// Past its budget the cache evicts, and says how often: the operator's sign that it
/// holds fewer users than poll.
#[test]
fn evictions_are_counted() {
    let summaries = summaries(CacheTrust::FromStart);
    let entry_bytes = summary(0).weight;
    let fits = (1u64 << 20) / entry_bytes;
    for user_id in 0..(fits as i64 * 2) {
        let key = SummaryKey::new(user_id + 1, Side::Tutor);
        let token = summaries.fill_token(&key).unwrap();
        summaries.fill(key, token, summary(0));
    }
    let (held, _) = summaries.cache_usage();
    assert!((held as u64) <= fits, "{held} held, {fits} fit");
    assert!(
        summaries.counters.evictions() >= fits / 2,
        "{} evictions counted",
        summaries.counters.evictions()
    );
}

#[test]
fn a_fill_that_raced_an_invalidation_is_not_inserted() {
    let summaries = summaries(CacheTrust::FromStart);
    let token = summaries.fill_token(&KEY).expect("trusted");
    summaries.committed(&[KEY]);
    summaries.fill(KEY, token, summary(1));
    assert!(
        summaries.cached(&KEY).is_none(),
        "the read may predate the write"
    );
    let token = summaries.fill_token(&KEY).expect("trusted");
    summaries.fill(KEY, token, summary(2));
    assert_eq!(summaries.cached(&KEY).map(|s| s.version), Some(2));
}

#[test]
fn nothing_is_served_while_the_fanout_is_down_and_all_is_dropped_when_back() {
    let summaries = summaries(CacheTrust::FromStart);
    let token = summaries.fill_token(&KEY).unwrap();
    summaries.fill(KEY, token, summary(1));
    summaries.disconnected();
    assert!(summaries.cached(&KEY).is_none());
    assert!(summaries.fill_token(&KEY).is_none(), "no fills either");
    summaries.connected();
    assert!(summaries.cached(&KEY).is_none(), "dropped on reconnect");
}

#[test]
fn an_untrusted_start_waits_for_the_fanout() {
    let summaries = summaries(CacheTrust::OnceFanoutConnects);
    assert!(summaries.fill_token(&KEY).is_none());
    summaries.connected();
    assert!(summaries.fill_token(&KEY).is_some());
}

#[test]
fn repair_drops_entries_whose_version_moved() {
    let summaries = summaries(CacheTrust::FromStart);
    let other = SummaryKey::new(7, Side::Student);
    for (key, version) in [(KEY, 3), (other, 0)] {
        let token = summaries.fill_token(&key).unwrap();
        summaries.fill(key, token, summary(version));
    }
    // KEY moved on to 4 without a notification; `other` never changed (no row).
    let suspects = Summaries::suspects(summaries.cached_entries(), &[(KEY, 4)]);
    assert_eq!(suspects.len(), 1);
    assert_eq!(summaries.repair(&suspects), 1);
    assert!(summaries.cached(&KEY).is_none());
    assert!(summaries.cached(&other).is_some());
    assert_eq!(summaries.counters.stale(), 1);
}

/// A write the sweep's read saw, whose notification came before the grace ended,
/// already dropped (and maybe refilled) the entry: nothing was stale.
#[test]
fn a_notification_in_flight_is_not_stale() {
    let summaries = summaries(CacheTrust::FromStart);
    let token = summaries.fill_token(&KEY).unwrap();
    summaries.fill(KEY, token, summary(3));
    let suspects = Summaries::suspects(summaries.cached_entries(), &[(KEY, 4)]);
    summaries.changed(&[KEY]);
    let token = summaries.fill_token(&KEY).unwrap();
    summaries.fill(KEY, token, summary(4));
    assert_eq!(summaries.repair(&suspects), 0);
    assert_eq!(summaries.cached(&KEY).map(|s| s.version), Some(4));
    assert_eq!(summaries.counters.stale(), 0);
}
