//! One sync run: for each tenant, fetch → resolve → plan → apply → record the run.
//!
//! The single entry point that `sync`, `demo`, the scheduler and `POST /resync` share. Tenants
//! run independently: one tenant's failure is recorded and never blocks or rolls back another
//! (SPEC 4.11); up to `sync.tenant_concurrency` of them read Graph at once and take turns, in
//! config order, for everything they read from and write to the store after that. The store's
//! writer lock covers the whole run, Graph reads included; the plan is made from a view read
//! in the run's own transaction. The decisions are
//! [`entra_sync_core`]'s; this module reads, hands over and writes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use entra_sync_core::ObjectId;
use entra_sync_core::directory::{EntraUser, Snapshot};
use entra_sync_core::explain::{self, Explanation};
use entra_sync_core::plan::{self, Plan, Safety, Scope, StoreView};
use entra_sync_core::resolve::{self, Report};
use entra_sync_core::rules::Rules;
use entra_sync_core::run::{self, Basis, Pending, RunCounts, RunMode, RunStatus, UserQuery};

use crate::apply::RunWrite;
use crate::clock::{Clock, Instant, SystemClock};
use crate::config::{Config, TenantConfig};
use crate::graph::{GraphClient, GraphError};
use crate::planfile::Fingerprint;
use crate::refresh;
use crate::store::{
    HeldChange, MirrorWrite, OpenState, PendingDeactivation, RunRecord, Store, StoreError,
    WriterLock,
};
use futures_util::{StreamExt, stream};

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub tenant: Option<String>,
    /// Only these tenants (the daemon's round: those not waiting out a reconnect pause).
    pub tenants: Option<Vec<String>>,
    pub full: bool,
    pub dry_run: bool,
    /// Object id, UPN or mail of one user to resync.
    pub user: Option<String>,
    pub allow_mass_deactivation: bool,
    /// With `user` and `dry_run`: plan the tenant as its next run would (not a forced
    /// resync) and explain the people `user` names (`entra-sync explain`).
    pub explain: bool,
    /// With `dry_run`: a plan to review and `apply` (`sync --plan-out`): planned with every
    /// deactivation in it (those over the limits marked `released`), with its fingerprint.
    pub plan_out: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub tenant: String,
    pub mode: RunMode,
    pub status: RunStatus,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub graph_requests: u64,
    /// Resource units Graph charged for them (`x-ms-resource-unit`).
    pub resource_units: u64,
    /// Times Graph asked this run to wait (429/503 with Retry-After), and for how long.
    pub throttle_waits: u64,
    pub throttle_wait_ms: u64,
    pub duration_ms: u64,
    /// Entra users the run planned: the tenant's, or for an incremental run that planned
    /// only whom its changes touch, theirs.
    pub planned_users: u64,
    pub error: Option<String>,
    pub hold_reason: Option<String>,
    pub reports: Vec<Report>,
    /// Deactivations waiting out the grace period after the run (SPEC 2).
    pub pending: Vec<PendingDeactivation>,
    /// `explain`: why each person the query names is what the store says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explanations: Vec<Explanation>,
    /// `plan_out`: whose open state the plan replaces (`None`: a run that planned nothing
    /// leaves it as it is), and what it was planned from.
    #[serde(skip)]
    pub reviewed: Option<(Option<Scope>, Fingerprint)>,
    /// The planned changes (printed by `--dry-run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

impl TenantOutcome {
    /// An outcome with nothing counted yet.
    pub fn new(tenant: &str, mode: RunMode, status: RunStatus) -> TenantOutcome {
        TenantOutcome {
            tenant: tenant.to_string(),
            mode,
            status,
            counts: RunCounts::default(),
            graph_requests: 0,
            resource_units: 0,
            throttle_waits: 0,
            throttle_wait_ms: 0,
            duration_ms: 0,
            planned_users: 0,
            error: None,
            hold_reason: None,
            reports: Vec::new(),
            pending: Vec::new(),
            explanations: Vec::new(),
            reviewed: None,
            plan: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncSummary {
    pub tenants: Vec<TenantOutcome>,
}

impl SyncSummary {
    /// SPEC 1: 1 when a tenant failed (wins over 3), 3 when deactivations were held.
    pub fn exit_code(&self) -> i32 {
        if self.tenants.iter().any(|t| t.status == RunStatus::Failed) {
            1
        } else if self
            .tenants
            .iter()
            .any(|t| t.status == RunStatus::Held || t.hold_reason.is_some())
        {
            3
        } else {
            0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no tenant named \"{0}\" in the config")]
    UnknownTenant(String),
    #[error("no user matches \"{0}\" (object id, UPN or mail) in {1}")]
    UnknownUser(String, String),
}

impl SyncSummary {
    /// `explain --json` and `GET /explain`: per tenant, its explanations or its error.
    pub fn explanations_json(&self) -> serde_json::Value {
        let tenants: Vec<serde_json::Value> = self
            .tenants
            .iter()
            .map(|t| {
                serde_json::json!({
                    "tenant": t.tenant,
                    "error": t.error,
                    "explanations": t.explanations,
                })
            })
            .collect();
        serde_json::json!({ "tenants": tenants })
    }
}

/// Everything about a tenant's rules that resolve needs.
pub fn rules_for(config: &Config, tenant: &TenantConfig) -> Rules {
    Rules {
        tenant: tenant.name.clone(),
        tenant_account: tenant.account.clone(),
        rules: config.rules_of(&tenant.name).map(|r| r.rule()).collect(),
        email_source: config.sync.email_source,
        nested_groups: config.sync.nested_groups,
        default_phone_type: config.sync.default_phone_type.clone(),
        employee_defaults: config.employee_defaults.clone(),
    }
}

/// Runs syncs: the one entry point of `sync`, `demo`, the daemon's schedule and
/// `POST /resync`. Keeps each tenant's Graph client between runs (so the daemon reuses tokens)
/// and the clock every run reads.
pub struct Syncer {
    clients: Mutex<HashMap<String, Arc<GraphClient>>>,
    /// Per app registration (client id): the pacer of its budget across tenants, shared by
    /// its tenants' clients and kept across reloads.
    app_pacers: Mutex<HashMap<String, Arc<crate::graph::pace::Pacer>>>,
    clock: Arc<dyn Clock>,
}

impl Default for Syncer {
    fn default() -> Syncer {
        Syncer::new(Arc::new(SystemClock))
    }
}

impl Syncer {
    pub fn new(clock: Arc<dyn Clock>) -> Syncer {
        Syncer {
            clients: Mutex::default(),
            app_pacers: Mutex::default(),
            clock,
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn client(
        &self,
        config: &Config,
        tenant: &TenantConfig,
    ) -> Result<Arc<GraphClient>, GraphError> {
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(&tenant.name) {
            return Ok(Arc::clone(c));
        }
        let app_pacer = Arc::clone(
            self.app_pacers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant.client_id.clone())
                .or_insert_with(|| Arc::new(crate::graph::pace::Pacer::app())),
        );
        let client = Arc::new(
            GraphClient::new(tenant, &config.sync, Arc::clone(&self.clock))?
                .with_app_pacer(app_pacer),
        );
        map.insert(tenant.name.clone(), Arc::clone(&client));
        Ok(client)
    }

    /// Drops the tenant's client: the next run builds a new Graph client and gets a new token
    /// (its connections come from the shared pool, whose idle ones close after 90 s).
    pub fn forget(&self, tenant: &str) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }

    /// Drops every client (after a config reload).
    pub fn clear(&self) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Runs a sync of every tenant (or `--tenant`) and returns what happened to each.
    ///
    /// Up to `sync.tenant_concurrency` tenants read Graph at once; their writes take turns in
    /// config order, so what one tenant's run writes never depends on how fast another's
    /// reads were (SPEC 4.11: the tenant listed first wins an email). The writer lock covers
    /// the whole run, so a one-off `sync` never works from the daemon's cursors.
    pub async fn run(&self, config: &Config, opts: &SyncOptions) -> Result<SyncSummary, SyncError> {
        let mut tenants: Vec<&TenantConfig> = match &opts.tenant {
            Some(name) => vec![
                config
                    .tenant(name)
                    .ok_or_else(|| SyncError::UnknownTenant(name.clone()))?,
            ],
            None => config.tenants.iter().collect(),
        };
        if let Some(only) = &opts.tenants {
            tenants.retain(|t| only.contains(&t.name));
        }
        let mut summary = SyncSummary::default();
        // A sync writes its tenants in config order, each planned after the ones before it
        // have written (a name the first takes, the next cannot). A dry run of several does
        // the same on a throwaway copy of the store, so its plans are the sync's (and a
        // reviewed plan of several tenants applies whole). Not for `explain`: one person's
        // answer is not worth a copy of the store.
        let scratch = if opts.dry_run && !opts.explain && tenants.len() > 1 {
            match Scratch::of(&config.store.path, opts.plan_out, self.clock.now()) {
                Ok(scratch) => Some(scratch),
                // A dry run to look at may plan each tenant against the store as it is.
                Err(e) if !opts.plan_out => {
                    tracing::warn!(
                        "a copy of the store for the dry run: {e}; each tenant is planned against the store as it is, not after the tenants before it"
                    );
                    None
                }
                Err(e) => {
                    for tenant in tenants {
                        let mut outcome =
                            TenantOutcome::new(&tenant.name, run_mode(opts), RunStatus::Failed);
                        outcome.error = Some(format!(
                            "tenant \"{}\": a copy of the store to plan on: {e}; free space there or plan one tenant at a time (--tenant)",
                            tenant.name
                        ));
                        summary.tenants.push(outcome);
                    }
                    return Ok(summary);
                }
            }
        } else {
            None
        };
        let scratch_config;
        let config = match &scratch {
            Some(scratch) => {
                scratch_config = Config {
                    store: crate::config::StoreConfig {
                        path: scratch.path.clone(),
                    },
                    ..config.clone()
                };
                &scratch_config
            }
            None => config,
        };
        let lock = if opts.dry_run || tenants.is_empty() {
            Ok(None)
        } else {
            // flock is per open file: one lock for the run, shared by its tenants.
            let path = config.store.path.clone();
            match tokio::task::spawn_blocking(move || WriterLock::acquire(&path)).await {
                Ok(Ok(lock)) => {
                    tracing::debug!(tenants = tenants.len(), "writer lock taken; reading Graph");
                    Ok(Some(lock))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let _lock = match lock {
            Ok(lock) => lock,
            Err(e) => {
                for tenant in tenants {
                    let mut outcome =
                        TenantOutcome::new(&tenant.name, run_mode(opts), RunStatus::Failed);
                    outcome.error = Some(format!("tenant \"{}\": {e}", tenant.name));
                    // Without the lock nothing may be written, not even the failure.
                    let now = self.clock.now_rfc3339();
                    summary.tenants.push(finish_failed(
                        config,
                        opts,
                        self.clock(),
                        outcome,
                        &now,
                        false,
                    ));
                }
                return Ok(summary);
            }
        };
        let turns = Turns {
            scratch: scratch.as_ref().map(|s| s.before.clone()),
            ..Turns::default()
        };
        // Unordered: a slow tenant does not keep the tenants after it from starting their
        // reads (the turns keep the writes in order); the summary is put back in config order.
        let mut outcomes: Vec<(usize, Option<TenantOutcome>)> =
            stream::iter(tenants.iter().enumerate())
                .map(|(i, tenant)| {
                    let turn = Turn {
                        turns: &turns,
                        index: i,
                    };
                    async move {
                        let outcome = run_tenant(config, tenant, opts, self, &turn).await;
                        turn.done().await;
                        (i, outcome)
                    }
                })
                .buffer_unordered(config.sync.tenant_concurrency.max(1))
                .collect()
                .await;
        outcomes.sort_by_key(|(i, _)| *i);
        let mut user_found = false;
        for (_, outcome) in outcomes {
            let Some(outcome) = outcome else { continue };
            user_found = true;
            summary.tenants.push(outcome);
        }
        if let Some(user) = &opts.user
            && !user_found
        {
            let scope = opts
                .tenant
                .as_ref()
                .map_or("any tenant".to_string(), |t| format!("tenant \"{t}\""));
            return Err(SyncError::UnknownUser(user.clone(), scope));
        }
        Ok(summary)
    }
}

/// A dry run's private copy of the store (or a new store, when there is none yet), written
/// by its tenants' runs and removed with it; beside the store (as private as the store
/// itself) where the run may write, else in the temporary directory.
struct Scratch {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    /// `--plan-out`: a second copy, untouched, the plans' fingerprints are taken against.
    before: Option<std::path::PathBuf>,
}

/// What a dry run's copy of the store is called beside the store.
const SCRATCH_PREFIX: &str = ".entra-sync-dry-run-";

impl Scratch {
    fn of(
        store: &std::path::Path,
        keep_before: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Scratch, String> {
        let beside = store
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        Scratch::remove_stale(beside, now);
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(beside)
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("entra-sync-dry-run-")
                    .tempdir()
            })
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let path = dir.path().join("psa.db");
        let mut before = None;
        if let Some(real) = Store::open_read_only(store).map_err(|e| e.to_string())? {
            if keep_before {
                let copy = dir.path().join("before.db");
                real.copy_to(&copy).map_err(|e| e.to_string())?;
                std::fs::copy(&copy, &path).map_err(|e| format!("{}: {e}", path.display()))?;
                before = Some(copy);
            } else {
                real.copy_to(&path).map_err(|e| e.to_string())?;
            }
        }
        Ok(Scratch {
            _dir: dir,
            path,
            before,
        })
    }

    /// A copy left by a dry run that was killed (SIGKILL, a power cut) holds people's
    /// records: the next dry run removes it once it is a day old (none runs that long).
    fn remove_stale(beside: &std::path::Path, now: chrono::DateTime<chrono::Utc>) {
        let Ok(entries) = std::fs::read_dir(beside) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(SCRATCH_PREFIX)
            {
                continue;
            }
            let made = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(chrono::DateTime::<chrono::Utc>::from);
            if made.is_ok_and(|made| now - made > chrono::Duration::days(1)) {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => tracing::info!(
                        "removed {}, a dry run's copy of the store left a day ago",
                        entry.path().display()
                    ),
                    Err(e) => tracing::warn!(
                        "cannot remove {}, a dry run's copy of the store left a day ago: {e}",
                        entry.path().display()
                    ),
                }
            }
        }
    }
}

/// A one-off [`Syncer::run`] on the system clock.
pub async fn run(config: &Config, opts: &SyncOptions) -> Result<SyncSummary, SyncError> {
    Syncer::default().run(config, opts).await
}

/// The writes of a run's tenants, in config order: tenant `i` writes once the ones before it
/// are done.
#[derive(Default)]
struct Turns {
    done: tokio::sync::watch::Sender<usize>,
    /// A dry run whose tenants write a throwaway copy of the store ([`Scratch`]), so each is
    /// planned as the sync would plan it, after the ones before it; with the store as it was
    /// when copied, for `--plan-out` (`None`: not kept, or no store yet).
    scratch: Option<Option<std::path::PathBuf>>,
}

/// One tenant's place in [`Turns`].
struct Turn<'a> {
    turns: &'a Turns,
    index: usize,
}

impl Turn<'_> {
    /// Waits until every tenant listed before this one has written.
    async fn take(&self) {
        let mut done = self.turns.done.subscribe();
        let _ = done.wait_for(|n| *n >= self.index).await;
    }

    /// This tenant has written (or will not): the next one may.
    async fn done(&self) {
        self.take().await;
        self.turns
            .done
            .send_modify(|n| *n = (*n).max(self.index + 1));
    }
}

fn run_mode(opts: &SyncOptions) -> RunMode {
    if opts.user.is_some() {
        RunMode::User
    } else {
        RunMode::Full
    }
}

/// One tenant's run. `None` when `--user` names nobody in this tenant.
async fn run_tenant(
    config: &Config,
    tenant: &TenantConfig,
    opts: &SyncOptions,
    syncer: &Syncer,
    turn: &Turn<'_>,
) -> Option<TenantOutcome> {
    let started = Instant::now();
    let started_at = syncer.clock.now_rfc3339();
    let mut outcome = TenantOutcome::new(&tenant.name, run_mode(opts), RunStatus::Failed);
    let result = tenant_run(
        config,
        tenant,
        opts,
        syncer,
        turn,
        &started_at,
        &mut outcome,
    )
    .await;
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(None) => None,
        Ok(Some(plan)) => {
            for change in &plan.changes {
                tracing::debug!(tenant = %tenant.name, "{change}");
            }
            // An explanation is not a run: nothing to log or count but what went wrong.
            if !opts.explain {
                log_outcome(&outcome, syncer.clock());
            }
            outcome.plan = Some(plan);
            Some(outcome)
        }
        Err(e) => {
            outcome.error = Some(format!("tenant \"{}\": {e}", tenant.name));
            turn.take().await;
            Some(finish_failed(
                config,
                opts,
                syncer.clock(),
                outcome,
                &started_at,
                true,
            ))
        }
    }
}

/// The run itself; fills `outcome`'s mode, status and request count as it learns them.
async fn tenant_run(
    config: &Config,
    tenant: &TenantConfig,
    opts: &SyncOptions,
    syncer: &Syncer,
    turn: &Turn<'_>,
    started_at: &str,
    outcome: &mut TenantOutcome,
) -> Result<Option<Plan>, anyhow::Error> {
    let store_path = &config.store.path;
    // The run holds the writer lock (Syncer::run); this tenant writes in its turn.
    // A dry run reads the store, or writes its tenants into a throwaway copy of it.
    let read_only = opts.dry_run && turn.turns.scratch.is_none();
    let mut store = if read_only {
        Store::open_read_only(store_path)?
    } else {
        Some(Store::open(store_path)?)
    };
    let rules = rules_for(config, tenant);
    let client = syncer.client(config, tenant)?;
    let known = match &store {
        Some(s) => s.known_directory(&tenant.name, &tenant.tenant_id)?,
        None => None,
    };
    let directory = match known {
        Some(d) => d,
        None => {
            // The sign-in the read needs goes out beside it: a first run waits one round
            // trip, not two.
            let (d, signed_in) = tokio::join!(client.directory(), client.sign_in());
            let d = d?;
            signed_in?;
            // Not in turn: it touches only this tenant's entry, and waiting here would make a
            // first run of the fleet read one tenant after another.
            if let Some(s) = store.as_mut().filter(|_| !read_only) {
                s.register_directory(&tenant.name, &tenant.tenant_id, &d)?;
            }
            d
        }
    };
    let requests_before = client.stats.requests();
    let units_before = client.stats.resource_units();
    let waits_before = client
        .stats
        .throttle_waits
        .load(std::sync::atomic::Ordering::Relaxed);
    let wait_ms_before = client
        .stats
        .throttle_wait_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let stored_cursors = match &store {
        Some(s) => s.load_cursors(&tenant.name)?,
        None => None,
    };
    // The groups the mirror tracks (rule groups and the nested ones found so far).
    let mirror_groups = match &store {
        Some(s) => s.mirror_group_ids(&tenant.name)?,
        None => Default::default(),
    };
    // An incremental run reads from the mirror only the users its rounds touched, and plans
    // only them and whom they touch (`narrow`), when nothing else asks for the whole tenant.
    let rules_unchanged = stored_cursors
        .as_ref()
        .is_some_and(|c| c.rules == rules.fingerprint());
    let touched_only = rules_unchanged
        && !(opts.dry_run || opts.plan_out || opts.explain || opts.allow_mass_deactivation);
    let load_mirror = |only: Option<&BTreeSet<ObjectId>>| match (&store, only) {
        (Some(s), Some(users)) => s
            .load_mirror_of(&tenant.name, users, rules.nested_groups)
            .map_err(|e| e.to_string()),
        (Some(s), None) => s.load_mirror(&tenant.name).map_err(|e| e.to_string()),
        (None, _) => Ok(Snapshot::default()),
    };
    // A `--user` run starts from the stored mirror and reads only its people (SPEC 8).
    let for_user = match (&opts.user, &stored_cursors, &store) {
        (Some(query), Some(cursors), Some(s)) if !opts.full => {
            let mirror = s.load_mirror(&tenant.name)?;
            let mut view = s.view(&tenant.name)?;
            for link in view.links.iter_mut().filter(|l| l.directory == tenant.name) {
                link.directory.clone_from(&directory);
            }
            let known = UserQuery::new(query).matches(&mirror, &view, &directory);
            Some((query, cursors, mirror, known, view))
        }
        _ => None,
    };
    let mut phase = crate::phase::Phase::start();
    // What the run is attempting, so a run that fails is recorded with the mode it failed in.
    let mut attempting = RunMode::Full;
    let graph_result = async {
        if let Some((query, cursors, mirror, known, view)) = for_user {
            let holders = |users: &[&EntraUser]| {
                names_held(&view, &directory, users, rules.email_source)
            };
            match refresh::for_user(&client, &rules, cursors, mirror, known, query, holders).await
            {
                Ok(refresh::ForUser::Read(r)) => return Ok(Some(r)),
                // Not in this tenant: nothing to run here.
                Ok(refresh::ForUser::Nobody) => return Ok(None),
                Ok(refresh::ForUser::Full) => {
                    tracing::info!(tenant = %tenant.name, "reading the whole tenant for --user")
                }
                Err(e) => return Err(e),
            }
        }
        if opts.user.is_none()
            && !opts.full
            && let Some(cursors) = &stored_cursors
        {
            attempting = RunMode::Incremental;
            // Entra keeps a deleted user 30 days: one who departed longer ago cannot be restored.
            let departed_after = crate::clock::rfc3339(
                syncer.clock.now() - chrono::Duration::days(crate::store::RESTORABLE_DAYS),
            );
            let linked = |users: &[entra_sync_core::ObjectId]| match &store {
                Some(s) => s
                    .returning_users(&tenant.name, &directory, users, &departed_after)
                    .map_err(|e| e.to_string()),
                None => Ok(Default::default()),
            };
            match refresh::incremental(
                &client,
                &rules,
                cursors,
                &mirror_groups,
                touched_only,
                load_mirror,
                linked,
            )
            .await
            {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => tracing::info!(tenant = %tenant.name, "tracked groups changed; running a full sync"),
                Err(GraphError::CursorExpired { what, code }) => {
                    tracing::warn!(tenant = %tenant.name, "{what}: delta cursor expired ({code}); running a full sync")
                }
                Err(e) => return Err(e),
            }
            attempting = RunMode::Full;
        }
        refresh::full(&client, &rules, &mirror_groups).await.map(Some)
    }
    .await;
    outcome.graph_requests = client.stats.requests() - requests_before;
    outcome.resource_units = client.stats.resource_units() - units_before;
    outcome.throttle_waits = client
        .stats
        .throttle_waits
        .load(std::sync::atomic::Ordering::Relaxed)
        - waits_before;
    outcome.throttle_wait_ms = client
        .stats
        .throttle_wait_ms
        .load(std::sync::atomic::Ordering::Relaxed)
        - wait_ms_before;
    if opts.user.is_none() {
        outcome.mode = attempting;
    }
    let Some(mut refreshed) = graph_result.map_err(|e| anyhow::anyhow!(e))? else {
        return Ok(None); // `--user` names nobody in this tenant
    };
    phase.done(&tenant.name, "graph read");
    // From here on the run reads and writes the store: in config order with the others.
    turn.take().await;
    phase.done(&tenant.name, "wait for the tenants listed before");
    let mode = outcome.mode;

    let rules_changed = stored_cursors
        .as_ref()
        .is_none_or(|c| c.rules != refreshed.cursors.rules);
    let run = RunContext {
        tenant,
        mode,
        started_at,
        opts,
        clock: syncer.clock(),
    };
    let open_before = match &store {
        Some(s) => s.open_state(&tenant.name)?,
        None => OpenState::default(),
    };
    // `--plan-out`: what a plan was planned from (the open state read before the run).
    let open_before_text = if opts.plan_out {
        crate::planfile::open_state(store.as_ref(), &tenant.name)?
    } else {
        String::new()
    };
    let settings = crate::planfile::settings(config, tenant);
    let reviewed = |plan: &Plan, view: &StoreView, scope: Option<Scope>| {
        opts.plan_out.then(|| {
            let print = Fingerprint::of(
                plan,
                view,
                stored_cursors.as_ref(),
                &settings,
                &open_before_text,
            );
            (scope, print)
        })
    };
    let retention = config.retention.purge_deactivated_after_days;
    let now = syncer.clock.now();
    let cutoff = (retention > 0).then(|| plan::retention_cutoff(now, retention));
    let fresh = refreshed.snapshot.is_some();
    // Whether a purge is due matters to a run that plans only some users too: it then plans
    // the whole tenant.
    let purge_watch = match &store {
        Some(s) if (!fresh || refreshed.touched.is_some()) && cutoff.is_some() => {
            s.purge_watch(&tenant.name)?
        }
        _ => None,
    };
    let pending = Pending {
        edited: match &store {
            Some(s) if opts.user.is_none() => s.edited_since_whole_plan(&tenant.name)?,
            _ => false,
        },
        rules_changed,
        held: !open_before.held.is_empty(),
        releasing: opts.allow_mass_deactivation || opts.plan_out,
        // With retention on, a tenant never planned under it (no watch yet) is due.
        purge_due: match (&purge_watch, &cutoff) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(watch), Some(cutoff)) => watch < cutoff,
        },
        grace_due: open_before.out_of_scope.iter().any(|p| {
            let minutes = config.safety.deactivate_after_minutes;
            plan::grace_reached(&p.since, &crate::clock::rfc3339(now), minutes)
        }),
    };
    // Planning only the users the rounds touched is a plan of the whole tenant as long as
    // nothing else in it is pending (held changes, a grace period or a purge due).
    let partial = refreshed.touched.take();
    let narrow_ok = !(pending.held || pending.grace_due || pending.purge_due || pending.edited);
    let mut snapshot = match (
        run::basis(fresh, pending),
        refreshed.snapshot.take(),
        &store,
    ) {
        (Basis::Fresh, Some(snapshot), _) => snapshot,
        (Basis::Unchanged, _, _) => {
            // Nothing happened in Entra and nothing here asks for a plan: the run records
            // itself and its cursors; what was open stays open.
            let plan = Plan {
                tenant: tenant.name.clone(),
                directory: directory.clone(),
                ..Plan::default()
            };
            outcome.reviewed = reviewed(&plan, &StoreView::default(), None);
            let access = Access::open(&mut store, read_only, syncer.clock())?;
            access.write_mirror(
                &tenant.name,
                None,
                None,
                &refreshed.cursors,
                &refreshed.deleted,
            )?;
            apply_recorded(access, &run, outcome, &plan, None, open_before)?;
            return Ok(Some(plan));
        }
        (_, _, Some(s)) => s.load_mirror(&tenant.name)?,
        (_, _, None) => Snapshot::default(),
    };
    phase.done(&tenant.name, "mirror load");
    // The run's one write transaction starts here, and the store view is read through it
    // first (the mirror write below does not touch what the view reads).
    let access = Access::open(&mut store, read_only, syncer.clock())?;
    let now_text = crate::clock::rfc3339(now);
    let safety = Safety {
        max_deactivations: config.safety.max_deactivations,
        max_deactivation_percent: config.safety.max_deactivation_percent,
        allow_mass_deactivation: opts.allow_mass_deactivation || opts.plan_out,
        deactivate_after_minutes: config.safety.deactivate_after_minutes,
    };
    if let Some(touched) = &partial {
        if let (true, Access::Write(write)) = (narrow_ok, &access) {
            let reported = crate::narrow::waiting_on_others(&open_before.reports);
            let plan_run = plan::Run {
                tenant: &tenant.name,
                directory: &directory,
                safety,
                scope: Scope::All,
                purge_before: cutoff.as_deref(),
                now: &now_text,
            };
            let narrowed =
                crate::narrow::plan(write, &rules, &plan_run, &mut snapshot, touched, &reported)?;
            if let Some((plan, users)) = narrowed {
                phase.done(&tenant.name, "plan the users the rounds touched");
                outcome.planned_users = snapshot.users.len() as u64;
                access.write_mirror(
                    &tenant.name,
                    Some(&snapshot),
                    Some(touched),
                    &refreshed.cursors,
                    &refreshed.deleted,
                )?;
                drop(snapshot);
                let scope = Scope::Touched(users);
                apply_recorded(access, &run, outcome, &plan, Some(&scope), open_before)?;
                phase.done(&tenant.name, "apply");
                return Ok(Some(plan));
            }
        }
        // The whole tenant: the stored mirror, with the touched users as they are now.
        let mut whole = access.load_mirror(&tenant.name)?;
        whole.replace_users(&snapshot, touched);
        snapshot = whole;
        phase.done(&tenant.name, "mirror load (the whole tenant)");
    }
    let mut view = access.view(&tenant.name)?;
    // A store not upgraded yet (a dry run does not write) keys this tenant's links by name.
    for link in view.links.iter_mut().filter(|l| l.directory == tenant.name) {
        link.directory.clone_from(&directory);
    }
    let scope = match &opts.user {
        Some(query) => {
            let people = UserQuery::new(query).matches(&snapshot, &view, &directory);
            if people.is_empty() {
                return Ok(None);
            }
            Scope::Users(people)
        }
        None => Scope::All,
    };
    // `explain` plans what the tenant's next run would do, and looks at its people in it.
    let (scope, explained) = match scope {
        Scope::Users(people) if opts.explain => (Scope::All, people),
        scope => (scope, BTreeSet::new()),
    };
    let plan_run = plan::Run {
        tenant: &tenant.name,
        directory: &directory,
        safety,
        scope: scope.clone(),
        purge_before: cutoff.as_deref(),
        now: &now_text,
    };
    let group_names = plan::group_names(&rules, &snapshot);
    outcome.planned_users = snapshot.users.len() as u64;
    phase.done(&tenant.name, "view");
    // Resolving and planning (pure CPU) and writing the new mirror and cursors (SQLite) only
    // read the snapshot, so they run side by side; then the snapshot is freed. A one-user run
    // resolves from fresh data but must not move the tenant's cursors.
    let (plan, mirror_written) = std::thread::scope(|s| {
        let planning = s.spawn(|| {
            let mut phase = crate::phase::Phase::start();
            let resolution = resolve::resolve(&rules, &snapshot);
            phase.done(&tenant.name, "resolve");
            let plan = plan::plan(&plan_run, resolution, &view, &group_names);
            phase.done(&tenant.name, "plan");
            plan
        });
        let written = if opts.user.is_none() {
            access.write_mirror(
                &tenant.name,
                fresh.then_some(&snapshot),
                None,
                &refreshed.cursors,
                &refreshed.deleted,
            )
        } else {
            Ok(())
        };
        phase.done(&tenant.name, "write mirror (beside resolve and plan)");
        let plan = planning
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (plan, written)
    });
    mirror_written?;
    // A plan made on a copy the tenants before it wrote is fingerprinted against the store
    // itself, which `apply` checks before it writes any of them.
    let real_view = match &turn.turns.scratch {
        Some(before) if opts.plan_out => {
            let mut real_view = match before {
                Some(before) => Store::open_read_only(before)?
                    .map(|s| s.view(&tenant.name))
                    .transpose()?
                    .unwrap_or_default(),
                None => StoreView::default(),
            };
            for link in real_view
                .links
                .iter_mut()
                .filter(|l| l.directory == tenant.name)
            {
                link.directory.clone_from(&directory);
            }
            // Plans never reach into another tenant's records; if one did, its ids would be
            // the copy's.
            if let Some((kind, id)) = crate::planfile::stored_records(&plan)
                .find(|key| !real_view.records.contains_key(key))
            {
                anyhow::bail!(
                    "the plan changes {kind} #{id}, which only a tenant planned before it creates; plan this tenant on its own (--tenant {}) once the others are applied",
                    tenant.name
                );
            }
            Some(real_view)
        }
        _ => None,
    };
    outcome.reviewed = reviewed(
        &plan,
        real_view.as_ref().unwrap_or(&view),
        Some(scope.clone()),
    );
    drop(real_view);
    outcome.explanations = explained
        .iter()
        .map(|person| explain::explain(&rules, &snapshot, &view, &plan, &directory, *person))
        .collect();
    drop(snapshot);
    phase.done(&tenant.name, "wait for the plan, free snapshot");
    // The plan owns what it writes: free the rest before the write's own buffers.
    drop((view, group_names));
    apply_recorded(access, &run, outcome, &plan, Some(&scope), open_before)?;
    phase.done(&tenant.name, "apply");
    Ok(Some(plan))
}

/// The users whose records hold a name `users` may want: the username and the email the
/// planner would give them (SPEC 4.8, 4.11), compared case-insensitively.
fn names_held(
    view: &StoreView,
    directory: &str,
    users: &[&EntraUser],
    source: entra_sync_core::rules::EmailSource,
) -> BTreeSet<ObjectId> {
    let mut names = BTreeSet::new();
    for user in users {
        if let Some(name) = user
            .user_principal_name
            .as_deref()
            .and_then(resolve::username_of)
        {
            names.insert(name.to_lowercase());
        }
        if let Some(email) = resolve::email_of(user, source) {
            names.insert(email.to_lowercase());
        }
    }
    let held = |value: Option<&str>| value.is_some_and(|v| names.contains(&v.to_lowercase()));
    view.links
        .iter()
        .filter(|l| l.directory == directory)
        .filter(|l| {
            view.records
                .get(&(l.kind, l.record_id))
                .is_some_and(|r| held(r.values.username()) || held(r.values.email()))
        })
        .map(|l| l.object_id)
        .collect()
}

/// How a run reaches the store: its write transaction, or (dry run, no store yet) reading only.
enum Access<'s> {
    Write(RunWrite<'s>),
    Read(Option<&'s Store>),
}

impl<'s> Access<'s> {
    fn open(
        store: &'s mut Option<Store>,
        dry_run: bool,
        clock: &dyn Clock,
    ) -> Result<Access<'s>, StoreError> {
        Ok(match store.as_mut() {
            Some(s) if !dry_run => Access::Write(s.begin_run(clock.now_rfc3339())?),
            other => Access::Read(other.map(|s| &*s)),
        })
    }

    fn view(&self, tenant: &str) -> Result<StoreView, StoreError> {
        match self {
            Access::Write(w) => w.view(tenant),
            Access::Read(Some(s)) => s.view(tenant),
            Access::Read(None) => Ok(StoreView::default()),
        }
    }

    fn load_mirror(&self, tenant: &str) -> Result<Snapshot, StoreError> {
        match self {
            Access::Write(w) => w.load_mirror(tenant),
            Access::Read(Some(s)) => s.load_mirror(tenant),
            Access::Read(None) => Ok(Snapshot::default()),
        }
    }

    fn write_mirror(
        &self,
        tenant: &str,
        snapshot: Option<&Snapshot>,
        only: Option<&BTreeSet<ObjectId>>,
        cursors: &crate::store::Cursors,
        deleted: &std::collections::BTreeSet<entra_sync_core::ObjectId>,
    ) -> Result<(), StoreError> {
        match self {
            Access::Write(w) => w.write_mirror(
                tenant,
                &MirrorWrite {
                    snapshot,
                    only,
                    cursors,
                    deleted,
                },
            ),
            Access::Read(_) => Ok(()),
        }
    }
}

/// Who and what a run is, for its `sync_runs` row.
struct RunContext<'a> {
    tenant: &'a TenantConfig,
    mode: RunMode,
    started_at: &'a str,
    opts: &'a SyncOptions,
    clock: &'a dyn Clock,
}

/// Settles what the run leaves open (the plan's reports and holds, or for a run that planned
/// nothing what was open before), sets the outcome's status and counts from it and, unless it
/// is a dry run, applies the plan with its `sync_runs` row and commits the run's transaction.
fn apply_recorded(
    access: Access<'_>,
    run: &RunContext<'_>,
    outcome: &mut TenantOutcome,
    plan: &Plan,
    scope: Option<&Scope>,
    before: OpenState,
) -> Result<(), StoreError> {
    let open = open_after(plan, scope, before);
    outcome.counts = plan.counts();
    outcome.counts.held = open.held_removals();
    outcome.counts.reports = open.reports.len() as i64;
    outcome.hold_reason = plan.hold_reason.clone().or_else(|| open.hold_reason());
    if run.opts.plan_out && !run.opts.allow_mass_deactivation {
        // The plan carries them; applying it will need the flag (SPEC 5.3, exit 3).
        outcome.hold_reason = outcome.hold_reason.take().or(plan.released.clone());
    }
    outcome.pending = open.pending().cloned().collect();
    outcome.reports = open.reports;
    outcome.status = if run.opts.dry_run {
        RunStatus::DryRun
    } else if outcome.counts.held > 0 {
        RunStatus::Held
    } else {
        RunStatus::Success
    };
    let Access::Write(write) = access else {
        return Ok(());
    };
    let record = RunRecord {
        tenant: run.tenant.name.clone(),
        mode: run.mode,
        started_at: run.started_at.to_string(),
        finished_at: Some(run.clock.now_rfc3339()),
        status: outcome.status,
        counts: outcome.counts.clone(),
        graph_requests: outcome.graph_requests as i64,
        error: outcome.hold_reason.clone(),
    };
    write.finish(plan, &record, scope)?;
    Ok(())
}

/// The reports and held changes open after a run: the plan's for a run of everybody, the
/// person's replaced for a `--user` run, unchanged for a run that planned nothing.
fn open_after(plan: &Plan, scope: Option<&Scope>, before: OpenState) -> OpenState {
    match scope {
        None => before,
        Some(Scope::All) => OpenState {
            reports: plan.reports.clone(),
            held: plan
                .held
                .iter()
                .map(|c| HeldChange::of(c, plan.hold_reason.as_deref()))
                .collect(),
            out_of_scope: plan.waiting.iter().map(PendingDeactivation::of).collect(),
        },
        Some(scope @ (Scope::Users(_) | Scope::Touched(_))) => {
            let names = |id: ObjectId| scope.people().is_some_and(|p| p.contains(&id));
            let mut reports: Vec<Report> = before
                .reports
                .into_iter()
                .filter(|r| !names(r.object_id))
                .collect();
            reports.extend(plan.reports.iter().cloned());
            let mut held: Vec<HeldChange> = before
                .held
                .into_iter()
                .filter(|h| !ObjectId::parse(&h.object_id).is_ok_and(names))
                .collect();
            held.extend(
                plan.held
                    .iter()
                    .map(|c| HeldChange::of(c, plan.hold_reason.as_deref())),
            );
            let mut out_of_scope: Vec<PendingDeactivation> = before
                .out_of_scope
                .into_iter()
                .filter(|p| !ObjectId::parse(&p.object_id).is_ok_and(names))
                .collect();
            out_of_scope.extend(plan.waiting.iter().map(PendingDeactivation::of));
            OpenState {
                reports,
                held,
                out_of_scope,
            }
        }
    }
}

/// Logs and counts a failed run and, with `record` (the run holds the writer lock and it is
/// this tenant's turn), records it in `sync_runs`.
fn finish_failed(
    config: &Config,
    opts: &SyncOptions,
    clock: &dyn Clock,
    mut outcome: TenantOutcome,
    started_at: &str,
    record: bool,
) -> TenantOutcome {
    outcome.status = RunStatus::Failed;
    record_metrics(&outcome, clock);
    let error = outcome.error.clone().unwrap_or_default();
    tracing::error!(tenant = %outcome.tenant, "{error}");
    if !opts.dry_run && record {
        let record = RunRecord {
            tenant: outcome.tenant.clone(),
            mode: outcome.mode,
            started_at: started_at.to_string(),
            finished_at: Some(clock.now_rfc3339()),
            status: RunStatus::Failed,
            counts: RunCounts::default(),
            graph_requests: outcome.graph_requests as i64,
            error: Some(error),
        };
        if let Err(e) =
            Store::open(&config.store.path).and_then(|mut s| s.record_failed_run(&record))
        {
            tracing::error!(tenant = %outcome.tenant, "cannot record the failed run: {e}");
        }
    }
    outcome
}

fn record_metrics(o: &TenantOutcome, clock: &dyn Clock) {
    let tenant = o.tenant.clone();
    metrics::counter!("entra_sync_runs_total", "tenant" => tenant.clone(), "result" => o.status.as_str())
        .increment(1);
    let c = &o.counts;
    for (action, n) in [
        ("create", c.created),
        ("update", c.updated),
        ("reactivate", c.reactivated),
        ("deactivate", c.deactivated),
        ("archive", c.archived),
        ("purge", c.purged),
        ("held", c.held),
    ] {
        metrics::counter!("entra_sync_changes_total", "tenant" => tenant.clone(), "action" => action)
            .increment(n.max(0) as u64);
    }
    metrics::histogram!("entra_sync_run_duration_seconds", "tenant" => tenant.clone(), "mode" => o.mode.as_str())
        .record(o.duration_ms as f64 / 1000.0);
    if o.status == RunStatus::Success {
        metrics::gauge!("entra_sync_last_success_timestamp_seconds", "tenant" => tenant)
            .set(clock.now().timestamp() as f64);
    }
}

fn log_outcome(o: &TenantOutcome, clock: &dyn Clock) {
    record_metrics(o, clock);
    for r in &o.reports {
        tracing::warn!(tenant = %o.tenant, user = %r.user, kind = ?r.kind, "{}", r.message);
    }
    if let Some(reason) = &o.hold_reason {
        tracing::warn!(tenant = %o.tenant, held = o.counts.held, "deactivations held: {reason}; run `entra-sync sync --allow-mass-deactivation` to apply them");
    }
    tracing::info!(
        tenant = %o.tenant,
        mode = %o.mode,
        status = o.status.as_str(),
        created = o.counts.created,
        updated = o.counts.updated,
        reactivated = o.counts.reactivated,
        deactivated = o.counts.deactivated,
        archived = o.counts.archived,
        purged = o.counts.purged,
        held = o.counts.held,
        reports = o.counts.reports,
        graph_requests = o.graph_requests,
        duration_ms = o.duration_ms,
        "sync finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_runs_copy_left_behind_is_removed_a_day_later_and_no_sooner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("psa.db");
        Store::open(&store).expect("store");
        let left = dir.path().join(format!("{SCRATCH_PREFIX}killed"));
        std::fs::create_dir(&left).expect("left");
        std::fs::write(left.join("psa.db"), "records").expect("copy");
        let now = SystemClock.now();
        let scratch = Scratch::of(&store, true, now).expect("scratch");
        assert!(
            left.exists(),
            "a copy made just now may be another dry run's"
        );
        assert!(scratch.path.exists() && scratch.before.as_ref().is_some_and(|b| b.exists()));
        assert!(scratch.path.starts_with(dir.path()), "beside the store");
        let kept = scratch.path.clone();
        drop(scratch);
        assert!(!kept.exists(), "removed with the run");
        Scratch::of(&store, false, now + chrono::Duration::hours(25)).expect("scratch");
        assert!(!left.exists(), "a day later it is removed");
        assert!(store.exists());
    }
}
