//! The `chatd token` command as an operator meets it: it signs with the server's secret
//! or refuses, saying why; it never makes up a secret of its own, whose tokens every
//! server would refuse with a TOKEN_INVALID that does not say why.

use std::process::Output;

use crate::harness::TempDir;
use crate::helpers::{Backend, SECRET, TestApp, summary};

/// `chatd token --sub <sub> --role tutor` in `dir`, with only the given settings: none
/// of the caller's CHATD_* or DATABASE_URL leak in.
async fn token(dir: &TempDir, sub: &str, settings: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
    command
        .args(["token", "--sub", sub, "--role", "tutor"])
        .current_dir(&dir.0)
        .env_clear()
        .env("NO_COLOR", "1")
        .envs(settings.iter().copied());
    command.output().await.expect("chatd runs")
}

fn files_in(dir: &TempDir) -> Vec<String> {
    std::fs::read_dir(&dir.0)
        .expect("the directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[tokio::test]
async fn token_without_a_secret_refuses_and_creates_nothing() {
    let dir = TempDir::new();
    let answer = token(&dir, "42", &[]).await;
    let stderr = String::from_utf8_lossy(&answer.stderr);
    assert!(!answer.status.success(), "refused: {stderr}");
    assert!(answer.stdout.is_empty(), "no token printed");
    assert!(
        stderr.contains("no JWT secret here") && stderr.contains("chatd.db.jwt-secret"),
        "says which secret it looked for: {stderr}"
    );
    assert!(stderr.contains("--jwt-secret"), "says what to do: {stderr}");
    assert_eq!(files_in(&dir), Vec::<String>::new(), "no key file made up");
}

/// With PostgreSQL, `serve` without a key refuses to start and says what to set: a
/// secret of its own per replica would make a token work on one replica only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgresql_without_a_key_refuses_to_start() {
    let database = crate::harness::TestDatabase::postgres().await;
    let chatd::storage::DatabaseUrl::Postgres(url) = database.url() else {
        unreachable!("a PostgreSQL database")
    };
    let dir = TempDir::new();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "off"])
        .current_dir(&dir.0)
        .env_clear()
        .env("NO_COLOR", "1")
        .env("DATABASE_URL", &url)
        .kill_on_drop(true);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), command.output())
        .await
        .expect("serve gives up at once instead of serving")
        .expect("chatd runs");
    let stderr = String::from_utf8_lossy(&answer.stderr);
    assert!(!answer.status.success(), "refused: {stderr}");
    for setting in ["--jwt-secret", "CHATD_JWT_SECRET", "--jwt-public-key"] {
        assert!(stderr.contains(setting), "names {setting}: {stderr}");
    }
    assert_eq!(files_in(&dir), Vec::<String>::new(), "no key file made up");
}

/// Beside the server's secret file (where `serve` keeps it for an SQLite database), the
/// token it prints is one the server honours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signs_with_the_servers_secret_file() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = TempDir::new();
    std::fs::write(dir.join("chatd.db.jwt-secret"), SECRET).expect("a secret file");
    let answer = token(&dir, "42", &[]).await;
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let printed = String::from_utf8(answer.stdout).expect("UTF-8");
    let mut chat = app.chat_with_header(Some(format!("Bearer {}", printed.trim())));
    chat.get_unread_summary(summary(0))
        .await
        .expect("the server honours the printed token");
}

#[tokio::test]
async fn token_refuses_an_id_a_browser_would_round() {
    let dir = TempDir::new();
    let answer = token(&dir, "9007199254740992", &[("CHATD_JWT_SECRET", SECRET)]).await;
    let stderr = String::from_utf8_lossy(&answer.stderr);
    assert!(!answer.status.success(), "refused");
    assert!(
        stderr.contains("--sub must be a user id from 1 to 9007199254740991"),
        "{stderr}"
    );
}

/// docs/configuration.md shows each command's `--help` exactly as this build prints it:
/// a flag added, renamed or redescribed without the doc fails here.
/// `CHATD_WRITE_DOCS=1` writes the blocks anew instead.
#[tokio::test]
async fn the_configuration_doc_is_the_cli_help() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let mut doc = std::fs::read_to_string(path).expect("docs/configuration.md");
    let mut stale = Vec::new();
    for command in ["serve", "gateway", "migrate", "token", "bench"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args([command, "--help"])
            .env_clear()
            .output()
            .await
            .expect("chatd runs");
        let help = String::from_utf8(output.stdout).expect("UTF-8 help");
        let (start, end) = (
            format!("<!-- help:{command}:start -->\n"),
            format!("<!-- help:{command}:end -->"),
        );
        let from = doc.find(&start).expect("a start marker") + start.len();
        let to = doc[from..].find(&end).expect("an end marker") + from;
        let block = format!("```text\n{}\n```\n", help.trim_end());
        if doc[from..to] != block {
            stale.push(command);
            doc.replace_range(from..to, &block);
        }
    }
    if std::env::var_os("CHATD_WRITE_DOCS").is_some() {
        std::fs::write(path, doc).expect("docs/configuration.md written");
        return;
    }
    assert!(
        stale.is_empty(),
        "docs/configuration.md differs from --help of {stale:?}: rerun with CHATD_WRITE_DOCS=1"
    );
}
