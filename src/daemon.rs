//! `entra-sync run`: the long-running service. A cron scheduler (tokio-cron-scheduler, its
//! ticks coalesced) and `POST /resync` feed one worker, which runs them one at a time through
//! [`crate::sync::run_with`], tenant by tenant in config order; SIGHUP reloads the config,
//! SIGTERM/SIGINT stop it; systemd hears READY, STATUS, RELOADING, STOPPING and WATCHDOG.
//!
//! Owns scheduling, per-tenant health and reconnect back-off. It must not sync any other way
//! than the one-off `sync` does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::cli::{EXIT_FAILED, EXIT_USAGE, fail};
use crate::config::Config;
use crate::secret::{Secret, SecretSource};
use crate::sync::{self, Clients, SyncOptions, SyncSummary};
use entra_sync_core::run::{RunMode, RunStatus};

/// Failed runs in a row after which a tenant waits `reconnect_after_seconds`.
const FAILURES_BEFORE_RECONNECT: u32 = 3;

/// Scheduled ticks waiting for the worker, coalesced: however many ticks arrive while a run is
/// going, one run follows it, a full one if any of them asked for a full sync.
#[derive(Default)]
struct Ticks {
    /// `Some(full)` while a run is due.
    pending: Mutex<Option<bool>>,
    due: Notify,
}

impl Ticks {
    fn push(&self, full: bool) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            *pending = Some(full || pending.unwrap_or(false));
        }
        self.due.notify_one();
    }

    fn take(&self) -> Option<bool> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// What the worker is asked to do.
pub enum Trigger {
    Scheduled {
        full: bool,
    },
    Resync {
        opts: SyncOptions,
        reply: oneshot::Sender<Result<SyncSummary, String>>,
    },
}

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

/// State shared by the worker and the admin endpoint.
pub struct Shared {
    pub config: RwLock<Arc<Config>>,
    pub config_path: PathBuf,
    pub health: RwLock<BTreeMap<String, TenantHealth>>,
    pub triggers: mpsc::Sender<Trigger>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub admin_token: RwLock<Option<Secret>>,
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The bearer token `POST /resync` requires, read like a client secret (a relative name is
/// looked up in systemd's credentials directory).
fn read_admin_token(config: &Config) -> Result<Option<Secret>, String> {
    if config.admin.token_file.is_empty() {
        return Ok(None);
    }
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    SecretSource::File(PathBuf::from(&config.admin.token_file))
        .read("admin token", credentials_dir.as_deref(), &|name| {
            std::env::var(name).ok()
        })
        .map(Some)
        .map_err(|e| format!("config key `admin.token_file`: {e}"))
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("systemd notify failed: {e}");
    }
}

async fn schedule(
    config: &Config,
    ticks: &Arc<Ticks>,
) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    for (expr, full) in [
        (&config.schedule.sync, false),
        (&config.schedule.full_sync, true),
    ] {
        let ticks = Arc::clone(ticks);
        scheduler
            .add(Job::new_async(expr.as_str(), move |_, _| {
                // A run already due covers this tick: never pile runs up.
                ticks.push(full);
                Box::pin(async {})
            })?)
            .await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

pub async fn run(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let admin_token = match read_admin_token(&config) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => h,
        Err(e) => return fail(EXIT_FAILED, format!("cannot set up metrics: {e}")),
    };
    let listener = match tokio::net::TcpListener::bind(&config.admin.listen).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                EXIT_USAGE,
                format!(
                    "config key `admin.listen`: cannot listen on {}: {e}; pick a free address",
                    config.admin.listen
                ),
            );
        }
    };
    // `POST /resync` requests; each caller waits for its own run's answer.
    let (tx, mut rx) = mpsc::channel::<Trigger>(4);
    let shared = Arc::new(Shared {
        health: RwLock::new(
            config
                .tenants
                .iter()
                .map(|t| (t.name.clone(), TenantHealth::default()))
                .collect(),
        ),
        config: RwLock::new(Arc::new(config)),
        config_path,
        triggers: tx.clone(),
        metrics,
        admin_token: RwLock::new(admin_token),
    });
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin = tokio::spawn(crate::admin::serve(
        listener,
        Arc::clone(&shared),
        async move {
            let _ = admin_stopped.await;
        },
    ));
    let ticks = Arc::new(Ticks::default());
    let mut scheduler = match schedule(&shared.config(), &ticks).await {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILED, format!("cannot start the scheduler: {e}")),
    };
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return fail(EXIT_FAILED, "cannot install signal handlers");
    };
    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        })
    });
    let clients = Clients::default();
    // Sync once right away rather than waiting for the first tick.
    ticks.push(false);
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("scheduled; first sync starting"),
    ]);
    tracing::info!(admin = %shared.config().admin.listen, "entra-sync running");

    loop {
        let trigger = tokio::select! {
            Some(trigger) = rx.recv() => trigger,
            () = ticks.due.notified() => match ticks.take() {
                Some(full) => Trigger::Scheduled { full },
                None => continue,
            },
            _ = hup.recv() => {
                notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
                match reload(&shared, &clients).await {
                    Ok(()) => {
                        let _ = scheduler.shutdown().await;
                        match schedule(&shared.config(), &ticks).await {
                            Ok(s) => scheduler = s,
                            Err(e) => tracing::error!("cannot reschedule after reload: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("config reload rejected, the previous config keeps running: {e}"),
                }
                notify(&[NotifyState::Ready]);
                continue;
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
        };
        let work = handle(&shared, &clients, trigger);
        tokio::select! {
            () = work => {}
            _ = term.recv() => { tracing::info!("SIGTERM during a run: the run is abandoned, its transaction was not started or rolls back"); break; }
            _ = int.recv() => { tracing::info!("SIGINT during a run: the run is abandoned"); break; }
        }
    }
    notify(&[NotifyState::Stopping]);
    let _ = scheduler.shutdown().await;
    let _ = stop_admin.send(());
    let _ = tokio::time::timeout(Duration::from_secs(3), admin).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn reload(shared: &Shared, clients: &Clients) -> Result<(), String> {
    let config = Config::load(&shared.config_path).map_err(|e| e.to_string())?;
    let token = read_admin_token(&config)?;
    let old = shared.config();
    if config.admin.listen != old.admin.listen {
        tracing::warn!("admin.listen changed; it takes effect at the next restart");
    }
    {
        let mut health = shared.health.write().unwrap_or_else(|p| p.into_inner());
        health.retain(|name, _| config.tenant(name).is_some());
        for t in &config.tenants {
            health.entry(t.name.clone()).or_default();
        }
    }
    *shared
        .admin_token
        .write()
        .unwrap_or_else(|p| p.into_inner()) = token;
    *shared.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    clients.clear();
    tracing::info!("config reloaded");
    Ok(())
}

async fn handle(shared: &Shared, clients: &Clients, trigger: Trigger) {
    let config = shared.config();
    match trigger {
        Trigger::Scheduled { full } => {
            for tenant in &config.tenants {
                if paused(shared, clients, &tenant.name) {
                    continue;
                }
                let opts = SyncOptions {
                    tenant: Some(tenant.name.clone()),
                    full,
                    ..SyncOptions::default()
                };
                match sync::run_with(&config, &opts, clients).await {
                    Ok(summary) => record(shared, clients, &config, &summary),
                    Err(e) => tracing::error!(tenant = %tenant.name, "{e}"),
                }
            }
        }
        Trigger::Resync { opts, reply } => {
            let result = sync::run_with(&config, &opts, clients).await;
            if let Ok(summary) = &result {
                record(shared, clients, &config, summary);
            }
            let _ = reply.send(result.map_err(|e| e.to_string()));
        }
    }
}

/// Whether the tenant is waiting out its reconnect delay; at its end the client is rebuilt.
fn paused(shared: &Shared, clients: &Clients, tenant: &str) -> bool {
    let mut health = shared.health.write().unwrap_or_else(|p| p.into_inner());
    let Some(h) = health.get_mut(tenant) else {
        return false;
    };
    match h.paused_until {
        Some(until) if Instant::now() < until => true,
        Some(_) => {
            h.paused_until = None;
            clients.forget(tenant);
            tracing::info!(tenant, "reconnecting: new HTTP client and token");
            false
        }
        None => false,
    }
}

fn record(shared: &Shared, clients: &Clients, config: &Config, summary: &SyncSummary) {
    let mut health = shared.health.write().unwrap_or_else(|p| p.into_inner());
    for t in &summary.tenants {
        if t.mode == RunMode::User {
            continue;
        }
        let h = health.entry(t.tenant.clone()).or_default();
        let now = crate::apply::now_rfc3339();
        h.last_status = Some(t.status);
        h.last_finished = Some(now.clone());
        h.held = t.counts.held;
        match t.status {
            RunStatus::Failed => {
                h.consecutive_failures += 1;
                h.last_error = t.error.clone();
                if h.consecutive_failures == FAILURES_BEFORE_RECONNECT {
                    let wait = Duration::from_secs(config.sync.reconnect_after_seconds);
                    h.paused_until = Some(Instant::now() + wait);
                    clients.forget(&t.tenant);
                    tracing::warn!(
                        tenant = %t.tenant,
                        failures = h.consecutive_failures,
                        "failing repeatedly; waiting {} s before reconnecting",
                        wait.as_secs()
                    );
                }
            }
            _ => {
                if h.consecutive_failures >= FAILURES_BEFORE_RECONNECT {
                    tracing::info!(tenant = %t.tenant, "recovered after {} failed runs", h.consecutive_failures);
                }
                h.consecutive_failures = 0;
                h.last_error = None;
                h.last_success = Some(now);
                h.last_success_at = Some(Instant::now());
            }
        }
    }
    let status: Vec<String> = health
        .iter()
        .map(|(name, h)| {
            format!(
                "{name}: {}",
                h.last_status.map_or("pending", RunStatus::as_str)
            )
        })
        .collect();
    notify(&[NotifyState::Status(&status.join(", "))]);
}

/// `/healthz`: healthy when every tenant's last run succeeded, or failed while its last
/// success is recent (within grace); a hold is unhealthy until someone acts on it.
pub fn health_verdict(shared: &Shared) -> (bool, Vec<String>) {
    let config = shared.config();
    let grace = Duration::from_secs(config.sync.reconnect_after_seconds.max(60) * 3);
    let health = shared.health.read().unwrap_or_else(|p| p.into_inner());
    let mut problems = Vec::new();
    for (name, h) in health.iter() {
        match h.last_status {
            None | Some(RunStatus::Success) | Some(RunStatus::DryRun) => {}
            Some(RunStatus::Held) => problems.push(format!(
                "tenant {name}: {} deactivations held by the safety limits; review and run `entra-sync sync --allow-mass-deactivation`",
                h.held
            )),
            Some(_) => {
                let recent = h.last_success_at.is_some_and(|t| t.elapsed() < grace);
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
    (problems.is_empty(), problems)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn ticks_during_a_run_are_one_run_after_it_full_if_any_asked() {
        let ticks = Ticks::default();
        // Four ticks while the worker is busy: the old queue would have held four runs.
        for full in [false, true, false, false] {
            ticks.push(full);
        }
        tokio::time::timeout(Duration::from_secs(1), ticks.due.notified())
            .await
            .unwrap();
        assert_eq!(ticks.take(), Some(true));
        assert_eq!(ticks.take(), None, "one run, not four");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), ticks.due.notified())
                .await
                .is_err(),
            "nothing more is due"
        );
        ticks.push(false);
        tokio::time::timeout(Duration::from_secs(1), ticks.due.notified())
            .await
            .unwrap();
        assert_eq!(ticks.take(), Some(false));
    }
}
