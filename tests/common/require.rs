//! What a test needs from the machine beyond Rust and PostgreSQL: a program (pgbouncer,
//! nats-server, initdb), or a kernel setting. Where it is missing, the test says on one
//! line what it needs and which package gives it, and skips; `CHATD_TEST_REQUIRE=all`
//! (CI sets it, after installing everything) turns a missing need into a failure, so
//! nothing is skipped there without a word.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether every need must be met (CI): then a missing one fails the test.
fn required() -> bool {
    std::env::var("CHATD_TEST_REQUIRE").is_ok_and(|value| value == "all")
}

/// Says that `test` skips for want of `what` (`how` gets it), or fails when every need
/// must be met. Written to the terminal directly, past the harness's capture, so a
/// plain `cargo test` shows it.
pub fn skip(test: &str, what: &str, how: &str) {
    let line = format!("skipped {test}: needs {what} ({how})");
    if required() {
        panic!("{line}; CHATD_TEST_REQUIRE=all asks for every test");
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A program on the PATH, or in one of `also` (Debian puts some outside it); `None`
/// after saying so (see `skip`).
pub fn program(test: &str, name: &str, package: &str, also: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = on_path
        .iter()
        .map(|dir| dir.join(name))
        .chain(also.iter().map(|dir| Path::new(dir).join(name)))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        skip(
            test,
            &format!("the program {name}"),
            &format!("Debian package {package}: apt-get install -y {package}"),
        );
    }
    found
}
