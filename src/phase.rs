//! Debug-level timing of a sync run's phases (Graph read, resolve, plan, apply…): how long
//! each took, the process's resident memory after it and its peak so far, for finding where a
//! slow or large sync spends. `RUST_LOG=entra_sync=debug` shows them. Decides nothing.

use crate::clock::Instant;

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
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            tracing::debug!(
                tenant,
                phase = name,
                ms = self.started.elapsed().as_millis() as u64,
                rss_mb = status_mb(&status, "VmRSS:"),
                peak_mb = status_mb(&status, "VmHWM:"),
                "phase done"
            );
        }
        self.started = Instant::now();
    }
}

/// A memory figure in MB from `/proc/self/status` text: `VmRSS:` (resident now) or `VmHWM:`
/// (peak resident). `None` where there is no such file (not Linux).
fn status_mb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
