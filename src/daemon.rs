//! `entra-sync run` as a library: a [`Daemon`] built from a config and a bound listener, run
//! until a shutdown future resolves. Scheduled ticks (tokio-cron-scheduler, coalesced) and
//! `POST /resync` requests feed one worker, which runs them one at a time through a [`Runner`]
//! (the real [`Syncer`], or a scripted one in tests); a reload request re-reads the config;
//! systemd hears READY, STATUS, RELOADING, STOPPING and WATCHDOG.
//!
//! Owns scheduling, per-tenant health and reconnect back-off. It must not sync any other way
//! than the one-off `sync` does, and leaves signals, the global metrics recorder and exit
//! codes to `main`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sd_notify::NotifyState;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::admin::{self, AdminState, Limits, ResyncRequest};
use crate::clock::{Clock, Instant};
use crate::config::Config;
use crate::health::{Health, Pause};
use crate::secret::{Secret, SecretSource};
use crate::sync::{SyncError, SyncOptions, SyncSummary, Syncer, TenantOutcome};
use entra_sync_core::run::{RunMode, RunStatus};

/// What the daemon's worker runs: [`Syncer`] in the product, a scripted stand-in in tests.
/// A run's future is not `Send` (it holds the store's connection across awaits): the daemon
/// runs on the task that awaits it.
pub trait Runner {
    fn run(
        &self,
        config: &Config,
        opts: &SyncOptions,
    ) -> impl Future<Output = Result<SyncSummary, SyncError>>;
    /// Drop the tenant's connection: the next run builds a new client and gets a new token.
    fn reconnect(&self, tenant: &str);
    /// The config was reloaded: drop every Graph client (tokens, pacers; connections come from
    /// the shared pool).
    fn reload(&self);
    fn clock(&self) -> &dyn Clock;
}

impl Runner for Syncer {
    fn run(
        &self,
        config: &Config,
        opts: &SyncOptions,
    ) -> impl Future<Output = Result<SyncSummary, SyncError>> {
        Syncer::run(self, config, opts)
    }

    fn reconnect(&self, tenant: &str) {
        self.forget(tenant);
    }

    fn reload(&self) {
        self.clear();
    }

    fn clock(&self) -> &dyn Clock {
        Syncer::clock(self)
    }
}

/// Where scheduled ticks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// `schedule.sync` and `schedule.full_sync`, run by tokio-cron-scheduler.
    Cron,
    /// Only [`DaemonHandle::tick`] (tests drive the schedule themselves).
    Manual,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config cannot be used (exit 2).
    #[error("{0}")]
    Config(String),
    #[error("cannot start the scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
}

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
enum Trigger {
    Scheduled { full: bool },
    Resync(ResyncRequest),
}

/// The bearer token `POST /resync` requires, read like a client secret (a relative name is
/// looked up in systemd's credentials directory).
fn read_admin_token(config: &Config) -> Result<Option<Secret>, String> {
    if config.admin.token_file.is_empty() {
        return Ok(None);
    }
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    SecretSource::File(PathBuf::from(&config.admin.token_file))
        .read(
            "admin token",
            credentials_dir.as_deref(),
            &config.base_dir,
            &|name| std::env::var(name).ok(),
        )
        .map(Some)
        .map_err(|e| format!("config key `admin.token_file`: {e}"))
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("systemd notify failed: {e}");
    }
}

async fn start_cron(
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
                ticks.push(full);
                Box::pin(async {})
            })?)
            .await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

/// Drives a running (or built) daemon from outside: `main` forwards SIGHUP here, tests tick,
/// reload and watch rounds end.
#[derive(Clone)]
pub struct DaemonHandle {
    ticks: Arc<Ticks>,
    reload: mpsc::Sender<()>,
    rounds: watch::Receiver<u64>,
    state: Arc<AdminState>,
}

impl DaemonHandle {
    /// A scheduled tick, as the cron schedule would give it.
    pub fn tick(&self, full: bool) {
        self.ticks.push(full);
    }

    /// Re-read the config file (SIGHUP).
    pub fn reload(&self) {
        // A reload already queued covers this one.
        let _ = self.reload.try_send(());
    }

    /// Counts the worker's finished rounds (a tick's runs, a resync or a reload).
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.clone()
    }

    /// The admin endpoint's routes over this daemon's state, for tests to call directly.
    pub fn admin(&self) -> axum::Router {
        admin::router(Arc::clone(&self.state))
    }
}

/// The service: build it, take a [`DaemonHandle`], then [`Daemon::run_until_stopped`].
pub struct Daemon<R: Runner> {
    state: Arc<AdminState>,
    config_path: PathBuf,
    runner: R,
    listener: TcpListener,
    admin_limits: Limits,
    schedule: Schedule,
    ticks: Arc<Ticks>,
    resync: mpsc::Receiver<ResyncRequest>,
    reload: (mpsc::Sender<()>, mpsc::Receiver<()>),
    rounds: watch::Sender<u64>,
}

impl<R: Runner> Daemon<R> {
    /// A daemon for `config` (read from `config_path`, which reloads read again), serving the
    /// admin endpoint on `listener` and metrics from `metrics`.
    pub fn build(
        config: Config,
        config_path: PathBuf,
        listener: TcpListener,
        metrics: PrometheusHandle,
        runner: R,
        schedule: Schedule,
    ) -> Result<Daemon<R>, DaemonError> {
        let token = read_admin_token(&config).map_err(DaemonError::Config)?;
        let health = Arc::new(Health::default());
        health.track(config.tenants.iter().map(|t| t.name.as_str()));
        // `POST /resync` requests; each caller waits for its own run's answer.
        let (resync_tx, resync) = mpsc::channel(4);
        let state = Arc::new(AdminState::new(
            Arc::new(config),
            token,
            health,
            resync_tx,
            metrics,
        ));
        Ok(Daemon {
            state,
            config_path,
            runner,
            listener,
            admin_limits: Limits::default(),
            schedule,
            ticks: Arc::new(Ticks::default()),
            resync,
            reload: mpsc::channel(1),
            rounds: watch::Sender::new(0),
        })
    }

    /// Other limits for the admin endpoint's connections than SPEC 5.8's (tests).
    pub fn with_admin_limits(mut self, limits: Limits) -> Daemon<R> {
        self.admin_limits = limits;
        self
    }

    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            ticks: Arc::clone(&self.ticks),
            reload: self.reload.0.clone(),
            rounds: self.rounds.subscribe(),
            state: Arc::clone(&self.state),
        }
    }

    /// Serves and syncs until `shutdown` resolves; a run under way is then abandoned (its
    /// transaction was not started or rolls back, so nothing of it is written).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let Daemon {
            state,
            config_path,
            runner,
            listener,
            admin_limits,
            schedule,
            ticks,
            mut resync,
            reload: (_, mut reloads),
            rounds,
        } = self;
        // The address actually bound (`admin.listen` may name port 0).
        let bound = listener.local_addr().ok();
        let admin_addr =
            bound.map_or_else(|| state.config().admin.listen.clone(), |a| a.to_string());
        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        let admin = tokio::spawn(admin::serve(
            listener,
            admin::router(Arc::clone(&state)),
            admin_limits,
            async move {
                let _ = admin_stopped.await;
            },
        ));
        let mut cron = match schedule {
            Schedule::Cron => Some(start_cron(&state.config(), &ticks).await?),
            Schedule::Manual => None,
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
        // Sync once right away rather than waiting for the first tick.
        ticks.push(false);
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("scheduled; first sync starting"),
        ]);
        tracing::info!(admin = %admin_addr, "entra-sync running");

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let trigger = tokio::select! {
                Some(request) = resync.recv() => Trigger::Resync(request),
                () = ticks.due.notified() => match ticks.take() {
                    Some(full) => Trigger::Scheduled { full },
                    None => continue,
                },
                Some(()) = reloads.recv() => {
                    notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
                    match reload(&state, &config_path, &runner, bound) {
                        Ok(()) => {
                            if let Some(old) = cron.as_mut() {
                                let _ = old.shutdown().await;
                                match start_cron(&state.config(), &ticks).await {
                                    Ok(new) => *old = new,
                                    Err(e) => tracing::error!("cannot reschedule after reload: {e}"),
                                }
                            }
                        }
                        Err(e) => tracing::error!("config reload rejected, the previous config keeps running: {e}"),
                    }
                    notify(&[NotifyState::Ready]);
                    rounds.send_modify(|n| *n += 1);
                    continue;
                }
                () = &mut shutdown => break,
            };
            tokio::select! {
                () = work(&state, &runner, trigger) => {}
                () = &mut shutdown => {
                    tracing::info!("stopping during a run: the run is abandoned, its transaction was not started or rolls back");
                    break;
                }
            }
            rounds.send_modify(|n| *n += 1);
        }
        notify(&[NotifyState::Stopping]);
        if let Some(mut cron) = cron {
            let _ = cron.shutdown().await;
        }
        let _ = stop_admin.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), admin).await;
        if let Some(w) = watchdog {
            w.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn reload(
    state: &AdminState,
    config_path: &std::path::Path,
    runner: &impl Runner,
    bound: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let token = read_admin_token(&config)?;
    // The socket stays where it is until a restart: a new config may not drop the token it
    // needs there.
    if let Some(bound) = bound.filter(|b| !b.ip().is_loopback())
        && token.is_none()
    {
        return Err(format!(
            "config key `admin.token_file`: required while the admin endpoint listens on {bound} (admin.listen takes effect at the next restart)"
        ));
    }
    if config.admin.listen != state.config().admin.listen {
        tracing::warn!("admin.listen changed; it takes effect at the next restart");
    }
    state
        .health
        .track(config.tenants.iter().map(|t| t.name.as_str()));
    state.replace(Arc::new(config), token);
    runner.reload();
    tracing::info!("config reloaded");
    Ok(())
}

async fn work(state: &AdminState, runner: &impl Runner, trigger: Trigger) {
    let config = state.config();
    match trigger {
        Trigger::Scheduled { full } => {
            // One run of every tenant not waiting out a reconnect pause: their reads overlap.
            let mut due = Vec::new();
            for tenant in &config.tenants {
                match state.health.pause_state(&tenant.name, Instant::now()) {
                    Pause::Waiting => continue,
                    Pause::Over => {
                        runner.reconnect(&tenant.name);
                        tracing::info!(tenant = %tenant.name, "reconnecting: new Graph client and token");
                    }
                    Pause::None => {}
                }
                due.push(tenant.name.clone());
            }
            if due.is_empty() {
                return;
            }
            let opts = SyncOptions {
                tenants: Some(due.clone()),
                full,
                ..SyncOptions::default()
            };
            let summary = match runner.run(&config, &opts).await {
                Ok(summary) => summary,
                Err(e) => {
                    // A run that fails before it has a summary still failed: it counts.
                    tracing::error!("{e}");
                    let mode = if full {
                        RunMode::Full
                    } else {
                        RunMode::Incremental
                    };
                    let tenants = due
                        .iter()
                        .map(|name| {
                            let mut failed = TenantOutcome::new(name, mode, RunStatus::Failed);
                            failed.error = Some(format!("tenant \"{name}\": {e}"));
                            failed
                        })
                        .collect();
                    SyncSummary { tenants }
                }
            };
            record(state, runner, &config, &summary);
        }
        Trigger::Resync(ResyncRequest { opts, reply }) => {
            let result = runner.run(&config, &opts).await;
            // A dry run (`GET /explain`) wrote nothing: it says nothing of the tenants' health.
            if let Ok(summary) = &result
                && !opts.dry_run
            {
                record(state, runner, &config, summary);
            }
            let _ = reply.send(result);
        }
    }
}

fn record(state: &AdminState, runner: &impl Runner, config: &Config, summary: &SyncSummary) {
    let recorded = state.health.record(
        summary,
        &runner.clock().now_rfc3339(),
        Instant::now(),
        Duration::from_secs(config.sync.reconnect_after_seconds),
    );
    for tenant in &recorded.reconnect {
        runner.reconnect(tenant);
    }
    notify(&[NotifyState::Status(&state.health.status_line())]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
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
