//! The unread-summary cache answers polls without the database, and is never wrong for
//! longer than its rules allow: a write invalidates its own replica's entries before it
//! answers; other replicas learn through the fan-out; a replica that cannot hear the
//! fan-out serves from the database; the sweep repairs a notification that was lost.

use std::time::Duration;

use chatd::grpc::pb::RelationStatus;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{Proxy, Route};
use crate::health::wait_for;
use crate::helpers::{Backend, ChatClientExt, TestApp, mark_read};
use crate::watch::next;

const TUTOR: i64 = 42;
const STUDENT: i64 = 7;

/// How many summary reads `app` answered with `outcome` (hit, miss, bypass), from its
/// own /metrics, as an operator would read it.
async fn cache_reads(app: &TestApp, outcome: &str) -> u64 {
    series(
        app,
        &format!("chatd_summary_cache_requests_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// The value of one series of `app`'s /metrics.
async fn series(app: &TestApp, name: &str) -> u64 {
    app.series(name).await
}

const STALE: &str = "chatd_summary_cache_stale_total";

/// Reads the tutor's summary twice on `app` and checks the second came from the cache.
async fn cached_total(app: &TestApp) -> i64 {
    let first = app.tutor(TUTOR).unread().await.total;
    let hits = cache_reads(app, "hit").await;
    let second = app.tutor(TUTOR).unread().await.total;
    assert_eq!(
        cache_reads(app, "hit").await,
        hits + 1,
        "the second read is a hit"
    );
    assert_eq!(first, second);
    second
}

/// Every kind of write drops the entries it changed before it answers: the very next
/// read on the same server shows it.
async fn a_write_invalidates_before_it_answers(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    assert_eq!(cached_total(&app).await, 0);

    app.student(STUDENT).say(thread.thread_id, "one").await;
    assert_eq!(app.tutor(TUTOR).unread().await.total, 1, "after a message");
    assert_eq!(cached_total(&app).await, 1);

    app.tutor(TUTOR)
        .mark_read(mark_read(thread.thread_id, None))
        .await
        .unwrap();
    assert_eq!(app.tutor(TUTOR).unread().await.total, 0, "after MarkRead");

    app.student(STUDENT).say(thread.thread_id, "two").await;
    let before = app.tutor(TUTOR).unread().await;
    assert!(before.threads[0].is_writable);
    cached_total(&app).await;
    app.relation(10, TUTOR, STUDENT, RelationStatus::Archived, 2)
        .await;
    let after = app.tutor(TUTOR).unread().await;
    assert!(
        !after.threads[0].is_writable,
        "after the relation's archive"
    );
}

/// A summary whose notification never came (changed behind chatd's back here, as a
/// replica killed between commit and publish would leave it) is repaired by the sweep:
/// the watcher of that summary is woken with the database's truth.
async fn the_sweep_repairs_a_lost_notification(app: TestApp) {
    let thread = app.contact_thread(10, TUTOR, STUDENT).await;
    app.student(STUDENT).say(thread.thread_id, "one").await;
    assert_eq!(cached_total(&app).await, 1);
    let mut updates = TestApp::watch(&mut app.tutor(TUTOR)).await;
    assert_eq!(next(&mut updates).await.total, 1);

    app.database()
        .execute_inside(&format!(
            "UPDATE thread_participants SET unread_count = 5 \
             WHERE thread_id = {} AND side = 'tutor'; \
             UPDATE summary_versions SET version = version + 1 \
             WHERE user_id = {TUTOR} AND side = 'tutor';",
            thread.thread_id
        ))
        .await;
    assert_eq!(
        next(&mut updates).await.total,
        5,
        "the sweep woke the watcher"
    );
    assert_eq!(app.tutor(TUTOR).unread().await.total, 5);
    assert_eq!(series(&app, STALE).await, 1, "the operator sees it counted");
}

backend_suite!(
    a_write_invalidates_before_it_answers,
    the_sweep_repairs_a_lost_notification,
);

/// Two replicas: a write on A reaches B's cache through the fan-out. B's watcher is
/// woken only after B dropped the entry, so its update is the event to wait on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_write_on_one_replica_reaches_the_others_cache() {
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.replica().await;
    wait_for(&b, "fanout", ServingStatus::Serving).await;
    let thread = a.contact_thread(10, TUTOR, STUDENT).await;
    assert_eq!(cached_total(&b).await, 0);
    let mut on_b = TestApp::watch(&mut b.tutor(TUTOR)).await;
    assert_eq!(next(&mut on_b).await.total, 0);

    a.student(STUDENT).say(thread.thread_id, "via A").await;
    assert_eq!(next(&mut on_b).await.total, 1);
    assert_eq!(cached_total(&b).await, 1, "B serves the new summary");
}

/// A replica whose fan-out is cut (refused, or silent as in a partition) stops serving
/// from its cache and reads the database; when the fan-out is back it drops the whole
/// cache, since what was sent meanwhile is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_that_cannot_hear_reads_the_database() {
    for cut in [Route::Refuse, Route::Silence] {
        let a = TestApp::spawn(Backend::Postgres).await;
        let chatd::storage::DatabaseUrl::Postgres(url) = a.database().url() else {
            unreachable!("a PostgreSQL test app")
        };
        let upstream = url.split_once('@').unwrap().1.split_once('/').unwrap().0;
        let proxy = Proxy::start(Route::Forward(upstream.parse().unwrap())).await;
        let b = a
            .replica_with(|config| config.fanout_url = Some(proxy.postgres_url(&url)))
            .await;
        wait_for(&b, "fanout", ServingStatus::Serving).await;
        let thread = a.contact_thread(10, TUTOR, STUDENT).await;
        assert_eq!(cached_total(&b).await, 0);

        proxy.set(cut);
        wait_for(&b, "fanout", ServingStatus::NotServing).await;
        a.student(STUDENT)
            .say(thread.thread_id, "unheard by B")
            .await;
        let bypassed = cache_reads(&b, "bypass").await;
        assert_eq!(
            b.tutor(TUTOR).unread().await.total,
            1,
            "{cut:?}: B reads the database, not its stale entry"
        );
        assert_eq!(cache_reads(&b, "bypass").await, bypassed + 1);

        proxy.set(Route::Forward(upstream.parse().unwrap()));
        wait_for(&b, "fanout", ServingStatus::Serving).await;
        assert_eq!(
            cached_total(&b).await,
            1,
            "{cut:?}: fresh after the feed is back"
        );
    }
}

/// Two replicas under a steady mixed load: students write on both, tutors poll on both
/// (filling both caches while writes race the fills) and mark read. Every cached
/// summary is kept current by notifications, so the sweep (every 200 ms here) finds
/// nothing stale on either replica, and both answer the database's truth at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_under_load_leave_the_sweep_nothing_stale() {
    two_replicas_under_load_leave_the_sweep_nothing_stale(None).await;
}

/// The same over NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_replicas_under_load_leave_the_sweep_nothing_stale() {
    let test = "summary_cache::nats_two_replicas_under_load_leave_the_sweep_nothing_stale";
    let Some(nats) = crate::nats_server::NatsServer::start(test).await else {
        return;
    };
    two_replicas_under_load_leave_the_sweep_nothing_stale(Some(nats.url())).await;
}

async fn two_replicas_under_load_leave_the_sweep_nothing_stale(fanout_url: Option<String>) {
    const PAIRS: i64 = 6;
    const LOAD: Duration = Duration::from_secs(6);
    let first_url = fanout_url.clone();
    let a = TestApp::spawn_with(Backend::Postgres, |config| config.fanout_url = first_url).await;
    let b = a
        .replica_with(|config| config.fanout_url = fanout_url)
        .await;
    wait_for(&a, "fanout", ServingStatus::Serving).await;
    wait_for(&b, "fanout", ServingStatus::Serving).await;
    let mut threads = Vec::new();
    for pair in 0..PAIRS {
        let (tutor, student) = (100 + pair, 200 + pair);
        threads.push((
            tutor,
            student,
            a.contact_thread(10 + pair, tutor, student).await,
        ));
    }
    let until = tokio::time::Instant::now() + LOAD;
    let mut load = tokio::task::JoinSet::new();
    for (i, (tutor, student, thread)) in threads.iter().enumerate() {
        let (writer_on, reader_on) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let mut writer = writer_on.student(*student);
        let thread_id = thread.thread_id;
        load.spawn(async move {
            let mut sent = 0;
            while tokio::time::Instant::now() < until {
                writer.say(thread_id, "load").await;
                sent += 1;
            }
            sent
        });
        for app in [reader_on, writer_on] {
            let mut reader = app.tutor(*tutor);
            load.spawn(async move {
                let mut polls = 0;
                while tokio::time::Instant::now() < until {
                    reader.unread().await;
                    polls += 1;
                    if polls % 7 == 0 {
                        reader
                            .mark_read(mark_read(thread_id, None))
                            .await
                            .expect("mark read succeeds");
                    }
                }
                0
            });
        }
    }
    let sent: i64 = load.join_all().await.into_iter().sum();
    assert!(sent > 0, "the load sent messages");
    for (name, app) in [("A", &a), ("B", &b)] {
        assert!(
            cache_reads(app, "hit").await > 0,
            "{name} served from its cache"
        );
        assert_eq!(
            series(app, STALE).await,
            0,
            "{name}'s sweep found stale entries"
        );
    }
    // And the replicas agree, as soon as the last notifications have landed.
    for (tutor, _, _) in &threads {
        let agreed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let on_a = a.tutor(*tutor).unread().await;
                let on_b = b.tutor(*tutor).unread().await;
                if (on_a.total, &on_a.etag) == (on_b.total, &on_b.etag) {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(agreed.is_ok(), "tutor {tutor}: A and B disagree for 2 s");
    }
}
