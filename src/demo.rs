//! `entra-sync demo`: the embedded default (placeholder until graph-sim lands).

use std::process::ExitCode;

pub async fn run() -> ExitCode {
    crate::cli::fail(crate::cli::EXIT_FAILED, "demo is not built yet")
}
