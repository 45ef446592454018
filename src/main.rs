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
            let app = Application::build(args.config()?).await?;
            app.run(shutdown_signal()).await
        }
        Command::Gateway(args) => {
            let gateway = Gateway::build(&args.config(), chatd::metrics::Metrics::new()).await?;
            gateway.run(shutdown_signal()).await
        }
        Command::Migrate(args) => {
            let pool = PoolConfig {
                max_size: 1,
                timeout: std::time::Duration::from_secs(10),
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
            let signer = TokenSigner::new(&args.auth.config(), &args.database.parse_url()?)?;
            if args.sub <= 0 {
                return Err(format!(
                    "--sub must be a positive user id, got {}",
                    args.sub
                ));
            }
            println!("{}", signer.sign(args.sub, args.role.into(), args.ttl)?);
            Ok(())
        }
        Command::Bench(args) => {
            let config = args.config()?;
            let database = args.database.parse_url()?;
            let signer = TokenSigner::new(&args.auth.config(), &database)?;
            let store = if config.seed {
                let pool = PoolConfig {
                    max_size: 2,
                    timeout: std::time::Duration::from_secs(30),
                };
                Some(Store::connect(&database, &pool)?)
            } else {
                None
            };
            chatd::bench::run(config, store, signer).await
        }
    }
}
