//! Each tenant's health as the daemon sees it: the last run's outcome, failures in a row, the
//! reconnect pause, and the verdict `/healthz` and systemd's STATUS= give.
//!
//! Plain state with the time passed in; it must not run syncs or serve anything.

use std::collections::BTreeMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use entra_sync_core::run::{RunMode, RunStatus};
use serde::Serialize;

use crate::clock::Instant;
use crate::sync::SyncSummary;

/// Failed runs in a row after which a tenant waits `reconnect_after_seconds`.
pub const FAILURES_BEFORE_RECONNECT: u32 = 3;

/// The last known state of one tenant, for `/healthz`, `/status` and STATUS=.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantHealth {
    pub last_status: Option<RunStatus>,
    pub last_finished: Option<String>,
    pub last_success: Option<String>,
    #[serde(skip)]
    pub last_success_at: Option<Instant>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub held: i64,
    #[serde(skip)]
    pub paused_until: Option<Instant>,
}

/// Every configured tenant's [`TenantHealth`], shared by the worker and the admin endpoint.
#[derive(Debug, Default)]
pub struct Health {
    tenants: RwLock<BTreeMap<String, TenantHealth>>,
}

/// What [`Health::record`] asks of the caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Tenants that just reached [`FAILURES_BEFORE_RECONNECT`]: drop their connection.
    pub reconnect: Vec<String>,
}

impl Health {
    /// Tracks exactly these tenants from now on (known ones keep their state).
    pub fn track<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        let names: Vec<&str> = tenants.into_iter().collect();
        let mut map = self.write();
        map.retain(|name, _| names.contains(&name.as_str()));
        for name in names {
            map.entry(name.to_string()).or_default();
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, TenantHealth> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, TenantHealth>> {
        self.tenants.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the tenant is waiting out its reconnect pause at `now`; at its end the pause is
    /// lifted and [`Pause::Over`] tells the caller to reconnect.
    pub fn pause_state(&self, tenant: &str, now: Instant) -> Pause {
        let mut map = self.write();
        let Some(h) = map.get_mut(tenant) else {
            return Pause::None;
        };
        match h.paused_until {
            Some(until) if now < until => Pause::Waiting,
            Some(_) => {
                h.paused_until = None;
                Pause::Over
            }
            None => Pause::None,
        }
    }

    /// Records a summary's outcomes (one-user runs say nothing about a tenant's health).
    /// `wall` stamps them; `now` and `reconnect_after` set a pause after repeated failures.
    pub fn record(
        &self,
        summary: &SyncSummary,
        wall: &str,
        now: Instant,
        reconnect_after: Duration,
    ) -> Recorded {
        let mut map = self.write();
        let mut out = Recorded::default();
        for t in summary.tenants.iter().filter(|t| t.mode != RunMode::User) {
            let h = map.entry(t.tenant.clone()).or_default();
            h.last_status = Some(t.status);
            h.last_finished = Some(wall.to_string());
            // A failed run knows nothing new of what is held: the holds stay as they were.
            if t.status != RunStatus::Failed {
                h.held = t.counts.held;
            }
            if t.status == RunStatus::Failed {
                h.consecutive_failures += 1;
                h.last_error = t.error.clone();
                if h.consecutive_failures == FAILURES_BEFORE_RECONNECT {
                    h.paused_until = Some(now + reconnect_after);
                    out.reconnect.push(t.tenant.clone());
                    tracing::warn!(
                        tenant = %t.tenant,
                        failures = h.consecutive_failures,
                        "failing repeatedly; waiting {} s before reconnecting",
                        reconnect_after.as_secs()
                    );
                }
            } else {
                if h.consecutive_failures >= FAILURES_BEFORE_RECONNECT {
                    tracing::info!(tenant = %t.tenant, "recovered after {} failed runs", h.consecutive_failures);
                }
                h.consecutive_failures = 0;
                h.last_error = None;
                h.last_success = Some(wall.to_string());
                h.last_success_at = Some(now);
            }
        }
        out
    }

    /// `/healthz`: healthy when every tenant's last run succeeded, or failed while its last
    /// success is recent (within `grace`); a hold is unhealthy until someone acts on it.
    /// The problems, one line each, when not.
    pub fn verdict(&self, now: Instant, grace: Duration) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (name, h) in self.snapshot() {
            // Held deactivations are state: unhealthy until someone acts, whatever ran since.
            if h.held > 0 {
                problems.push(format!(
                    "tenant {name}: {} deactivations held by the safety limits; review and run `entra-sync sync --allow-mass-deactivation`",
                    h.held
                ));
            }
            match h.last_status {
                None | Some(RunStatus::Success | RunStatus::DryRun | RunStatus::Held) => {}
                Some(RunStatus::Failed) => {
                    let recent = h
                        .last_success_at
                        .is_some_and(|t| now.saturating_duration_since(t) < grace);
                    if !recent {
                        problems.push(format!(
                            "tenant {name}: {} failed runs in a row: {}",
                            h.consecutive_failures,
                            h.last_error.as_deref().unwrap_or("unknown error")
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// `t0: success, t1: pending`: systemd's STATUS= line.
    pub fn status_line(&self) -> String {
        self.snapshot()
            .iter()
            .map(|(name, h)| {
                format!(
                    "{name}: {}",
                    h.last_status.map_or("pending", RunStatus::as_str)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A tenant's reconnect pause at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    None,
    /// Still waiting: skip the tenant.
    Waiting,
    /// The pause just ended: reconnect, then run.
    Over,
}
