//! Random histories over graph-sim, the backbone of SPEC 4.13: people join and leave employee,
//! contact and nested groups, change, are disabled, deleted, restored, deleted for good and
//! re-created with the same UPN and mail, and come to want each other's usernames; rules
//! change; admins edit, rename and deactivate records; runs fail, are held and released,
//! resync one person, and time passes past the grace period (half the histories have one) and
//! past retention. A second tenant, listed after the first, has guests who want the first's
//! names: one has person 0's mail (the first tenant wins it, SPEC 4.11), one a UPN that makes
//! person 1's username (usernames are unique across tenants, SPEC 4.8); its runs go on when
//! the first tenant's fail. The guard holds more than one deactivation per run, so holds and
//! releases happen.
//!
//! Three stores follow each history against the same simulated tenant, in-process:
//! - `plain`: the runs as given (incremental where cursors allow);
//! - `full`: the same runs, every one of them `--full`;
//! - `seldom`: only some of the runs (full syncs, releases and the end), with the
//!   mass-deactivation guard off.
//!
//! An admin's local edit is made where every store has just synced (and released its holds);
//! support's `--user` resync (which overwrites local edits) runs on every store.
//!
//! After every step: `plain` and `full` hold the same public tables and open state
//! (incremental ≡ full); every store keeps the invariants (at most one live record per person,
//! no member or link pointing at nothing, the root untouched, nothing deleted but by retention,
//! every held deactivation visible in the open state). At the end, once `plain` has released
//! its holds, `seldom` holds the same live records and memberships (path independence; ids,
//! timestamps and records out of service aside). 200 histories run in `cargo test`;
//! `ENTRA_SYNC_HISTORY_CASES=5000` runs more. A failing history shrinks to a short list of steps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::TimeZone;
use entra_sync::clock::ManualClock;
use entra_sync::config::Config;
use entra_sync::sync::{SyncOptions, SyncSummary, Syncer};
use entra_sync_core::run::RunStatus;
use graph_sim::{Fault, NewUser, UserPatch};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use crate::support::{TestEnv, rows_at};

const PEOPLE: usize = 5;
/// People of the second tenant (listed after the first in the config), who want the names of
/// the first's: guest 0 has person 0's mail (SPEC 4.11: the first-listed tenant wins it),
/// guest 1 a UPN that makes person 1's username (usernames are unique across tenants).
const GUESTS: usize = 2;

fn guest_upn(guest: usize) -> String {
    format!("p{guest}@fabrikam.example")
}

fn guest_mail(guest: usize) -> String {
    match guest {
        0 => upn(0),
        g => format!("q{g}@fabrikam.example"),
    }
}

/// Who a person is in Entra; person 4's UPN collides with the root employee's email.
fn upn(person: usize) -> String {
    match person {
        4 => "root@contoso.com".into(),
        p => format!("p{p}@contoso.com"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Staff,
    Customers,
    /// Inside Staff.
    Nested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Join(usize, Group),
    Leave(usize, Group),
    Retitle(usize),
    Disable(usize),
    Enable(usize),
    SoftDelete(usize),
    Restore(usize),
    /// Deleted for good; the next `Recreate` makes a new account with the same UPN and mail.
    HardDelete(usize),
    Recreate(usize),
    /// Out of every group and into one: a kind change when the kind differs.
    Move(usize, Group),
    /// Two people swap their UPNs (and so their usernames) in one round.
    SwapUpns(usize, usize),
    /// The first person's UPN moves to the second's name at a domain of the first's own: they
    /// now want the second's username (SPEC 4.8) while the second does not change.
    Rehome(usize, usize),
    /// The same, to the name an admin's `LocalRename` gives the second's record: the first
    /// wants it while that record, or its archive, may hold it.
    TakeLocal(usize, usize),
    /// The contact rule wins over the employee rule, or back.
    SwapRuleOrder,
    LocalEdit(usize),
    LocalDeactivate(usize),
    /// An admin renames the person's live record: its email, and an employee's username.
    LocalRename(usize),
    /// A guest of the second tenant joins or leaves its employee (Staff) or contact
    /// (Customers) group; Nested stands for Staff there.
    GuestJoin(usize, Group),
    GuestLeave(usize, Group),
    /// A run that fails at Graph (the first tenant's; the second's runs on).
    Fail,
    Sync,
    /// A full sync, whatever the cursors say.
    FullSync,
    UserRun(usize),
    Release,
    /// 40 days pass: records deactivated before are due for the 30-day retention purge, and
    /// Entra has deleted for good whoever was soft-deleted.
    Age,
    /// 31 minutes pass: past the grace period of histories that have one.
    Wait,
    /// A reviewed plan: `plain` writes `sync --plan-out` and applies it; `full` runs a full
    /// sync that allows mass deactivation (what the applied plan carries).
    Reviewed,
}

fn step() -> impl Strategy<Value = Step> {
    let p = 0..PEOPLE;
    let g = prop_oneof![
        Just(Group::Staff),
        Just(Group::Customers),
        Just(Group::Nested)
    ];
    let g2 = prop_oneof![Just(Group::Staff), Just(Group::Customers)];
    prop_oneof![
        4 => (p.clone(), g.clone()).prop_map(|(p, g)| Step::Join(p, g)),
        3 => (p.clone(), g.clone()).prop_map(|(p, g)| Step::Leave(p, g)),
        3 => (p.clone(), g).prop_map(|(p, g)| Step::Move(p, g)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Step::SwapUpns(a, b)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Step::Rehome(a, b)),
        1 => (p.clone(), p.clone()).prop_map(|(a, b)| Step::TakeLocal(a, b)),
        1 => p.clone().prop_map(Step::Retitle),
        1 => p.clone().prop_map(Step::Disable),
        1 => p.clone().prop_map(Step::Enable),
        1 => p.clone().prop_map(Step::SoftDelete),
        1 => p.clone().prop_map(Step::Restore),
        1 => p.clone().prop_map(Step::HardDelete),
        1 => p.clone().prop_map(Step::Recreate),
        1 => Just(Step::SwapRuleOrder),
        1 => p.clone().prop_map(Step::LocalEdit),
        1 => p.clone().prop_map(Step::LocalDeactivate),
        1 => p.clone().prop_map(Step::LocalRename),
        2 => (0..GUESTS, g2.clone()).prop_map(|(q, g)| Step::GuestJoin(q, g)),
        1 => (0..GUESTS, g2).prop_map(|(q, g)| Step::GuestLeave(q, g)),
        1 => Just(Step::Fail),
        4 => Just(Step::Sync),
        1 => Just(Step::FullSync),
        1 => p.prop_map(Step::UserRun),
        1 => Just(Step::Release),
        1 => Just(Step::Age),
        1 => Just(Step::Wait),
        1 => Just(Step::Reviewed),
    ]
}

/// One store following the history, with its own config, syncer and delta cursors.
struct Store {
    name: &'static str,
    path: PathBuf,
    config_path: PathBuf,
    syncer: Syncer,
    /// Every record id ever seen, to tell deletions from purges.
    seen: BTreeSet<(String, String)>,
}

impl Store {
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        rows_at(&self.path, sql).unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name))
    }

    fn exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute_batch(sql).unwrap();
    }

    async fn sync(&self, opts: SyncOptions) -> SyncSummary {
        let config = Config::load(&self.config_path).unwrap();
        self.syncer
            .run(&config, &opts)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

/// One history being played: the simulated tenant, the people's current accounts, the stores.
struct World {
    env: TestEnv,
    clock: Arc<ManualClock>,
    groups: BTreeMap<&'static str, String>,
    /// Each person's current object id; `None` after a hard delete.
    accounts: Vec<Option<String>>,
    /// The second tenant's groups and its guests' object ids.
    guest_groups: BTreeMap<&'static str, String>,
    guests: Vec<String>,
    /// Every account of the people whose names the guests want, and the guests'.
    contesting: BTreeSet<String>,
    /// Each person's current UPN (their mail stays the one they were created with).
    upns: Vec<String>,
    contact_first: bool,
    /// Whether `plain` and `full` wait 30 minutes before deactivating a user out of scope
    /// (`seldom`, whose runs see departures late anyway, never does).
    grace: bool,
    plain: Store,
    full: Store,
    seldom: Store,
    /// The root employee's row, which no run may change.
    root: Vec<Vec<String>>,
}

fn account(env: &TestEnv, person: usize, upn_now: &str) -> String {
    let local = upn_now.split('@').next().unwrap_or_default().to_string();
    env.sim()
        .add_user(NewUser {
            user_principal_name: upn_now.to_string(),
            display_name: local.clone(),
            given_name: Some(local),
            surname: Some("Test".into()),
            mail: Some(upn(person)),
            job_title: Some("Engineer".into()),
            ..NewUser::default()
        })
        .id
}

const ROOT: &str = "INSERT INTO employees (id, username, email, first_name, active, is_root)
                    VALUES (1000, 'root', 'root@contoso.com', 'Root', 1, 1)";

impl World {
    async fn new(grace: bool) -> World {
        let env = TestEnv::with_tenants(2).await;
        let clock = Arc::new(ManualClock::new(
            chrono::Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        ));
        let mut groups = BTreeMap::new();
        groups.insert("staff", env.group("Staff", 1));
        groups.insert("customers", env.group("Customers", 2));
        groups.insert("nested", env.group("Nested", 3));
        env.add(&groups["staff"], &groups["nested"]);
        let accounts: Vec<Option<String>> = (0..PEOPLE)
            .map(|p| Some(account(&env, p, &upn(p))))
            .collect();
        let mut guest_groups = BTreeMap::new();
        guest_groups.insert("staff", env.group_in(1, "Guest staff", 1));
        guest_groups.insert("customers", env.group_in(1, "Guest customers", 2));
        let guests: Vec<String> = (0..GUESTS)
            .map(|q| {
                env.sims[1]
                    .control()
                    .add_user(NewUser {
                        user_principal_name: guest_upn(q),
                        display_name: format!("guest{q}"),
                        given_name: Some(format!("guest{q}")),
                        surname: Some("Guest".into()),
                        mail: Some(guest_mail(q)),
                        job_title: Some("Guest".into()),
                        ..NewUser::default()
                    })
                    .id
            })
            .collect();
        // Guest g wants person g's names.
        let contesting = guests
            .iter()
            .cloned()
            .chain(accounts.iter().take(GUESTS).flatten().cloned())
            .collect();
        let store = |name: &'static str| {
            let path = env.dir.path().join(format!("{name}.db"));
            let config_path = env.dir.path().join(format!("{name}.toml"));
            Store {
                name,
                path,
                config_path,
                syncer: Syncer::new(Arc::clone(&clock) as Arc<dyn entra_sync::clock::Clock>),
                seen: BTreeSet::new(),
            }
        };
        let mut world = World {
            plain: store("plain"),
            full: store("full"),
            seldom: store("seldom"),
            env,
            clock,
            groups,
            accounts,
            contesting,
            guest_groups,
            guests,
            upns: (0..PEOPLE).map(upn).collect(),
            contact_first: false,
            grace,
            root: Vec::new(),
        };
        world.write_configs();
        for s in [&world.plain, &world.full, &world.seldom] {
            entra_sync::store::Store::open(&s.path).unwrap();
            s.exec(ROOT);
        }
        world.root = world.plain.rows("SELECT * FROM employees WHERE id = 1000");
        world
    }

    fn write_configs(&mut self) {
        let (employee, contact) = if self.contact_first {
            (20, 10)
        } else {
            (10, 20)
        };
        self.env.rules.clear();
        let staff = self.groups["staff"].clone();
        let customers = self.groups["customers"].clone();
        self.env.employee_rule(&staff, employee, Some("Tech"));
        self.env.contact_rule(&customers, contact, true);
        let (staff, customers) = (
            self.guest_groups["staff"].clone(),
            self.guest_groups["customers"].clone(),
        );
        self.env
            .rule(1, &staff, employee, "employee", String::new());
        self.env.rule(
            1,
            &customers,
            contact,
            "contact",
            "portal_access = false".into(),
        );
        self.env.extra_config = "[retention]\npurge_deactivated_after_days = 30\n".into();
        self.env.write_config();
        let text = std::fs::read_to_string(self.env.config_path()).unwrap();
        let default_store = self.env.store_path().display().to_string();
        let guarded = format!(
            "max_deactivations = 1\nmax_deactivation_percent = 0\ndeactivate_after_minutes = {}",
            if self.grace { 30 } else { 0 }
        );
        for (store, guard) in [
            (&self.plain, guarded.as_str()),
            (&self.full, guarded.as_str()),
            (
                &self.seldom,
                "max_deactivations = 0\nmax_deactivation_percent = 0",
            ),
        ] {
            let own = text.replace(&default_store, &store.path.display().to_string());
            std::fs::write(&store.config_path, format!("{own}\n[safety]\n{guard}\n")).unwrap();
        }
    }

    fn group_id(&self, group: Group) -> String {
        match group {
            Group::Staff => self.groups["staff"].clone(),
            Group::Customers => self.groups["customers"].clone(),
            Group::Nested => self.groups["nested"].clone(),
        }
    }

    /// Applies an Entra change; one that does not apply now (restoring someone not deleted)
    /// is nothing, the same for every store.
    fn entra(&mut self, step: Step) {
        let sim = self.env.sim();
        let id = |p: usize| self.accounts[p].clone();
        match step {
            Step::Join(p, g) => {
                if let Some(id) = id(p) {
                    let _ = sim.add_member(&self.group_id(g), &id);
                }
            }
            Step::Leave(p, g) => {
                if let Some(id) = id(p) {
                    let _ = sim.remove_member(&self.group_id(g), &id);
                }
            }
            Step::Move(p, to) => {
                if let Some(id) = id(p) {
                    for g in [Group::Staff, Group::Customers, Group::Nested] {
                        let _ = sim.remove_member(&self.group_id(g), &id);
                    }
                    let _ = sim.add_member(&self.group_id(to), &id);
                }
            }
            Step::Retitle(p) => {
                if let Some(id) = id(p) {
                    let title = sim.user(&id).and_then(|u| u.job_title).unwrap_or_default();
                    let _ = sim.update_user(
                        &id,
                        UserPatch {
                            job_title: Some(Some(format!("{title}+"))),
                            ..UserPatch::default()
                        },
                    );
                }
            }
            Step::Disable(p) | Step::Enable(p) => {
                if let Some(id) = id(p) {
                    let _ = sim.update_user(
                        &id,
                        UserPatch {
                            account_enabled: Some(matches!(step, Step::Enable(_))),
                            ..UserPatch::default()
                        },
                    );
                }
            }
            Step::SoftDelete(p) => {
                if let Some(id) = id(p) {
                    let _ = sim.delete_user(&id);
                }
            }
            Step::Restore(p) => {
                if let Some(id) = id(p) {
                    let _ = sim.restore_user(&id);
                }
            }
            Step::HardDelete(p) => {
                if let Some(id) = id(p) {
                    let _ = sim.hard_delete_user(&id);
                    self.accounts[p] = None;
                }
            }
            // Entra keeps deleted users 30 days: after 40, nobody soft-deleted can be restored.
            Step::Age => {
                for p in 0..PEOPLE {
                    if let Some(id) = self.accounts[p].clone()
                        && sim.user(&id).is_some_and(|u| u.deleted_date_time.is_some())
                    {
                        let _ = sim.hard_delete_user(&id);
                        self.accounts[p] = None;
                    }
                }
            }
            Step::GuestJoin(q, g) | Step::GuestLeave(q, g) => {
                let group = match g {
                    Group::Customers => &self.guest_groups["customers"],
                    Group::Staff | Group::Nested => &self.guest_groups["staff"],
                };
                let guests = self.env.sims[1].control();
                let _ = match step {
                    Step::GuestJoin(..) => guests.add_member(group, &self.guests[q]),
                    _ => guests.remove_member(group, &self.guests[q]),
                };
            }
            Step::Recreate(p) if self.accounts[p].is_none() => {
                let id = account(&self.env, p, &self.upns[p]);
                if p < GUESTS {
                    self.contesting.insert(id.clone());
                }
                self.accounts[p] = Some(id);
            }
            Step::SwapUpns(a, b) if a != b => {
                if let (Some(ida), Some(idb)) = (id(a), id(b)) {
                    let rename = |id: &str, upn: &str| {
                        let _ = sim.update_user(
                            id,
                            UserPatch {
                                user_principal_name: Some(upn.to_string()),
                                ..UserPatch::default()
                            },
                        );
                    };
                    rename(&ida, "swapping@contoso.com");
                    rename(&idb, &self.upns[a]);
                    rename(&ida, &self.upns[b]);
                    self.upns.swap(a, b);
                }
            }
            Step::Rehome(a, b) | Step::TakeLocal(a, b) => {
                if let Some(id) = id(a) {
                    let name = match step {
                        Step::TakeLocal(..) => format!("local{b}"),
                        _ => self.upns[b]
                            .split('@')
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    };
                    let upn = format!("{name}@home{a}.example");
                    let _ = sim.update_user(
                        &id,
                        UserPatch {
                            user_principal_name: Some(upn.clone()),
                            ..UserPatch::default()
                        },
                    );
                    self.upns[a] = upn;
                }
            }
            _ => {}
        }
    }
}

/// What two stores must agree on after the same runs: every public table and the open state,
/// ids aside (records by their values, memberships by the member's email).
fn tables(store: &Store) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for (name, sql) in [
        (
            "employee",
            "SELECT username, email, first_name, last_name, job_title, phone, department,
                    security_role, active, is_root FROM employees",
        ),
        (
            "contact",
            "SELECT account, email, first_name, last_name, job_title, phone, phone_type,
                    portal_access, active FROM contacts",
        ),
        (
            "group",
            "SELECT tenant, object_id, display_name, read_only FROM groups",
        ),
        (
            "member",
            "SELECT g.object_id, m.member_kind, COALESCE(e.email, c.email) FROM group_members m
             JOIN groups g ON g.id = m.group_id
             LEFT JOIN employees e ON m.member_kind = 'employee' AND e.id = m.member_id
             LEFT JOIN contacts c ON m.member_kind = 'contact' AND c.id = m.member_id",
        ),
        (
            "report",
            "SELECT tenant, object_id, kind, message FROM open_reports",
        ),
        (
            "held",
            "SELECT tenant, object_id, record_kind, action FROM held_changes",
        ),
        (
            "pending",
            "SELECT tenant, object_id, since, due FROM pending_deactivations",
        ),
    ] {
        for row in store.rows(sql) {
            let mut r = vec![name.to_string()];
            r.extend(row);
            all.push(r);
        }
    }
    all.sort();
    all
}

/// What a PSA user sees of the synced people: each person's live record and its groups.
fn live(store: &Store) -> Vec<Vec<String>> {
    let mut rows = store.rows(
        "SELECT l.object_id, l.record_kind,
                COALESCE(e.username, ''), COALESCE(e.email, c.email), COALESCE(e.job_title, c.job_title),
                COALESCE(e.security_role, ''), COALESCE(c.portal_access, ''),
                (SELECT group_concat(g.object_id) FROM group_members m JOIN groups g ON g.id = m.group_id
                 WHERE m.member_kind = l.record_kind AND m.member_id = l.record_id)
         FROM sync_links l
         LEFT JOIN employees e ON l.record_kind = 'employee' AND e.id = l.record_id
         LEFT JOIN contacts c ON l.record_kind = 'contact' AND c.id = l.record_id
         WHERE COALESCE(e.active, c.active) = 1",
    );
    rows.sort();
    rows
}

fn check(root: &[Vec<String>], store: &mut Store, step: &Step) -> Result<(), TestCaseError> {
    let at = format!("{} after {step:?}", store.name);
    let live_per_person = store.rows(
        "SELECT l.object_id, COUNT(*) FROM sync_links l
         LEFT JOIN employees e ON l.record_kind = 'employee' AND e.id = l.record_id
         LEFT JOIN contacts c ON l.record_kind = 'contact' AND c.id = l.record_id
         WHERE COALESCE(e.active, c.active) = 1 GROUP BY l.object_id HAVING COUNT(*) > 1",
    );
    prop_assert!(
        live_per_person.is_empty(),
        "{at}: two live records: {live_per_person:?}"
    );
    let dangling = store.rows(
        "SELECT m.member_kind, m.member_id FROM group_members m
         LEFT JOIN employees e ON m.member_kind = 'employee' AND e.id = m.member_id
         LEFT JOIN contacts c ON m.member_kind = 'contact' AND c.id = m.member_id
         WHERE e.id IS NULL AND c.id IS NULL
         UNION ALL
         SELECT l.record_kind, l.record_id FROM sync_links l
         LEFT JOIN employees e ON l.record_kind = 'employee' AND e.id = l.record_id
         LEFT JOIN contacts c ON l.record_kind = 'contact' AND c.id = l.record_id
         WHERE e.id IS NULL AND c.id IS NULL",
    );
    prop_assert!(dangling.is_empty(), "{at}: dangling: {dangling:?}");
    let root_now = store.rows("SELECT * FROM employees WHERE id = 1000");
    prop_assert_eq!(root_now.as_slice(), root, "{}: the root changed", at);
    let now: BTreeSet<(String, String)> = store
        .rows("SELECT 'employee', id FROM employees UNION SELECT 'contact', id FROM contacts")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let purged: BTreeSet<(String, String)> = store
        .rows("SELECT record_kind, record_id FROM change_log WHERE action = 'purge'")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    for gone in store.seen.difference(&now) {
        prop_assert!(purged.contains(gone), "{at}: {gone:?} deleted, not purged");
    }
    store.seen.extend(now);
    Ok(())
}

/// What the histories exercised, summed over every run of every store (printed at the end,
/// so a generator that stopped reaching a case shows).
#[derive(Default)]
struct Seen {
    runs: AtomicU64,
    held: AtomicU64,
    created: AtomicU64,
    reactivated: AtomicU64,
    deactivated: AtomicU64,
    archived: AtomicU64,
    purged: AtomicU64,
    reports: AtomicU64,
    pending: AtomicU64,
}

static SEEN: Seen = Seen {
    runs: AtomicU64::new(0),
    held: AtomicU64::new(0),
    created: AtomicU64::new(0),
    reactivated: AtomicU64::new(0),
    deactivated: AtomicU64::new(0),
    archived: AtomicU64::new(0),
    purged: AtomicU64::new(0),
    reports: AtomicU64::new(0),
    pending: AtomicU64::new(0),
};

impl Seen {
    fn count(&self, summary: &SyncSummary) {
        for t in &summary.tenants {
            let add = |n: &AtomicU64, v: i64| n.fetch_add(v.max(0) as u64, Ordering::Relaxed);
            add(&self.runs, 1);
            add(&self.held, i64::from(t.status == RunStatus::Held));
            add(&self.created, t.counts.created);
            add(&self.reactivated, t.counts.reactivated);
            add(&self.deactivated, t.counts.deactivated);
            add(&self.archived, t.counts.archived);
            add(&self.purged, t.counts.purged);
            add(&self.reports, i64::from(!t.reports.is_empty()));
            add(&self.pending, i64::from(!t.pending.is_empty()));
        }
    }

    fn line(&self) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{} runs: {} held, {} with reports, {} with deactivations pending; records created {}, reactivated {}, deactivated {}, archived {}, purged {}",
            n(&self.runs),
            n(&self.held),
            n(&self.reports),
            n(&self.pending),
            n(&self.created),
            n(&self.reactivated),
            n(&self.deactivated),
            n(&self.archived),
            n(&self.purged)
        )
    }
}

/// The summary of a run the history expects to succeed (or be held), with its open state.
fn expect_ran(summary: &SyncSummary, store: &Store, step: &Step) -> Result<(), TestCaseError> {
    SEEN.count(summary);
    for t in &summary.tenants {
        prop_assert!(
            matches!(t.status, RunStatus::Success | RunStatus::Held),
            "{} {step:?}: {:?} {:?}",
            store.name,
            t.status,
            t.error
        );
        let held = store.rows(&format!(
            "SELECT COUNT(*) FROM held_changes WHERE action IN ('deactivate', 'archive')
             AND tenant = '{}'",
            t.tenant
        ));
        prop_assert_eq!(
            held[0][0].parse::<i64>().unwrap_or(-1),
            t.counts.held,
            "{} {:?}: the summary's held is the open state's",
            store.name,
            step
        );
        prop_assert_eq!(t.status == RunStatus::Held, t.counts.held > 0);
    }
    Ok(())
}

async fn play(
    start: Vec<Option<Group>>,
    steps: Vec<Step>,
    grace: bool,
) -> Result<(), TestCaseError> {
    let mut world = World::new(grace).await;
    // Where everybody starts, synced by every store.
    let swapped = steps.iter().any(|s| {
        matches!(s, Step::SwapUpns(a, b) if a != b)
            || matches!(s, Step::Rehome(..) | Step::TakeLocal(..))
    });
    let mut last: Vec<Step> = start
        .iter()
        .enumerate()
        .filter_map(|(p, g)| g.map(|g| Step::Join(p, g)))
        .collect();
    last.push(Step::FullSync);
    last.extend(steps);
    // Whatever waits out the grace period falls due by the end: a run sees every departure,
    // and the grace period passes.
    last.push(Step::Sync);
    last.push(Step::Wait);
    last.push(Step::Release);
    let guests_joined = last.iter().any(|s| matches!(s, Step::GuestJoin(..)));
    for step in last {
        world.entra(step);
        let opts = |full: bool| SyncOptions {
            full,
            ..SyncOptions::default()
        };
        match step {
            Step::SwapRuleOrder => {
                world.contact_first = !world.contact_first;
                world.write_configs();
            }
            Step::LocalEdit(p) | Step::LocalDeactivate(p) | Step::LocalRename(p) => {
                // An admin edits what every store holds at this point: each syncs first, and
                // releases what it held (`seldom` holds nothing), so all hold the same records.
                let release = |full: bool| SyncOptions {
                    allow_mass_deactivation: true,
                    ..opts(full)
                };
                let a = world.plain.sync(release(false)).await;
                expect_ran(&a, &world.plain, &step)?;
                let b = world.full.sync(release(true)).await;
                expect_ran(&b, &world.full, &step)?;
                if world.grace {
                    // And whoever waits out the grace period has left (`seldom` has none):
                    // an edit made while a departure is pending is undone by no run, and
                    // one made after it by the return (SPEC 4.6), so the stores must agree.
                    world.clock.advance(chrono::Duration::minutes(31));
                    let a = world.plain.sync(release(false)).await;
                    expect_ran(&a, &world.plain, &step)?;
                    let b = world.full.sync(release(true)).await;
                    expect_ran(&b, &world.full, &step)?;
                }
                let seldom = world.seldom.sync(opts(false)).await;
                expect_ran(&seldom, &world.seldom, &step)?;
                let sql = match step {
                    Step::LocalEdit(_) => format!(
                        "UPDATE employees SET job_title = 'Local' WHERE email = '{0}' AND is_root = 0;
                         UPDATE contacts SET job_title = 'Local' WHERE email = '{0}';",
                        upn(p)
                    ),
                    // (Only where one live employee has the email and the name is free, so
                    // every store renames the same record.)
                    Step::LocalRename(_) => format!(
                        "UPDATE employees SET email = 'local{p}@contoso.com', username = 'local{p}'
                         WHERE email = '{0}' AND is_root = 0 AND active = 1
                           AND (SELECT COUNT(*) FROM employees
                                WHERE email = '{0}' AND is_root = 0 AND active = 1) = 1
                           AND NOT EXISTS (SELECT 1 FROM employees WHERE username = 'local{p}');
                         UPDATE contacts SET email = 'local{p}@contoso.com'
                         WHERE email = '{0}' AND active = 1;",
                        upn(p)
                    ),
                    _ => format!(
                        "UPDATE employees SET active = 0 WHERE email = '{0}' AND is_root = 0;
                         UPDATE contacts SET active = 0 WHERE email = '{0}';",
                        upn(p)
                    ),
                };
                for s in [&world.plain, &world.full, &world.seldom] {
                    s.exec(&sql);
                }
            }
            Step::Fail => {
                for (s, full) in [(&world.plain, false), (&world.full, true)] {
                    world
                        .env
                        .sim()
                        .inject_fault(Fault::status("/users/delta", 403, None, 1));
                    let summary = s.sync(opts(full)).await;
                    prop_assert_eq!(summary.tenants[0].status, RunStatus::Failed);
                    let others = SyncSummary {
                        tenants: summary.tenants[1..].to_vec(),
                    };
                    expect_ran(&others, s, &step)?;
                }
                world.env.sim().clear_faults();
            }
            Step::Sync | Step::FullSync | Step::Release => {
                let release = step == Step::Release;
                let plain = SyncOptions {
                    full: step == Step::FullSync,
                    allow_mass_deactivation: release,
                    ..SyncOptions::default()
                };
                let full = SyncOptions {
                    full: true,
                    ..plain.clone()
                };
                let a = world.plain.sync(plain.clone()).await;
                expect_ran(&a, &world.plain, &step)?;
                let b = world.full.sync(full).await;
                expect_ran(&b, &world.full, &step)?;
                if release || step == Step::FullSync {
                    let c = world.seldom.sync(plain).await;
                    expect_ran(&c, &world.seldom, &step)?;
                }
            }
            Step::UserRun(p) => {
                let user = SyncOptions {
                    user: Some(world.upns[p].clone()),
                    ..SyncOptions::default()
                };
                // Support's resync overwrites local edits: an operator's act every store sees.
                for s in [&world.plain, &world.full, &world.seldom] {
                    let config = Config::load(&s.config_path).unwrap();
                    // Nobody by that name (never synced, deleted for good) is an error, not a run.
                    if let Ok(summary) = s.syncer.run(&config, &user).await {
                        expect_ran(&summary, s, &step)?;
                    }
                }
            }
            Step::Reviewed => {
                let planned = world
                    .plain
                    .sync(SyncOptions {
                        dry_run: true,
                        plan_out: true,
                        ..SyncOptions::default()
                    })
                    .await;
                let now = entra_sync::clock::Clock::now_rfc3339(&*world.clock);
                let file = entra_sync::planfile::PlanFile::of(&planned, &now);
                let config = Config::load(&world.plain.config_path).unwrap();
                let applied = entra_sync::planfile::apply(&config, &file, true, &now);
                prop_assert!(applied.is_ok(), "apply: {:?}", applied.err());
                let b = world
                    .full
                    .sync(SyncOptions {
                        full: true,
                        allow_mass_deactivation: true,
                        ..SyncOptions::default()
                    })
                    .await;
                expect_ran(&b, &world.full, &step)?;
            }
            Step::Age => world.clock.advance(chrono::Duration::days(40)),
            Step::Wait => world.clock.advance(chrono::Duration::minutes(31)),
            _ => {}
        }
        check(&world.root, &mut world.plain, &step)?;
        check(&world.root, &mut world.full, &step)?;
        check(&world.root, &mut world.seldom, &step)?;
        prop_assert_eq!(
            tables(&world.plain),
            tables(&world.full),
            "incremental ≠ full after {:?}",
            step
        );
    }
    let seldom = world.seldom.sync(SyncOptions::default()).await;
    expect_ran(&seldom, &world.seldom, &Step::Sync)?;
    // Usernames passed between people can legitimately end apart: a name someone took while
    // its holder was renamed stays taken by the holder's record when the holder left before
    // any run saw the rename (usernames stay unique across inactive records too, SPEC 4.8,
    // and a departed user's new UPN is not readable).
    if !swapped {
        // Retention dates a deactivation by the run that saw it, so a person whose record one
        // store purged (and later made anew) and the other kept (with its local edits) may
        // differ by design (SPEC 4.14): they are left out; everyone else must match.
        let purged_in_one = purged_people(&world.plain)
            .symmetric_difference(&purged_people(&world.seldom))
            .cloned()
            .collect::<BTreeSet<String>>();
        // Names the two tenants contest stay where a run first put them (SPEC 4.11: an email
        // linked to one tenant's record stays there; 4.8: a username stays with its holder),
        // so runs split otherwise may give them to the other tenant's person, and the loser
        // keeps the name an admin gave it, or none: the records of the people who contest
        // them are left out once a guest has joined.
        let contested = |r: &Vec<String>| guests_joined && world.contesting.contains(&r[0]);
        let keep = |rows: Vec<Vec<String>>| -> Vec<Vec<String>> {
            rows.into_iter()
                .filter(|r| !purged_in_one.contains(&r[0]) && !contested(r))
                .collect()
        };
        prop_assert_eq!(
            keep(live(&world.plain)),
            keep(live(&world.seldom)),
            "the same history split into other runs left another store"
        );
    }
    Ok(())
}

/// The object ids whose records the store purged.
fn purged_people(store: &Store) -> BTreeSet<String> {
    store
        .rows("SELECT DISTINCT object_id FROM change_log WHERE action = 'purge' AND object_id IS NOT NULL")
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn cases() -> u32 {
    std::env::var("ENTRA_SYNC_HISTORY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[test]
fn random_histories_keep_every_store_consistent_and_independent_of_how_runs_were_split() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let group = prop_oneof![
        Just(None),
        Just(Some(Group::Staff)),
        Just(Some(Group::Customers)),
        Just(Some(Group::Nested))
    ];
    let histories = (
        proptest::collection::vec(group, PEOPLE),
        proptest::collection::vec(step(), 1..20),
        any::<bool>(),
    );
    let result = runner.run(&histories, |(start, steps, grace)| {
        runtime().block_on(play(start, steps, grace))
    });
    eprintln!("histories: {}", SEEN.line());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Histories the random ones found, kept as they shrank.
#[test]
fn histories_found_before_stay_fixed() {
    let found = [
        (
            // A skipped user's record (its new UPN's name is the root's) lost its group
            // membership to a local deactivation only in runs that planned again.
            vec![None, None, Some(Group::Nested), None, None],
            vec![Step::SwapUpns(2, 4), Step::LocalDeactivate(2), Step::Sync],
        ),
        (
            // Added to a group and deleted before any run saw either, then a full run, then
            // restored: incremental runs never looked for them.
            vec![None; PEOPLE],
            vec![
                Step::Move(1, Group::Staff),
                Step::SoftDelete(1),
                Step::FullSync,
                Step::Restore(1),
            ],
        ),
        (
            // A harness bug: an edit made where one store had held a kind change (the edited
            // record was not there yet) and another had not.
            vec![
                Some(Group::Customers),
                None,
                Some(Group::Staff),
                Some(Group::Staff),
                None,
            ],
            vec![
                Step::Disable(2),
                Step::Move(3, Group::Customers),
                Step::Move(0, Group::Nested),
                Step::Join(0, Group::Staff),
                Step::LocalEdit(0),
            ],
        ),
        (
            // A harness bug, not the product's: a user restored 40 days after being deleted, which
            // Entra cannot do (the incremental run rightly no longer looked for them).
            vec![None, None, None, None, Some(Group::Staff)],
            vec![
                Step::SoftDelete(4),
                Step::FullSync,
                Step::Age,
                Step::Restore(4),
            ],
        ),
        (
            // A harness limit, not the product's: the store that saw a kind change 40 days
            // earlier purged the archived contact (and later made it anew without the local
            // edit); the store that saw it late kept it. Retention dates a deactivation by the
            // run that saw it (SPEC 4.14).
            vec![None; PEOPLE],
            vec![
                Step::Join(1, Group::Customers),
                Step::SwapRuleOrder,
                Step::LocalEdit(1),
                Step::SwapRuleOrder,
                Step::Join(1, Group::Nested),
                Step::Sync,
                Step::Age,
                Step::LocalEdit(0),
                Step::SwapRuleOrder,
            ],
        ),
        (
            // An incremental run planned from the users its rounds touched rewrote them as a
            // `--user` run does: a record an admin deactivated came back although Entra had
            // changed nothing the record holds (SPEC 4.6).
            vec![None, Some(Group::Staff), None, None, None],
            vec![
                Step::LocalDeactivate(1),
                Step::Join(1, Group::Customers),
                Step::LocalEdit(0),
                Step::Join(0, Group::Staff),
            ],
        ),
        (
            // An incremental run planned from the users its rounds touched did not purge
            // what had fallen due: it did not ask whether anything had.
            vec![Some(Group::Customers), None, None, None, None],
            vec![
                Step::Join(0, Group::Staff),
                Step::Sync,
                Step::Move(0, Group::Staff),
                Step::Age,
                Step::Fail,
            ],
        ),
        (
            // Applying a reviewed plan left the mirror and cursors behind the plan: a change
            // undone before the next run left no delta, and the applied kind change stayed.
            vec![
                Some(Group::Nested),
                None,
                Some(Group::Customers),
                None,
                None,
            ],
            vec![
                Step::Move(2, Group::Nested),
                Step::Reviewed,
                Step::Move(2, Group::Customers),
            ],
        ),
        (
            // A username lost to the user holding it: the report named the holder in the run
            // that rewrote the holder's record and the record in a later one, so an idle run
            // and a full one left different open state.
            vec![None, Some(Group::Staff), Some(Group::Staff), None, None],
            vec![Step::Rehome(2, 1), Step::Retitle(1), Step::Fail, Step::Sync],
        ),
        (
            // A user whose record an admin renamed still wants their username: a run that
            // planned only the user who came to want it too gave it away. (The first sync
            // plans the whole tenant, having the rename to see.)
            vec![None, Some(Group::Staff), Some(Group::Staff), None, None],
            vec![
                Step::LocalRename(1),
                Step::Sync,
                Step::Rehome(2, 1),
                Step::Sync,
            ],
        ),
        (
            // Undoing an archive gave the record back the name an admin had given it, which
            // another user had taken meanwhile: the store refused that run and every retry.
            vec![None, Some(Group::Staff), None, None, None],
            vec![
                Step::LocalRename(1),
                Step::Move(1, Group::Customers),
                Step::Sync,
                Step::TakeLocal(2, 1),
                Step::Join(2, Group::Staff),
                Step::Sync,
                Step::Move(1, Group::Staff),
                Step::Sync,
            ],
        ),
        (
            // Across tenants: a reviewed plan of both planned the second tenant's guest
            // against the store without the first tenant's new record, and gave them the
            // username that record takes; applying the file failed on the unique index.
            vec![None; PEOPLE],
            vec![
                Step::GuestJoin(1, Group::Staff),
                Step::Join(1, Group::Staff),
                Step::Reviewed,
            ],
        ),
    ];
    for (start, steps) in found {
        let replay = format!("{start:?} {steps:?}");
        if let Err(e) = runtime().block_on(play(start, steps, false)) {
            panic!("{replay}: {e}");
        }
    }
    // A reviewed plan under changed rules, applied, then the rules changed back: the next
    // incremental run took the rules as unchanged (apply had not recorded which rules the
    // store now stood for) and kept the applied kind change.
    let reviewed = (
        vec![None, None, None, Some(Group::Nested), None],
        vec![
            Step::Join(3, Group::Customers),
            Step::Sync,
            Step::SwapRuleOrder,
            Step::Reviewed,
            Step::SwapRuleOrder,
        ],
    );
    let replay = format!("{reviewed:?}");
    if let Err(e) = runtime().block_on(play(reviewed.0, reviewed.1, false)) {
        panic!("{replay}: {e}");
    }
    // With a grace period.
    let found_with_grace = [
        (
            // A `--user` run after a reviewed plan was applied (which does not move the
            // mirror) planned from a mirror where another user had not joined yet, and noted
            // that user's departure as pending: a run of some people replaced everybody's.
            vec![None, None, Some(Group::Staff), None, None],
            vec![
                Step::Move(0, Group::Staff),
                Step::Reviewed,
                Step::UserRun(2),
            ],
        ),
        (
            // A harness limit: an admin deactivated a record whose user's departure was pending
            // in the stores with a grace period and already applied in the one without; the
            // user's return then undoes the sync's deactivation but not the admin's (SPEC 4.6).
            // Local edits now wait until pending departures have fallen due.
            vec![None, None, None, Some(Group::Staff), None],
            vec![
                Step::Leave(3, Group::Staff),
                Step::LocalDeactivate(3),
                Step::Join(3, Group::Nested),
            ],
        ),
    ];
    for (start, steps) in found_with_grace {
        let replay = format!("{start:?} {steps:?} (grace)");
        if let Err(e) = runtime().block_on(play(start, steps, true)) {
            panic!("{replay}: {e}");
        }
    }
}
