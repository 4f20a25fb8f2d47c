//! The `entra-sync` binary: parse the command line, set up logging, dispatch, map the outcome
//! to an exit code (SPEC 1). Everything else lives in the library.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use entra_sync::cli::{self, Cli, Command, LogFormat};
use entra_sync::sync::SyncOptions;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},tokio_cron_scheduler=warn,rusqlite_migration=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { cli::EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The demo prints its own story; its log would only repeat it.
    let default_level = if matches!(cli.command, Command::Demo) {
        "error"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return cli::fail(
                cli::EXIT_FAILED,
                format!("cannot start the async runtime: {e}"),
            );
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Demo => entra_sync::demo::run().await,
            Command::Run => {
                entra_sync::daemon::run(entra_sync::config::config_path(cli.config)).await
            }
            Command::Sync {
                tenant,
                full,
                dry_run,
                user,
                allow_mass_deactivation,
                json,
            } => {
                let config = match cli::load_config(&cli.config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let opts = SyncOptions {
                    tenant,
                    full,
                    dry_run,
                    user,
                    allow_mass_deactivation,
                };
                cli::sync_command(&config, opts, json).await
            }
            Command::Check => match cli::load_config(&cli.config) {
                Ok(config) => cli::check_command(&config).await,
                Err(code) => code,
            },
            Command::Status { json } => match cli::load_config(&cli.config) {
                Ok(config) => cli::status_command(&config, json),
                Err(code) => code,
            },
        }
    })
}
