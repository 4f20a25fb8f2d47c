//! graph-sim: a simulated Microsoft identity platform + Graph v1.0 tenant, in-process.
//!
//! [`Sim::start`] binds a port and serves, on one base URL, the token endpoint
//! (`{base}/{tenant}/oauth2/v2.0/token`), the Graph endpoints entra-sync reads
//! (`{base}/v1.0/...`) and a control API (`{base}/_sim/...`, see the crate README).
//! [`SimControl`] offers the control API as plain methods for in-process tests.
//!
//! Module map: `generate` builds the seeded tenant, `tenant` owns the directory and its change
//! log, `render` the property catalogs and JSON shapes, `odata` query options / tokens / error
//! bodies, `token` the token endpoint, `graph` Graph routing and listings, `delta` delta
//! rounds, `batch` JSON batching, `faults` fault injection and transport tricks, `stats`
//! request counts, `server` the HTTP front door, `control` the `/_sim` API, `config` the
//! entra-sync config it can write.

mod assertion;
mod batch;
mod config;
mod control;
mod delta;
mod faults;
mod generate;
mod graph;
mod model;
mod odata;
mod render;
mod ru;
mod server;
mod stats;
mod tenant;
mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use assertion::SimCertificate;
pub use faults::{Fault, FaultKind};
pub use model::{GroupPatch, NewUser, ObjectKind, SimError, SimGroup, SimUser, UserPatch};
pub use stats::SimStats;

use faults::FaultList;
use tenant::{DeltaExpiry, Directory};
use token::TokenStore;

/// Default client (application) id of the simulated app registration.
pub const DEFAULT_CLIENT_ID: &str = "8d3f5a4e-2b1c-4e7a-9f60-5c2d1e0b7a93";
/// Default client secret: distinctive, so a test can grep logs for leaks.
pub const DEFAULT_CLIENT_SECRET: &str = "sim-SECRET-do-not-log-7Q~x";

/// How to build and serve the simulated tenant.
#[derive(Clone)]
pub struct SimOptions {
    /// Live users generated (a few soft-deleted ones are added on top, see docs).
    pub users: usize,
    /// Security groups generated.
    pub groups: usize,
    pub seed: u64,
    /// Server-side maximum page size of member/user listings; the effective page is
    /// `min($top or 100, page_size)`.
    pub page_size: usize,
    /// Items per users/groups delta page (a group and each `members@delta` entry count one).
    pub delta_page_size: usize,
    /// Tenant domain; the token endpoint accepts it or [`SimControl::tenant_guid`].
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime: Duration,
    /// Certificates registered on the app, accepted beside the secret (certificate
    /// credentials: a signed `client_assertion`).
    pub certificates: Vec<SimCertificate>,
    /// Every token and Graph request is answered this long after it arrived (real Graph
    /// answers in 100 ms at best); the control API is not delayed.
    pub latency: Duration,
    /// Graph's per-app-and-tenant resource-unit budget enforced with 429s, scaled by this
    /// factor (1.0: Graph's own; smaller to reach it on a small machine). `None`: every
    /// request is charged (`x-ms-resource-unit`) but none is throttled.
    pub ru_budget_scale: Option<f64>,
    /// Graph's per-app budget across tenants, shared by the simulators of one app's tenants
    /// (`graph-sim --tenants N`); `None`: only the per-app-and-tenant budget applies.
    pub app_budget: Option<Arc<AppBudget>>,
}

/// Graph's per-app resource-unit budget across all tenants (150,000 RU per 20 s, scaled):
/// one per app, shared by the simulators that serve its tenants.
pub struct AppBudget(Mutex<ru::Budget>);

impl AppBudget {
    pub fn new(scale: f64) -> Arc<AppBudget> {
        Arc::new(AppBudget(Mutex::new(ru::Budget::new(
            ru::APP_QUOTA * scale.max(1e-6),
            ru::APP_WINDOW,
        ))))
    }
}

impl std::fmt::Debug for AppBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppBudget")
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            users: 50,
            groups: 6,
            seed: 1,
            page_size: 999,
            delta_page_size: 200,
            tenant: "contoso.onmicrosoft.com".to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: DEFAULT_CLIENT_SECRET.to_owned(),
            token_lifetime: Duration::from_secs(3599),
            certificates: Vec::new(),
            latency: Duration::ZERO,
            ru_budget_scale: None,
            app_budget: None,
        }
    }
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("users", &self.users)
            .field("groups", &self.groups)
            .field("seed", &self.seed)
            .field("page_size", &self.page_size)
            .field("delta_page_size", &self.delta_page_size)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("token_lifetime", &self.token_lifetime)
            .field("certificates", &self.certificates.len())
            .field("latency", &self.latency)
            .field("ru_budget_scale", &self.ru_budget_scale)
            .field("app_budget", &self.app_budget.is_some())
            .finish()
    }
}

type TransitiveCache = HashMap<Uuid, (u64, Arc<Vec<(Uuid, ObjectKind)>>)>;

/// State shared by every request handler and control handle.
pub(crate) struct Shared {
    pub opts: SimOptions,
    pub base_url: String,
    pub tenant_guid: String,
    /// Random per start: delta tokens of another simulator instance are not found.
    pub instance: u64,
    pub certificates: Vec<assertion::Registered>,
    pub seen_jti: Mutex<assertion::SeenJti>,
    /// The per-app-and-tenant RU budget, when enforced.
    pub budget: Option<Mutex<ru::Budget>>,
    pub dir: RwLock<Directory>,
    pub tokens: Mutex<TokenStore>,
    pub faults: Mutex<FaultList>,
    pub stats: Mutex<SimStats>,
    pub transitive_cache: Mutex<TransitiveCache>,
    pub delta_cache: Mutex<delta::Cache>,
}

/// Locks that survive a panicked holder (the data is still consistent: every mutation is
/// applied before it is logged).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Charges `cost` RU for one Graph request or `$batch` item: `Ok(headers)` to add to its
    /// answer, or the 429 Graph answers when the budget is spent.
    pub(crate) fn charge(&self, cost: u32) -> Result<Vec<(String, String)>, odata::ApiError> {
        // Both budgets are charged either way (Graph keeps counting while it throttles).
        let app = self
            .opts
            .app_budget
            .as_ref()
            .map(|b| lock(&b.0).charge(cost))
            .unwrap_or(ru::Verdict::Served(0.0));
        let tenant = self
            .budget
            .as_ref()
            .map(|b| lock(b).charge(cost))
            .unwrap_or(ru::Verdict::Served(0.0));
        let mut stats = lock(&self.stats);
        stats.resource_units += u64::from(cost);
        let throttled = match (&tenant, &app) {
            (ru::Verdict::Throttled(t), ru::Verdict::Throttled(a)) if a > t => {
                Some(("Application", *a))
            }
            (ru::Verdict::Throttled(t), _) => Some(("Tenant_Application", *t)),
            (_, ru::Verdict::Throttled(a)) => Some(("Application", *a)),
            _ => None,
        };
        match throttled {
            None => {
                let share = |v: &ru::Verdict| match v {
                    ru::Verdict::Served(share) => *share,
                    ru::Verdict::Throttled(_) => 0.0,
                };
                let share = share(&tenant).max(share(&app));
                let mut headers = vec![("x-ms-resource-unit".to_owned(), cost.to_string())];
                if share > 0.8 {
                    headers.push((
                        "x-ms-throttle-limit-percentage".to_owned(),
                        format!("{share:.1}"),
                    ));
                }
                Ok(headers)
            }
            Some((scope, wait)) => {
                *stats.throttled.entry(scope.to_owned()).or_insert(0) += 1;
                Err(
                    odata::ApiError::for_status(429, Some(&wait.as_secs().to_string()))
                        .with_header(
                            "x-ms-throttle-scope",
                            format!(
                                "{scope}/ReadWrite/{}/{}",
                                self.opts.client_id, self.tenant_guid
                            ),
                        )
                        .with_header("x-ms-throttle-information", "ResourceUnitLimitExceeded")
                        .with_header("x-ms-resource-unit", cost.to_string()),
                )
            }
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.dir.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        self.dir.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Transitive members of a group, cached until the next membership change.
    pub(crate) fn transitive(&self, dir: &Directory, group: &Uuid) -> Arc<Vec<(Uuid, ObjectKind)>> {
        let mut cache = lock(&self.transitive_cache);
        if let Some((version, list)) = cache.get(group)
            && *version == dir.membership_version
        {
            return list.clone();
        }
        let list = Arc::new(dir.transitive_members(group));
        if cache.len() > 256 {
            cache.clear();
        }
        cache.insert(*group, (dir.membership_version, list.clone()));
        list
    }
}

fn tenant_guid_for(seed: u64) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x007e_4a47_5eed);
    uuid::Builder::from_random_bytes(rng.r#gen())
        .into_uuid()
        .to_string()
}

/// A running simulator.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Sim {
    /// Builds the tenant and serves it on `127.0.0.1:0`.
    pub async fn start(opts: SimOptions) -> anyhow::Result<Sim> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Sim::start_on(listener, opts).await
    }

    /// Builds the tenant and serves it on a listener the caller bound.
    pub async fn start_on(listener: TcpListener, opts: SimOptions) -> anyhow::Result<Sim> {
        anyhow::ensure!(opts.page_size >= 1, "page_size must be at least 1");
        anyhow::ensure!(
            opts.delta_page_size >= 2,
            "delta_page_size must be at least 2"
        );
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let base_url = format!("http://{addr}");
        let (users, groups, seed, tenant) =
            (opts.users, opts.groups, opts.seed, opts.tenant.clone());
        let generated =
            tokio::task::spawn_blocking(move || generate::generate(users, groups, seed, &tenant))
                .await?;
        let certificates = assertion::register(&opts.certificates)?;
        let budget = opts.ru_budget_scale.map(|scale| {
            Mutex::new(ru::Budget::new(
                ru::tenant_quota(opts.users) * scale.max(1e-6),
                Duration::from_secs(10),
            ))
        });
        let shared = Arc::new(Shared {
            tenant_guid: tenant_guid_for(opts.seed),
            certificates,
            seen_jti: Mutex::new(assertion::SeenJti::default()),
            budget,
            opts,
            base_url,
            instance: rand::random(),
            dir: RwLock::new(generated.dir),
            tokens: Mutex::new(TokenStore::default()),
            faults: Mutex::new(FaultList::default()),
            stats: Mutex::new(SimStats::default()),
            transitive_cache: Mutex::new(HashMap::new()),
            delta_cache: Mutex::new(delta::Cache::default()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, shared.clone(), async move {
            let _ = stopped.await;
        }));
        tracing::debug!(base_url = %shared.base_url, "graph-sim listening");
        Ok(Sim {
            shared,
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the authority and the Graph base URL.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> SimControl {
        SimControl {
            shared: self.shared.clone(),
        }
    }

    /// An entra-sync config for this tenant (one rule per security group).
    pub fn config_toml(&self, store_path: &Path, secret_file: &Path) -> String {
        config::config_toml(&self.shared, store_path, secret_file)
    }

    /// The entra-sync config for several simulators of one app (`--tenants N`): tenants
    /// `sim0`, `sim1`, … with their rules.
    pub fn fleet_config_toml(sims: &[&Sim], store_path: &Path, secret_file: &Path) -> String {
        let shared: Vec<Arc<Shared>> = sims.iter().map(|s| s.shared.clone()).collect();
        config::fleet_config_toml(&shared, store_path, secret_file)
    }

    /// Writes an entra-sync config for this tenant to `config` and the app's client secret
    /// beside it (`sim.secret`, mode 0600); the store is `store`, or `psa.db` beside the config.
    pub fn write_config(&self, config: &Path, store: Option<&Path>) -> std::io::Result<()> {
        Sim::write_fleet_config(&[self], config, store)
    }

    /// The same for several simulators of one app (`--tenants N`; one of them: the plain
    /// config with tenant `sim`).
    pub fn write_fleet_config(
        sims: &[&Sim],
        config: &Path,
        store: Option<&Path>,
    ) -> std::io::Result<()> {
        let Some(first) = sims.first() else {
            return Ok(());
        };
        let dir = config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let secret_file = dir.join("sim.secret");
        write_private(&secret_file, first.shared.opts.client_secret.as_bytes())?;
        let store = store.map_or_else(|| dir.join("psa.db"), Path::to_path_buf);
        let secret_abs = std::path::absolute(&secret_file)?;
        let store_abs = std::path::absolute(&store)?;
        let text = match sims {
            [one] => one.config_toml(&store_abs, &secret_abs),
            all => Sim::fleet_config_toml(all, &store_abs, &secret_abs),
        };
        std::fs::write(config, text)
    }

    /// Stops serving; requests still running get up to two seconds to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// A handle to change and inspect the running tenant in-process (same abilities as `/_sim/`).
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl SimControl {
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn tenant(&self) -> String {
        self.shared.opts.tenant.clone()
    }

    pub fn tenant_guid(&self) -> String {
        self.shared.tenant_guid.clone()
    }

    pub fn client_id(&self) -> String {
        self.shared.opts.client_id.clone()
    }

    /// Live (not deleted) users, ordered by id.
    pub fn users(&self) -> Vec<SimUser> {
        let dir = self.shared.read();
        dir.users
            .values()
            .filter(|u| u.deleted_date_time.is_none())
            .cloned()
            .collect()
    }

    /// Soft-deleted users (in deletedItems).
    pub fn deleted_users(&self) -> Vec<SimUser> {
        let dir = self.shared.read();
        dir.users
            .values()
            .filter(|u| u.deleted_date_time.is_some())
            .cloned()
            .collect()
    }

    /// A user by id, live or soft-deleted.
    pub fn user(&self, id: &str) -> Option<SimUser> {
        let id = Uuid::parse_str(id).ok()?;
        self.shared.read().users.get(&id).cloned()
    }

    /// A live user by id or UPN (case-insensitive).
    pub fn find_user(&self, id_or_upn: &str) -> Option<SimUser> {
        self.shared.read().find_user(id_or_upn).cloned()
    }

    /// Live groups (security and Microsoft 365), ordered by id.
    pub fn groups(&self) -> Vec<SimGroup> {
        let dir = self.shared.read();
        dir.groups
            .values()
            .filter(|g| g.deleted.is_none())
            .map(|g| g.view())
            .collect()
    }

    /// Live security groups ordered by `createdDateTime` (the ones `config_toml` writes rules for).
    pub fn security_groups(&self) -> Vec<SimGroup> {
        let mut v: Vec<SimGroup> = self
            .groups()
            .into_iter()
            .filter(|g| g.security_enabled && g.group_types.is_empty())
            .collect();
        v.sort_by(|a, b| {
            a.created_date_time
                .cmp(&b.created_date_time)
                .then(a.id.cmp(&b.id))
        });
        v
    }

    pub fn group(&self, id: &str) -> Option<SimGroup> {
        let id = Uuid::parse_str(id).ok()?;
        self.shared.read().live_group(&id).map(|g| g.view())
    }

    /// Ids of every object reached through nested groups (deduplicated, no soft-deleted users).
    pub fn transitive_member_ids(&self, group_id: &str) -> Vec<String> {
        let Ok(id) = Uuid::parse_str(group_id) else {
            return Vec::new();
        };
        let dir = self.shared.read();
        dir.transitive_members(&id)
            .into_iter()
            .filter(|(m, k)| dir.member_visible(m, *k))
            .map(|(m, _)| m.to_string())
            .collect()
    }

    pub fn add_user(&self, user: NewUser) -> SimUser {
        self.shared.write().add_user(user)
    }

    pub fn update_user(&self, id: &str, patch: UserPatch) -> Result<SimUser, SimError> {
        self.shared.write().update_user(id, patch)
    }

    pub fn disable_user(&self, id: &str) -> Result<SimUser, SimError> {
        self.update_user(
            id,
            UserPatch {
                account_enabled: Some(false),
                ..UserPatch::default()
            },
        )
    }

    /// Soft delete: the user moves to deletedItems, leaves /members listings and 404s on
    /// /users/{id}, but keeps its memberships (group delta keeps it as a member).
    pub fn delete_user(&self, id: &str) -> Result<(), SimError> {
        self.shared.write().delete_user(id)
    }

    /// Permanent delete (also of a live user): memberships end, delta reports `deleted`.
    pub fn hard_delete_user(&self, id: &str) -> Result<(), SimError> {
        self.shared.write().hard_delete_user(id)
    }

    /// Restore a soft-deleted user with its memberships.
    pub fn restore_user(&self, id: &str) -> Result<SimUser, SimError> {
        self.shared.write().restore_user(id)
    }

    /// A new security group (no members).
    pub fn create_group(&self, display_name: &str, created: DateTime<Utc>) -> SimGroup {
        self.shared.write().create_group(display_name, created)
    }

    pub fn update_group(&self, id: &str, patch: GroupPatch) -> Result<SimGroup, SimError> {
        self.shared.write().update_group(id, patch)
    }

    /// Permanently delete a group (security groups skip deletedItems).
    pub fn delete_group(&self, id: &str) -> Result<(), SimError> {
        self.shared.write().delete_group(id)
    }

    /// Add a user, group, device or contact to a group (no-op if already a member).
    pub fn add_member(&self, group_id: &str, member_id: &str) -> Result<(), SimError> {
        self.shared.write().add_member(group_id, member_id)
    }

    pub fn remove_member(&self, group_id: &str, member_id: &str) -> Result<(), SimError> {
        self.shared.write().remove_member(group_id, member_id)
    }

    pub fn inject_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.shared.faults).list()
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every delta token issued so far (nextLinks and deltaLinks) answers
    /// `400 syncStateNotFound` from now on.
    pub fn expire_delta_tokens(&self) {
        self.expire_delta_tokens_with(400);
    }

    /// Like [`Self::expire_delta_tokens`] with the status to answer: 400 (code
    /// `syncStateNotFound`) or 410 Gone (code `syncStateNotFound`, `Location` = the initial query).
    pub fn expire_delta_tokens_with(&self, status: u16) {
        let mut dir = self.shared.write();
        let epoch = dir.expiry.map_or(0, |e| e.epoch) + 1;
        dir.expiry = Some(DeltaExpiry { epoch, status });
    }

    /// Every access token issued so far is expired from now on.
    pub fn expire_access_tokens(&self) {
        lock(&self.shared.tokens).expire_all();
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.shared.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = SimStats::default();
    }
}

/// Writes `bytes` to a file only its owner can read (a client secret).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)
}
