//! Debug-level timing of a sync run's phases (Graph read, resolve, plan, apply…): how long
//! each took and the process's resident memory after it, for finding where a slow or large
//! sync spends. `RUST_LOG=entra_sync=debug` shows them. Decides nothing.

use std::time::Instant;

pub struct Phase {
    started: Instant,
}

impl Phase {
    pub fn start() -> Phase {
        Phase {
            started: Instant::now(),
        }
    }

    /// Logs that phase `name` of `tenant`'s run is done and starts timing the next one.
    pub fn done(&mut self, tenant: &str, name: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                tenant,
                phase = name,
                ms = self.started.elapsed().as_millis() as u64,
                rss_mb = rss_mb(),
                "phase done"
            );
        }
        self.started = Instant::now();
    }
}

/// The process's resident set size in MB (Linux; `None` elsewhere).
fn rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
