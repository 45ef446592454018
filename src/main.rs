//! The `chatd` binary: parses the command line and runs the chosen subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use chatd::app::{Application, shutdown_signal};
use chatd::auth::TokenSigner;
use chatd::cli::{Cli, Command};
use chatd::http::Gateway;
use chatd::storage::{PoolConfig, Store};
use chatd::telemetry::Telemetry;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that `chatd token` prints only the token on stdout.
    let telemetry = match Telemetry::init(cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("chatd: {message}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run(cli.command).await;
    // Spans still buffered are exported before the process exits.
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatd: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => {
            let config = args.config()?;
            open_files_for(config.connections.max_connections);
            let app = Application::build(config).await?;
            app.run(shutdown_signal()).await
        }
        Command::Gateway(args) => {
            let config = args.config()?;
            open_files_for(config.connections.max_connections);
            let gateway = Gateway::build(&config, chatd::metrics::Metrics::new()).await?;
            gateway.run(shutdown_signal()).await
        }
        Command::Migrate(args) => {
            let pool = PoolConfig {
                max_size: 1,
                timeout: std::time::Duration::from_secs(10),
                statement_timeout: None,
                pooler: Default::default(),
                sqlite_sync: Default::default(),
            };
            let store = Store::connect(&args.parse_url()?, &pool)?;
            let applied = store.migrate().await?;
            eprintln!(
                "applied {} migration(s) to the {} database",
                applied.len(),
                store.backend()
            );
            Ok(())
        }
        Command::Token(args) => {
            if !(1..=chatd::model::MAX_ID).contains(&args.sub) {
                return Err(format!(
                    "--sub must be a user id from 1 to {} (2^53 - 1), got {}",
                    chatd::model::MAX_ID,
                    args.sub
                ));
            }
            let signer = TokenSigner::new(&args.auth.config(), &args.database.parse_url()?)?;
            println!("{}", signer.sign(args.sub, args.role.into(), args.ttl)?);
            Ok(())
        }
        Command::Bench(args) => {
            let config = args.config()?;
            let database = args.database.parse_url()?;
            let pool = PoolConfig {
                max_size: 2,
                timeout: std::time::Duration::from_secs(30),
                statement_timeout: None,
                pooler: Default::default(),
                sqlite_sync: Default::default(),
            };
            if let Some(listen) = args.serve_cached_summaries {
                let verifier = chatd::auth::TokenVerifier::new(&args.auth.config(), &database)?;
                let store = Store::connect(&database, &pool)?;
                let tutors = i64::try_from(config.online_users).unwrap_or(i64::MAX);
                return chatd::bench::serve_cached_summaries(listen, verifier, store, tutors).await;
            }
            let signer = TokenSigner::new(&args.auth.config(), &database)?;
            let store = if config.seed || config.erase.is_some() {
                Some(Store::connect(&database, &pool)?)
            } else {
                None
            };
            chatd::bench::run(config, store, signer).await
        }
    }
}

/// Raises the soft limit of open files to the hard one and says what it is, warning
/// when it leaves too few descriptors for `max_connections` (then connections over the
/// limit wait in the kernel's backlog while accepting backs off, and the server still
/// answers those it holds).
fn open_files_for(max_connections: usize) {
    match chatd::net::raise_open_files_limit() {
        Ok(limit) => {
            // Database connections, listeners, the log and the SQLite files need some.
            let spare = 256;
            if limit < (max_connections as u64).saturating_add(spare) {
                tracing::warn!(
                    open_files = limit,
                    max_connections,
                    "the open-file limit is below --max-connections plus {spare}: raise the hard limit (ulimit -Hn) or lower --max-connections"
                );
            } else {
                tracing::info!(open_files = limit, "open-file limit");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}
