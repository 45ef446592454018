//! Fault tests: chatd as an operator runs it (the built binary, in a process of its
//! own) while the test breaks things under load. A PostgreSQL of the test's own is
//! stopped with `-m immediate` mid-load; a SQLite chatd is killed with SIGKILL; a
//! replica holding open windows is killed (`windows.rs`); the events relay's replica,
//! nats-server, a webhook receiver and PostgreSQL fail in turn (`events.rs`); and thousands of idle
//! connections try to starve the server. Each asserts what users
//! would notice: nothing acknowledged lost, nothing doubled, counters exact, service
//! back within a bound, health answering throughout.

mod events;
#[path = "../common/nats_server.rs"]
mod nats_server;
#[expect(
    dead_code,
    reason = "shared with the browser tests; this binary uses a part"
)]
mod processes;
#[path = "../common/require.rs"]
mod require;
#[path = "../common/window.rs"]
#[expect(
    dead_code,
    reason = "shared with the API tests; this binary uses a part"
)]
mod window;
mod windows;
mod workload;

use std::time::{Duration, Instant};

use chatd::grpc::pb;
use processes::harness;
use processes::{Chatd, TempDir, ThrowawayPostgres};
use workload::Caller;

/// The most a sender may wait, once the fault is over, for its next call to succeed.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// Concurrent senders and messages each: 16 × 120 = 1,920 messages in 8 threads.
const SENDERS: usize = 16;
const MESSAGES: usize = 120;

/// PostgreSQL stopped with `-m immediate` mid-load and started again: every
/// acknowledged message is stored once, seqs have no gap, counters equal a recount,
/// and sends succeed again soon after the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_immediately_mid_load_loses_nothing() {
    let Some(postgres) =
        ThrowawayPostgres::start("faults::postgres_stopped_immediately_mid_load_loses_nothing")
            .await
    else {
        return;
    };
    let dir = TempDir::new();
    let chatd = Chatd::start(
        &dir.0,
        &postgres.url(),
        &[
            "--db-timeout",
            "1s",
            "--call-timeout",
            "2s",
            "--health-interval",
            "200ms",
        ],
        None,
    )
    .await;
    let caller = Caller::new(chatd.grpc);
    let pairs = workload::pairs(&caller, 8).await;
    let mut load = workload::start(&caller, &pairs, SENDERS, MESSAGES);

    load.until(|acknowledged, _| acknowledged >= 400).await;
    postgres.stop_immediately().await;
    let before = load.progress.borrow().1;
    // Down until every sender has felt it.
    load.until(|_, failures| failures >= before + SENDERS).await;
    postgres.start_again().await;
    let back = Instant::now();
    let seen = load.finish().await;

    workload::audit(&caller, &pairs, &seen.acknowledged).await;
    let recovered = workload::recovery(&seen, back);
    eprintln!(
        "postgres stopped mid-load: {} acknowledged, {} failed attempts retried, first success {:?} after restart",
        seen.acknowledged.len(),
        seen.failures,
        recovered
    );
    assert_eq!(seen.acknowledged.len(), SENDERS * MESSAGES);
    assert!(seen.failures > 0, "the outage was felt");
    assert!(recovered < RECOVERY_BOUND, "back after {recovered:?}");
    drop(chatd);
}

/// A SQLite chatd killed with SIGKILL mid-load, twice, and started again on the same
/// file: the same guarantees, and the database file passes `integrity_check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_chatd_killed_mid_load_loses_nothing() {
    let dir = TempDir::new();
    let file = dir.join("chatd.db");
    let url = format!("sqlite://{}", file.display());
    let mut chatd = Chatd::start(&dir.0, &url, &["--call-timeout", "2s"], None).await;
    let caller = Caller::new(chatd.grpc);
    let pairs = workload::pairs(&caller, 8).await;
    let mut load = workload::start(&caller, &pairs, SENDERS, MESSAGES);

    let mut recoveries = Vec::new();
    for at in [400, 1000] {
        load.until(|acknowledged, _| acknowledged >= at).await;
        chatd.kill().await;
        let before = load.progress.borrow().1;
        load.until(|_, failures| failures >= before + SENDERS).await;
        // From the restart command: chatd's own start counts.
        recoveries.push(Instant::now());
        chatd.restart().await;
    }
    let seen = load.finish().await;

    workload::audit(&caller, &pairs, &seen.acknowledged).await;
    let recovered: Vec<Duration> = recoveries
        .iter()
        .map(|back| workload::recovery(&seen, *back))
        .collect();
    eprintln!(
        "sqlite chatd killed twice mid-load: {} acknowledged, {} failed attempts retried, first success {:?} after each restart",
        seen.acknowledged.len(),
        seen.failures,
        recovered
    );
    assert_eq!(seen.acknowledged.len(), SENDERS * MESSAGES);
    for recovered in recovered {
        assert!(recovered < RECOVERY_BOUND, "back after {recovered:?}");
    }
    drop(chatd);
    assert_eq!(integrity_check(&file), "ok");
}

/// EraseUser on SQLite killed with SIGKILL halfway through a user's 30,000 keyed
/// messages (beside 10,000 of their peer's), then repeated on the restarted chatd: once
/// it answers, neither the database file nor its WAL holds any of the erased user's
/// bodies or keys, and the file passes `integrity_check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_erasure_killed_midway_then_repeated_leaves_nothing_on_disk() {
    use diesel::{Connection, RunQueryDsl, connection::SimpleConnection};

    let dir = TempDir::new();
    let file = dir.join("chatd.db");
    let url = format!("sqlite://{}", file.display());
    let mut chatd = Chatd::start(&dir.0, &url, &["--call-timeout", "30s"], None).await;
    let caller = Caller::new(chatd.grpc);
    let pair = workload::pairs(&caller, 1).await[0];
    let (thread, student, tutor) = (pair.thread_id, pair.student, pair.tutor);
    // Keys in no particular order (as clients make them), interleaved with the peer's.
    let mut side = diesel::SqliteConnection::establish(&file.display().to_string()).unwrap();
    side.batch_execute(&format!(
        "PRAGMA busy_timeout = 10000; \
         WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 40000) \
         INSERT INTO messages (thread_id, seq, sender_id, body, client_message_id, created_at) \
         SELECT {thread}, x, CASE WHEN x % 4 = 0 THEN {tutor} ELSE {student} END, \
                'body ' || hex(randomblob(12)), hex(randomblob(12)), '2026-12-01T00:00:00Z' FROM s; \
         UPDATE threads SET last_seq = 40000, last_visible_seq = 40000 WHERE thread_id = {thread}; \
         UPDATE thread_participants SET unread_count = CASE side WHEN 'tutor' THEN 30000 ELSE 10000 END \
         WHERE thread_id = {thread};"
    ))
    .expect("bulk messages");
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        body: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        key: String,
    }
    let erased: Vec<Row> = diesel::sql_query(format!(
        "SELECT body, client_message_id AS key FROM messages WHERE sender_id = {student}"
    ))
    .load(&mut side)
    .unwrap();
    assert_eq!(erased.len(), 30_000);

    let mut sync = caller.sync();
    let erasing = tokio::spawn(async move {
        sync.erase_user(pb::EraseUserRequest { user_id: student })
            .await
    });
    // Kill it once some batches have committed, and before all have.
    loop {
        let wiped: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "(SELECT count(*) FROM messages WHERE sender_id = {student} AND client_message_id IS NULL)"
        )))
        .get_result(&mut side)
        .unwrap();
        assert!(
            wiped < 30_000,
            "the erasure ended before it could be killed"
        );
        if wiped > 0 {
            break;
        }
        assert!(
            !erasing.is_finished(),
            "the erasure answered before any batch was seen: {:?}",
            erasing.await
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    chatd.kill().await;
    assert!(erasing.await.unwrap().is_err(), "killed before it answered");
    drop(side);
    chatd.restart().await;
    let erased_now = caller
        .sync()
        .erase_user(pb::EraseUserRequest { user_id: student })
        .await
        .expect("the repeat finishes the job")
        .into_inner()
        .messages_erased;
    assert!(erased_now > 0 && erased_now < 30_000, "{erased_now}");
    drop(chatd);

    let mut on_disk = std::fs::read(&file).unwrap();
    on_disk.extend(std::fs::read(format!("{}-wal", file.display())).unwrap_or_default());
    // One pass over the file per length (keys and bodies have one length each).
    let needles: std::collections::HashSet<&[u8]> = erased
        .iter()
        .flat_map(|row| [row.body.as_bytes(), row.key.as_bytes()])
        .collect();
    let lengths: std::collections::BTreeSet<usize> = needles.iter().map(|n| n.len()).collect();
    let left: Vec<String> = lengths
        .iter()
        .flat_map(|length| on_disk.windows(*length))
        .filter(|window| needles.contains(window))
        .map(|window| String::from_utf8_lossy(window).into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "{} of the erased user's bodies and keys are on disk, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
    assert_eq!(integrity_check(&file), "ok");
}

fn integrity_check(file: &std::path::Path) -> String {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::SqliteConnection::establish(&file.display().to_string())
        .expect("the database file opens");
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "(SELECT group_concat(integrity_check) FROM pragma_integrity_check())",
    ))
    .get_result(&mut conn)
    .expect("integrity_check runs")
}

/// Thousands of connections that send nothing (no token needed) on both ports of a
/// chatd that may open only 1,024 files, as in the report that found it spinning:
/// Health/Check keeps answering, on a connection opened before and on new ones; the
/// accept loop waits instead of spinning; and once the handshake timeout has closed
/// every idle connection, chatd's descriptors are back where they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_the_server() {
    use tokio::io::AsyncReadExt;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    // The attackers' sockets are this process's descriptors.
    chatd::net::raise_open_files_limit().expect("a higher open-file limit");
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.join("chatd.db").display());
    let chatd = Chatd::start(&dir.0, &url, &["--handshake-timeout", "2s"], Some(1024)).await;
    let check = |channel: tonic::transport::Channel| async move {
        let started = Instant::now();
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await;
        assert!(answer.is_ok(), "Health/Check answers: {answer:?}");
        started.elapsed()
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", chatd.grpc))
        .unwrap()
        .timeout(Duration::from_secs(20));
    let held = endpoint
        .connect()
        .await
        .expect("a connection before the attack");
    check(held.clone()).await;
    let baseline = chatd.open_descriptors();
    let cpu_before = cpu_ticks(chatd.pid());
    let attack_started = Instant::now();

    // 1,400 on gRPC, 600 on REST; each waits until chatd closes it.
    let attackers: Vec<_> = (0..2000)
        .map(|n| {
            let target = if n % 10 < 3 { chatd.http } else { chatd.grpc };
            tokio::spawn(async move {
                let Ok(Ok(mut socket)) = tokio::time::timeout(
                    Duration::from_secs(60),
                    tokio::net::TcpStream::connect(target),
                )
                .await
                else {
                    return;
                };
                let mut byte = [0u8; 1];
                let _ = socket.read(&mut byte).await;
            })
        })
        .collect();
    let mut slowest_held = Duration::ZERO;
    let mut slowest_fresh = Duration::ZERO;
    for _ in 0..5 {
        slowest_held = slowest_held.max(check(held.clone()).await);
        let fresh = endpoint
            .connect()
            .await
            .expect("a new connection is served");
        slowest_fresh = slowest_fresh.max(check(fresh).await);
    }
    let peak = chatd.open_descriptors();
    // Nothing to wait on from outside chatd but its descriptor table: look at it every
    // 100 ms, for at most a minute. (Some attackers never hear back: when the accept
    // queue overflows, the kernel lets a client believe it connected while the server
    // never saw it; chatd cannot close what it was never given.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = chatd.open_descriptors();
    while after > baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = chatd.open_descriptors();
    }
    let attack = attack_started.elapsed();
    let cpu = Duration::from_millis(10 * (cpu_ticks(chatd.pid()) - cpu_before));
    let closed = attackers.iter().filter(|a| a.is_finished()).count();
    for attacker in attackers {
        attacker.abort();
    }
    eprintln!(
        "2,000 idle connections, open-file limit 1,024: Health/Check slowest {slowest_held:?} on a held connection, \
         {slowest_fresh:?} on a new one; descriptors {baseline} before, {peak} at peak, {after} after \
         {attack:?}, {closed} connections closed by chatd; {cpu:?} of CPU used"
    );
    assert!(
        slowest_held < Duration::from_secs(1),
        "held connection: {slowest_held:?}"
    );
    assert!(
        slowest_fresh < Duration::from_secs(10),
        "new connection: {slowest_fresh:?}"
    );
    assert!(
        after <= baseline,
        "descriptors {after} after, {baseline} before"
    );
    assert!(
        cpu < attack / 2,
        "chatd used {cpu:?} of CPU in {attack:?}: no spinning"
    );
}

/// User and system CPU time of a process, in clock ticks (10 ms on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A tmpfs of `size` mounted at `path`, unmounted when dropped: a disk a test may fill.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).expect("a mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a {size} tmpfs needs root (CAP_SYS_ADMIN), as .ci/run has"
        );
        Self(path)
    }

    /// Writes a file until the disk has no room left.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("a filler file");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `chatd_storage_full`'s value on chatd's /metrics.
async fn storage_full_gauge(chatd: &Chatd) -> String {
    let text = reqwest::get(format!("http://{}/metrics", chatd.http))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a text body");
    text.lines()
        .find_map(|line| line.strip_prefix("chatd_storage_full "))
        .unwrap_or_else(|| panic!("no chatd_storage_full in:\n{text}"))
        .to_owned()
}

/// SQLite on a disk that fills up: writes are refused RESOURCE_EXHAUSTED `STORAGE_FULL`
/// (not UNAVAILABLE "retry later"), chatd's log says so once however many writes fail,
/// `chatd_storage_full` is 1 meanwhile and reads still answer; once space is freed the
/// next write succeeds, the gauge is 0 again and the log says writes succeed. Nothing
/// acknowledged is lost, and the file passes SQLite's integrity check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_answers_storage_full() {
    use tonic_types::StatusExt;

    let dir = TempDir::new();
    let disk = SmallDisk::mount(dir.join("small"), "4m");
    let file = disk.0.join("chatd.db");
    let url = format!("sqlite://{}", file.display());
    let chatd = Chatd::start(&dir.0, &url, &[], None).await;
    let caller = Caller::new(chatd.grpc);
    let pair = workload::pairs(&caller, 1).await[0];
    let mut tutor = caller.chat(pair.tutor, chatd::domain::Role::Tutor);
    let send = |n: usize| pb::SendMessageRequest {
        thread_id: pair.thread_id,
        body: format!("{n:04} {}", "x".repeat(3990)),
        client_message_id: format!("full-disk-{n}"),
    };
    assert!(tutor.send_message(send(0)).await.is_ok());
    let filler = disk.fill();

    // The WAL reuses room it has already: sends succeed until it needs more.
    let mut acknowledged = 1;
    let refusal = loop {
        assert!(
            acknowledged < 3000,
            "4 MiB cannot hold 3,000 messages of 4 KB"
        );
        match tutor.send_message(send(acknowledged)).await {
            Ok(_) => acknowledged += 1,
            Err(status) => break status,
        }
    };
    let reason = |status: &tonic::Status| {
        status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default()
    };
    eprintln!("full disk: {acknowledged} messages stored before the first refusal");
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert_eq!(reason(&refusal), "STORAGE_FULL", "{refusal:?}");
    for n in 0..5 {
        let again = tutor
            .send_message(send(acknowledged + 1 + n))
            .await
            .expect_err("no room yet");
        assert_eq!(reason(&again), "STORAGE_FULL", "{again:?}");
    }
    assert_eq!(storage_full_gauge(&chatd).await, "1");
    let listed = tutor
        .list_messages(pb::ListMessagesRequest {
            thread_id: pair.thread_id,
            ..Default::default()
        })
        .await
        .expect("reads still answer")
        .into_inner();
    assert!(!listed.messages.is_empty());

    std::fs::remove_file(filler).expect("space freed");
    tutor
        .send_message(send(acknowledged))
        .await
        .expect("a write succeeds once there is room");
    acknowledged += 1;
    assert_eq!(storage_full_gauge(&chatd).await, "0");
    let log = std::fs::read_to_string(&chatd.log).expect("chatd's log");
    let said = |words: &str| log.lines().filter(|line| line.contains(words)).count();
    assert_eq!(
        said("database storage is full"),
        1,
        "once per episode:\n{log}"
    );
    assert_eq!(said("database storage has room again"), 1, "{log}");

    let summary = caller
        .chat(pair.student, chatd::domain::Role::Student)
        .get_unread_summary(pb::GetUnreadSummaryRequest::default())
        .await
        .expect("the student's summary")
        .into_inner();
    assert_eq!(
        summary.total, acknowledged as i64,
        "every acknowledged message counts"
    );
    drop(chatd);
    assert_eq!(integrity_check(&file), "ok");
}
