//! chatd behind pgbouncer in transaction mode, the pooler most PostgreSQL deployments
//! put in front of many replicas: with `--db-pooler transaction` every RPC works under
//! a mixed load; without it, the failures are UNAVAILABLE with a hint, never INTERNAL.
//! Each test starts a pgbouncer of its own (Debian's `pgbouncer`; it refuses to run as
//! root, so as root it runs as `postgres`, through util-linux's `setpriv`).

use std::time::Duration;

use chatd::grpc::pb;
use chatd::storage::{DatabaseUrl, Pooler};
use tonic::{Code, Status};

use crate::harness::TempDir;
use crate::helpers::{Backend, ChatClient, TestApp, mark_read, send, summary};

/// A pgbouncer in transaction mode on a free port, in front of the test server's
/// PostgreSQL, with fewer server connections than chatd's pool, so the transactions of
/// one chatd connection land on different server connections.
struct Pgbouncer {
    port: u16,
    _process: tokio::process::Child,
    _dir: TempDir,
}

impl Pgbouncer {
    /// `None` when this machine has no pgbouncer (the test then skips, saying so).
    async fn start(test: &str, direct: &str) -> Option<Self> {
        let program = crate::require::program(test, "pgbouncer", "pgbouncer", &[])?;
        let program = program.to_str().expect("a UTF-8 path");
        let (user, upstream) = direct
            .strip_prefix("postgres://")
            .and_then(|rest| rest.split_once('@'))
            .map(|(user, rest)| (user, rest.split_once('/').map_or(rest, |(host, _)| host)))
            .expect("a postgres://user@host:port/db URL");
        let (host, port) = upstream.split_once(':').unwrap_or((upstream, "5432"));
        let dir = TempDir::new();
        let listen = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            socket.local_addr().expect("its address").port()
        };
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
                 default_pool_size = 3\nmax_client_conn = 200\n\
                 ignore_startup_parameters = extra_float_digits\n",
                dir.join("userlist.txt").display()
            ),
        )
        .unwrap();
        let ini = dir.join("pgbouncer.ini").display().to_string();
        let mut command = if is_root() {
            // It reads its files as postgres.
            use std::os::unix::fs::PermissionsExt;
            for path in [
                dir.0.clone(),
                dir.join("userlist.txt"),
                dir.join("pgbouncer.ini"),
            ] {
                let mode = if path.is_dir() { 0o755 } else { 0o644 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            // setpriv execs pgbouncer in its own place (runuser would fork and wait), so
            // killing the child on drop kills pgbouncer, not a parent that leaves it.
            let mut command = tokio::process::Command::new("setpriv");
            command.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
                program,
                &ini,
            ]);
            command
        } else {
            let mut command = tokio::process::Command::new(program);
            command.arg(&ini);
            command
        };
        let process = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pgbouncer starts");
        let listening = tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .is_err()
            {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(listening.is_ok(), "pgbouncer listens within 10 s");
        Some(Self {
            port: listen,
            _process: process,
            _dir: dir,
        })
    }

    /// `direct` with its host and port replaced by this pgbouncer's.
    fn url(&self, direct: &str) -> String {
        let (start, rest) = direct.split_once('@').expect("a URL with a user");
        let database = rest.split_once('/').map_or("", |(_, database)| database);
        format!("{start}@127.0.0.1:{}/{database}", self.port)
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// A replica of `app` whose pool goes through `pgbouncer`, migrating and listening
/// over the direct URL.
async fn through(app: &TestApp, pgbouncer: &Pgbouncer, pooler: Pooler) -> TestApp {
    let DatabaseUrl::Postgres(direct) = app.database().url() else {
        unreachable!("a PostgreSQL test app")
    };
    let pooled = pgbouncer.url(&direct);
    app.replica_with(|config| {
        config.database = DatabaseUrl::Postgres(pooled);
        config.pool.pooler = pooler;
        config.fanout_url = Some(direct);
    })
    .await
}

/// One participant's mix of every ChatService call on one thread, `rounds` times:
/// the failures, by call.
async fn mixed_calls(
    mut student: ChatClient,
    mut tutor: ChatClient,
    relation: i64,
    rounds: usize,
) -> Vec<(&'static str, Status)> {
    let mut failures = Vec::new();
    let mut note = |call: &'static str, result: Result<(), Status>| {
        if let Err(status) = result {
            failures.push((call, status));
        }
    };
    let ensure = pb::EnsureThreadRequest {
        target: Some(pb::ensure_thread_request::Target::RelationId(relation)),
    };
    let thread_id = match student.ensure_thread(ensure).await {
        Ok(answer) => answer
            .into_inner()
            .thread
            .map_or(0, |thread| thread.thread_id),
        Err(status) => return vec![("EnsureThread", status)],
    };
    for round in 0..rounds {
        note("EnsureThread", tutor.ensure_thread(ensure).await.map(drop));
        let sent = student
            .send_message(send(thread_id, "through the pooler"))
            .await;
        let seq = sent
            .as_ref()
            .ok()
            .and_then(|answer| answer.get_ref().message.as_ref())
            .map(|message| message.seq);
        note("SendMessage", sent.map(drop));
        note(
            "GetUnreadSummary",
            tutor.get_unread_summary(summary(0)).await.map(drop),
        );
        note(
            "ListThreads",
            tutor
                .list_threads(pb::ListThreadsRequest::default())
                .await
                .map(drop),
        );
        note(
            "ListMessages",
            tutor
                .list_messages(pb::ListMessagesRequest {
                    thread_id,
                    ..Default::default()
                })
                .await
                .map(drop),
        );
        note(
            "MarkRead",
            tutor.mark_read(mark_read(thread_id, None)).await.map(drop),
        );
        if let Some(seq) = seq {
            note(
                "EditMessage",
                student
                    .edit_message(pb::EditMessageRequest {
                        thread_id,
                        seq,
                        body: "edited".into(),
                    })
                    .await
                    .map(drop),
            );
            if round % 3 == 0 {
                note(
                    "DeleteMessage",
                    student
                        .delete_message(pb::DeleteMessageRequest { thread_id, seq })
                        .await
                        .map(drop),
                );
            }
            note(
                "MarkUnread",
                tutor
                    .mark_unread(pb::MarkUnreadRequest {
                        thread_id,
                        from_seq: seq,
                    })
                    .await
                    .map(drop),
            );
        }
        note(
            "MuteThread",
            tutor
                .mute_thread(pb::MuteThreadRequest {
                    thread_id,
                    ..Default::default()
                })
                .await
                .map(drop),
        );
        note(
            "UnmuteThread",
            tutor
                .unmute_thread(pb::UnmuteThreadRequest { thread_id })
                .await
                .map(drop),
        );
        note(
            "CreateStreamTicket",
            tutor
                .create_stream_ticket(pb::CreateStreamTicketRequest::default())
                .await
                .map(drop),
        );
    }
    failures
}

/// Runs `mixed_calls` for `PAIRS` tutor–student pairs at once on `app`, their facts
/// pushed through `facts`.
async fn mixed_load(
    facts: &TestApp,
    app: &TestApp,
    first_relation: i64,
) -> Vec<(&'static str, Status)> {
    const PAIRS: i64 = 12;
    let mut load = tokio::task::JoinSet::new();
    for pair in 0..PAIRS {
        let relation = first_relation + pair;
        let (tutor, student) = (1000 + relation, 2000 + relation);
        facts
            .relation(relation, tutor, student, pb::RelationStatus::Active, 1)
            .await;
        facts
            .contact_access(tutor, student, pb::ContactAccessState::Unlocked, 1)
            .await;
        load.spawn(mixed_calls(
            app.student(student),
            app.tutor(tutor),
            relation,
            12,
        ));
    }
    load.join_all().await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_through_pgbouncer_in_transaction_mode() {
    let direct = TestApp::spawn(Backend::Postgres).await;
    let url = match direct.database().url() {
        DatabaseUrl::Postgres(url) => url,
        DatabaseUrl::Sqlite(_) => unreachable!("a PostgreSQL test app"),
    };
    let Some(pgbouncer) = Pgbouncer::start(
        "pooler::every_call_works_through_pgbouncer_in_transaction_mode",
        &url,
    )
    .await
    else {
        return;
    };
    let pooled = through(&direct, &pgbouncer, Pooler::Transaction).await;

    let failures = mixed_load(&pooled, &pooled, 100).await;
    assert!(failures.is_empty(), "through the pooler: {failures:?}");

    // The fan-out still runs on the direct URL: a send through the pooler wakes a
    // watcher on the other replica.
    let (tutor, student) = (1100, 2100);
    let mut on_direct = TestApp::watch(&mut direct.tutor(tutor)).await;
    let before = on_direct.message().await.unwrap().unwrap().total;
    let thread = pooled.contact_thread(100, tutor, student).await;
    pooled
        .student(student)
        .send_message(send(thread.thread_id, "heard everywhere"))
        .await
        .expect("a send through the pooler");
    let after = tokio::time::timeout(Duration::from_secs(10), on_direct.message())
        .await
        .expect("an update within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(after.total, before + 1);
}

/// Without `--db-pooler transaction` behind the same pooler, calls fail (prepared
/// statements land on one server connection and are bound on another), and each
/// failure is UNAVAILABLE saying what to set: never INTERNAL, which would mean a bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooler_without_its_flag_is_unavailable_never_internal() {
    let direct = TestApp::spawn(Backend::Postgres).await;
    let url = match direct.database().url() {
        DatabaseUrl::Postgres(url) => url,
        DatabaseUrl::Sqlite(_) => unreachable!("a PostgreSQL test app"),
    };
    let Some(pgbouncer) = Pgbouncer::start(
        "pooler::a_pooler_without_its_flag_is_unavailable_never_internal",
        &url,
    )
    .await
    else {
        return;
    };
    let unaware = through(&direct, &pgbouncer, Pooler::None).await;
    let failures = mixed_load(&direct, &unaware, 300).await;
    assert!(
        !failures.is_empty(),
        "prepared statements cannot survive a transaction-mode pooler"
    );
    for (call, status) in &failures {
        assert_eq!(status.code(), Code::Unavailable, "{call}: {status:?}");
    }
}
