//! Debug-level timing of a sync run's phases (Graph read, resolve, plan, apply…): how long
//! each took, the process's resident memory after it and its peak so far, for finding where a
//! slow or large sync spends. `RUST_LOG=entra_sync=debug` shows them. Decides nothing.

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
                rss_mb = status_mb("VmRSS:"),
                peak_mb = status_mb("VmHWM:"),
                "phase done"
            );
        }
        self.started = Instant::now();
    }
}

/// A memory figure of the process in MB: `VmRSS:` (resident now) or `VmHWM:` (peak resident)
/// (Linux; `None` elsewhere).
fn status_mb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
