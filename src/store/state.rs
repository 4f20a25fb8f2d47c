//! What outlives a run: which directory each tenant name stands for (and what follows a
//! rename), each tenant's open reports and held deactivations (SPEC 4.12, 5.3), and the small
//! reads that tell a run whether it must plan again although Entra brought nothing.
//!
//! Reads and writes only; what the state means is decided in the core.

use std::collections::{BTreeMap, BTreeSet};

use entra_sync_core::ObjectId;
use entra_sync_core::id::{Email, Username};
use entra_sync_core::plan::{Change, Plan, RecordRef, Scope, Waiting};
use entra_sync_core::record::{RecordKind, Values};
use entra_sync_core::resolve::{Report, ReportKind, Wants};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{IdText, Store, StoreError};

/// Tables keyed by a tenant's config name: they follow a rename of the tenant entry.
const BY_TENANT_NAME: &[&str] = &[
    "groups",
    "entra_users",
    "entra_groups",
    "entra_members",
    "delta_cursors",
    "open_reports",
    "unheld_names",
    "held_changes",
    "pending_deactivations",
    "tenant_state",
    "entra_departed",
    "sync_runs",
    "sync_reports",
    "change_log",
];

/// A deactivation or kind change held by the safety limits, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldChange {
    pub object_id: String,
    pub user: String,
    pub action: String,
    pub record_kind: String,
    pub record_id: Option<i64>,
    pub reason: String,
    pub since: String,
}

impl HeldChange {
    /// A held change of a plan, as it is kept.
    pub fn of(change: &Change, reason: Option<&str>) -> HeldChange {
        HeldChange {
            object_id: change.object_id.to_string(),
            user: change.user.to_string(),
            action: change.action.as_str().to_string(),
            record_kind: change.kind.as_str().to_string(),
            record_id: match change.record {
                RecordRef::Existing(id) => Some(id),
                RecordRef::New(_) => None,
            },
            reason: reason.unwrap_or_default().to_string(),
            since: String::new(),
        }
    }

    /// Whether it takes a record out of service (what the limits count).
    pub fn removes(&self) -> bool {
        matches!(self.action.as_str(), "deactivate" | "archive")
    }
}

/// A user out of scope whose records have not left service yet (SPEC 2, the grace period):
/// waiting until `due`, or fallen due and held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingDeactivation {
    pub object_id: String,
    pub user: String,
    /// When a run first saw them out of scope.
    pub since: String,
    /// When their records leave service (with the grace period of the last run).
    pub due: String,
}

impl PendingDeactivation {
    /// A plan's waiting user, as it is kept.
    pub fn of(w: &Waiting) -> PendingDeactivation {
        PendingDeactivation {
            object_id: w.object_id.to_string(),
            user: w.user.clone(),
            since: w.since.clone(),
            due: w.due.clone(),
        }
    }
}

/// A tenant's open reports, held changes and pending deactivations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpenState {
    pub reports: Vec<Report>,
    pub held: Vec<HeldChange>,
    /// Every user out of scope whose records still serve, held ones included.
    pub out_of_scope: Vec<PendingDeactivation>,
}

impl OpenState {
    /// Held deactivations and archives (what the summary's `held` counts).
    pub fn held_removals(&self) -> i64 {
        self.held.iter().filter(|h| h.removes()).count() as i64
    }

    /// The deactivations waiting out the grace period (held ones aside).
    pub fn pending(&self) -> impl Iterator<Item = &PendingDeactivation> {
        self.out_of_scope
            .iter()
            .filter(|p| !self.held.iter().any(|h| h.object_id == p.object_id))
    }

    /// Why they are held (the reason of the latest hold).
    pub fn hold_reason(&self) -> Option<String> {
        self.held.iter().map(|h| h.reason.clone()).max()
    }

    /// How `status --json` and `/status` show it, with the tenant's count of records
    /// carrying local edits ([`Store::local_edits`]).
    pub fn as_json(&self, local_edits: i64) -> serde_json::Value {
        serde_json::json!({
            "local_edits": local_edits,
            "held": self.held_removals(),
            "hold_reason": self.hold_reason(),
            "held_changes": self.held,
            "pending_deactivations": self.pending().collect::<Vec<_>>(),
            "reports": self.reports,
        })
    }
}

impl Store {
    /// The directory the tenant `name` with `tenant_id` was last found to be, if the config
    /// still says the same.
    pub fn known_directory(
        &self,
        name: &str,
        tenant_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT directory FROM tenant_directories WHERE name = ?1 AND tenant_id = ?2",
                [name, tenant_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that the tenant entry `name` (`tenant_id` in the config) is `directory`. When
    /// another name stood for that directory, the tenant was renamed: every table keyed by the
    /// name follows. Links written before links were keyed by directory are upgraded.
    pub fn register_directory(
        &mut self,
        name: &str,
        tenant_id: &str,
        directory: &str,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let previous: Option<(String, String)> = tx
            .query_row(
                "SELECT tenant_id, directory FROM tenant_directories WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((_, before)) = previous.as_ref().filter(|(_, d)| d != directory) {
            // The name now stands for another directory: what it held belongs to the old one,
            // parked under a name of its own until an entry for that directory claims it.
            let parked = format!("{name}~{before}");
            for table in BY_TENANT_NAME {
                tx.execute(
                    &format!("UPDATE {table} SET tenant = ?1 WHERE tenant = ?2"),
                    [parked.as_str(), name],
                )?;
            }
            tx.execute(
                "UPDATE tenant_directories SET name = ?1 WHERE name = ?2",
                [parked.as_str(), name],
            )?;
        }
        let old_names: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT name FROM tenant_directories WHERE directory = ?1 AND name <> ?2",
            )?;
            let rows = stmt.query_map([directory, name], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for old in &old_names {
            tracing::info!(tenant = name, was = %old, "tenant renamed in the config; its records, links and state follow");
            for table in BY_TENANT_NAME {
                tx.execute(
                    &format!("UPDATE {table} SET tenant = ?1 WHERE tenant = ?2"),
                    [name, old.as_str()],
                )?;
            }
            tx.execute(
                "UPDATE sync_links SET directory = ?1 WHERE directory = ?2",
                [directory, old.as_str()],
            )?;
            tx.execute("DELETE FROM tenant_directories WHERE name = ?1", [old])?;
        }
        tx.execute(
            "UPDATE sync_links SET directory = ?1 WHERE directory = ?2",
            [directory, name],
        )?;
        tx.execute(
            "INSERT INTO tenant_directories (name, tenant_id, directory) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET tenant_id = excluded.tenant_id, directory = excluded.directory",
            [name, tenant_id, directory],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The tenant's open reports and held changes.
    pub fn open_state(&self, tenant: &str) -> Result<OpenState, StoreError> {
        read_state(&self.conn, tenant)
    }

    /// When the tenant's next retention purge falls due (see `Plan::purge_watch`).
    pub fn purge_watch(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT purge_watch FROM tenant_state WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Whether someone but the sync edited what the planner reads since the tenant's last
    /// plan of all its users (migration 08; never planned so: edited).
    pub fn edited_since_whole_plan(&self, tenant: &str) -> Result<bool, StoreError> {
        // Outside the sync's transaction the marker table is empty: a row there was left by
        // someone else, and the triggers have not counted since.
        let stray: bool =
            self.conn
                .query_row("SELECT EXISTS (SELECT 1 FROM sync_writing)", [], |r| {
                    r.get(0)
                })?;
        Ok(stray || edited_since_whole_plan(&self.conn, tenant)?)
    }

    /// Of `users`, those who may be coming back without a membership change (a restore): the
    /// mirror lost their last membership since `departed_after`, or a record of theirs is
    /// linked in `directory`.
    pub fn returning_users(
        &self,
        tenant: &str,
        directory: &str,
        users: &[ObjectId],
        departed_after: &str,
    ) -> Result<BTreeSet<ObjectId>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM entra_departed
                            WHERE tenant = ?1 AND object_id = ?3 AND since > ?4)
                 OR EXISTS (SELECT 1 FROM sync_links WHERE directory = ?2 AND object_id = ?3)",
        )?;
        let mut out = BTreeSet::new();
        for user in users {
            let known: bool = stmt.query_row(
                params![tenant, directory, IdText::of(*user), departed_after],
                |r| r.get(0),
            )?;
            if known {
                out.insert(*user);
            }
        }
        Ok(out)
    }

    /// How many of the tenant's synced records differ from what the sync last wrote to them
    /// (local edits, a local deactivation included): the next change of their user in Entra
    /// overwrites them (SPEC 4.6). Read for `status`, not by runs.
    pub fn local_edits(&self, tenant: &str) -> Result<i64, StoreError> {
        let mut total = 0;
        for kind in [RecordKind::Employee, RecordKind::Contact] {
            let sample = match kind {
                RecordKind::Employee => Values::Employee(Default::default()),
                RecordKind::Contact => Values::Contact(Default::default()),
            };
            let differs: Vec<String> = sample
                .cells()
                .iter()
                .map(|(c, _)| format!("json_extract(l.source, '$.{c}') IS NOT r.{c}"))
                .collect();
            let sql = format!(
                "SELECT COUNT(*) FROM sync_links l
                 JOIN {table} r ON r.id = l.record_id
                 WHERE l.record_kind = ?2 AND l.state = 'synced'
                   AND l.directory = (SELECT directory FROM tenant_directories WHERE name = ?1)
                   AND (r.active = 0 OR {})",
                differs.join(" OR "),
                table = match kind {
                    RecordKind::Employee => "employees",
                    RecordKind::Contact => "contacts",
                }
            );
            let n: i64 = self
                .conn
                .query_row(&sql, params![tenant, kind.as_str()], |r| r.get(0))?;
            total += n;
        }
        Ok(total)
    }

    /// The directory names known to the store: directory → tenant name.
    pub fn directory_names(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT directory, name FROM tenant_directories")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// See [`Store::edited_since_whole_plan`].
pub(crate) fn edited_since_whole_plan(conn: &Connection, tenant: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT (SELECT count FROM store_edits)
                IS NOT (SELECT edits_seen FROM tenant_state WHERE tenant = ?1)",
        [tenant],
        |r| r.get(0),
    )?)
}

/// Marks `tenant` to be planned whole by its next run (as if edited behind the sync's back).
pub(crate) fn plan_whole_next(conn: &Connection, tenant: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tenant_state SET edits_seen = NULL WHERE tenant = ?1",
        [tenant],
    )?;
    Ok(())
}

/// The other tenants with a user who wants one of the names `plan`'s changes give or take
/// (usernames are unique across all employees, and an email another tenant's record holds
/// stays there: SPEC 4.8, 4.11), reported about it or holding a renamed record: a full run of
/// theirs would now decide them differently, so their next run plans the whole tenant.
pub(crate) fn names_moved_for_others(tx: &Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    let mut emails = std::collections::HashSet::new();
    let mut usernames = std::collections::HashSet::new();
    for change in plan.changes.iter().filter(|c| !c.action.bookkeeping()) {
        for values in change.before.iter().chain([&change.after]) {
            emails.extend(values.email_key());
            usernames.extend(values.username_key());
        }
    }
    if emails.is_empty() && usernames.is_empty() {
        return Ok(());
    }
    let mut tenants = BTreeSet::new();
    let mut stmt = tx.prepare_cached(
        "SELECT tenant, wants_email, wants_username FROM open_reports WHERE tenant <> ?1
         UNION ALL
         SELECT tenant, wants_email, wants_username FROM unheld_names WHERE tenant <> ?1",
    )?;
    let rows = stmt.query_map([&plan.tenant], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (tenant, email, username) = row?;
        let moved = email.is_some_and(|e| emails.contains(&Email::new(&e)))
            || username.is_some_and(|u| usernames.contains(&Username::new(&u)));
        if moved {
            tenants.insert(tenant);
        }
    }
    for tenant in tenants {
        plan_whole_next(tx, &tenant)?;
    }
    Ok(())
}

fn read_state(conn: &Connection, tenant: &str) -> Result<OpenState, StoreError> {
    let mut state = OpenState::default();
    let mut stmt = conn.prepare(
        "SELECT object_id, kind, user, message, wants_email, wants_username FROM open_reports
         WHERE tenant = ?1 ORDER BY kind, object_id",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok((
            (
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ),
            Wants {
                email: r.get::<_, Option<String>>(4)?.as_deref().map(Email::new),
                username: r.get::<_, Option<String>>(5)?.as_deref().map(Username::new),
            },
        ))
    })?;
    for row in rows {
        let ((object_id, kind, user, message), wants) = row?;
        let (Ok(object_id), Ok(kind)) = (
            ObjectId::parse(&object_id),
            serde_json::from_value::<ReportKind>(serde_json::Value::String(kind)),
        ) else {
            continue;
        };
        state.reports.push(Report {
            kind,
            object_id,
            user,
            message,
            wants,
        });
    }
    let mut stmt = conn.prepare(
        "SELECT object_id, user, action, record_kind, record_id, reason, since FROM held_changes
         WHERE tenant = ?1 ORDER BY object_id, record_kind, action",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok(HeldChange {
            object_id: r.get(0)?,
            user: r.get(1)?,
            action: r.get(2)?,
            record_kind: r.get(3)?,
            record_id: r.get(4)?,
            reason: r.get(5)?,
            since: r.get(6)?,
        })
    })?;
    state.held = rows.collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT object_id, user, since, due FROM pending_deactivations WHERE tenant = ?1
         ORDER BY due, object_id",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok(PendingDeactivation {
            object_id: r.get(0)?,
            user: r.get(1)?,
            since: r.get(2)?,
            due: r.get(3)?,
        })
    })?;
    state.out_of_scope = rows.collect::<Result<_, _>>()?;
    Ok(state)
}

fn kind_text(kind: ReportKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Writes what `plan` leaves open: for a run of every user, the tenant's reports and held
/// changes are replaced; for a `--user` run, only that person's. A report or hold that stays
/// keeps the time it was first seen.
pub(crate) fn write_state(
    tx: &Transaction<'_>,
    plan: &Plan,
    scope: &Scope,
    now: &str,
) -> Result<(), StoreError> {
    let tenant = plan.tenant.as_str();
    let before = read_state(tx, tenant)?;
    let report_since: BTreeMap<(String, String), String> = {
        let mut stmt =
            tx.prepare("SELECT object_id, kind, since FROM open_reports WHERE tenant = ?1")?;
        let rows = stmt.query_map([tenant], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let held_since: BTreeMap<(String, String, String), String> = before
        .held
        .iter()
        .map(|h| {
            (
                (h.object_id.clone(), h.record_kind.clone(), h.action.clone()),
                h.since.clone(),
            )
        })
        .collect();
    match scope {
        Scope::All => {
            tx.execute("DELETE FROM open_reports WHERE tenant = ?1", [tenant])?;
            tx.execute("DELETE FROM unheld_names WHERE tenant = ?1", [tenant])?;
            tx.execute("DELETE FROM held_changes WHERE tenant = ?1", [tenant])?;
            tx.execute(
                "DELETE FROM pending_deactivations WHERE tenant = ?1",
                [tenant],
            )?;
            // A plan of all users saw every edit made so far (read in this transaction).
            tx.execute(
                "INSERT INTO tenant_state (tenant, purge_watch, edits_seen)
                 VALUES (?1, ?2, (SELECT count FROM store_edits))
                 ON CONFLICT (tenant) DO UPDATE SET purge_watch = excluded.purge_watch,
                     edits_seen = excluded.edits_seen",
                params![tenant, plan.purge_watch],
            )?;
        }
        Scope::Users(users) | Scope::Touched(users) => {
            // A `--user` run rewrites its person's records whatever an admin did to them,
            // which can free a name someone it does not plan waits for: the next run plans
            // everybody. (A run planned from a change planned whoever wants its names.)
            if matches!(scope, Scope::Users(_)) && plan.writes_records() {
                plan_whole_next(tx, tenant)?;
            }
            if let Some(watch) = &plan.purge_watch {
                tx.execute(
                    "INSERT INTO tenant_state (tenant, purge_watch) VALUES (?1, ?2)
                     ON CONFLICT (tenant) DO UPDATE SET purge_watch = CASE
                         WHEN purge_watch IS NULL OR purge_watch > excluded.purge_watch
                         THEN excluded.purge_watch ELSE purge_watch END",
                    params![tenant, watch],
                )?;
            }
            let mut forget = Vec::new();
            for sql in [
                "DELETE FROM open_reports WHERE tenant = ?1 AND object_id = ?2",
                "DELETE FROM unheld_names WHERE tenant = ?1 AND object_id = ?2",
                "DELETE FROM held_changes WHERE tenant = ?1 AND object_id = ?2",
                "DELETE FROM pending_deactivations WHERE tenant = ?1 AND object_id = ?2",
            ] {
                forget.push(tx.prepare_cached(sql)?);
            }
            for user in users {
                let id = IdText::of(*user);
                for statement in &mut forget {
                    statement.execute(params![tenant, id])?;
                }
            }
        }
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO open_reports
             (tenant, object_id, kind, user, message, since, wants_email, wants_username)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for report in &plan.reports {
        let object_id = report.object_id.to_string();
        let kind = kind_text(report.kind);
        let since = report_since
            .get(&(object_id.clone(), kind.clone()))
            .map_or(now, String::as_str);
        insert.execute(params![
            tenant,
            object_id,
            kind,
            report.user,
            report.message,
            since,
            report.wants.email.as_ref().map(Email::as_str),
            report.wants.username.as_ref().map(Username::as_str),
        ])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO unheld_names (tenant, object_id, wants_email, wants_username)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (user, wants) in &plan.unheld {
        insert.execute(params![
            tenant,
            IdText::of(*user),
            wants.email.as_ref().map(Email::as_str),
            wants.username.as_ref().map(Username::as_str),
        ])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO held_changes (tenant, object_id, record_kind, record_id, action, user, reason, since)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for change in &plan.held {
        let h = HeldChange::of(change, plan.hold_reason.as_deref());
        let since = held_since
            .get(&(h.object_id.clone(), h.record_kind.clone(), h.action.clone()))
            .map_or(now, String::as_str);
        insert.execute(params![
            tenant,
            h.object_id,
            h.record_kind,
            h.record_id,
            h.action,
            h.user,
            h.reason,
            since
        ])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO pending_deactivations (tenant, object_id, user, since, due)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for w in &plan.waiting {
        insert.execute(params![
            tenant,
            IdText::of(w.object_id),
            w.user,
            w.since,
            w.due
        ])?;
    }
    Ok(())
}
