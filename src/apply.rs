//! Writing a [`Plan`] into the store in ONE transaction, together with the run's `sync_runs`
//! row, a `change_log` row per applied change (old → new values) and the run's reports.
//!
//! Makes no decisions: everything it writes was decided by [`entra_sync_core::plan`]. Either all of a
//! run's writes are visible or none (SPEC 5.4).

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Transaction, TransactionBehavior, params, params_from_iter};
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::store::narrow;
use crate::store::{
    IdText, MirrorWrite, RunRecord, Store, StoreError, edited_since_whole_plan, insert_run,
    names_moved_for_others, write_mirror, write_state,
};
use entra_sync_core::ObjectId;
use entra_sync_core::directory::Snapshot;
use entra_sync_core::plan::{
    Action, Change, GroupChange, LinkWrite, Plan, RecordRef, Scope, StoreView,
};
use entra_sync_core::record::{Cell, ContactValues, EmployeeValues, RecordKind, Values, cell_diff};

fn table(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Employee => "employees",
        RecordKind::Contact => "contacts",
    }
}

/// Binds a [`Cell`] without copying its text.
struct Sql<'a>(Cell<'a>);

impl ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Cell::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Cell::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
        })
    }
}

/// A record change's `change_log.changes`: `{"column": [old, new], …}`.
struct FieldLog<'a>(Vec<(&'static str, Cell<'a>, Cell<'a>)>);

impl Serialize for FieldLog<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, old, new) in &self.0 {
            map.serialize_entry(name, &(old, new))?;
        }
        map.end()
    }
}

/// A group change's `change_log.changes`.
#[derive(Serialize)]
struct GroupLog<'a> {
    display_name: Option<&'a str>,
    members_added: Vec<(&'static str, i64)>,
    members_removed: Vec<(&'static str, i64)>,
}

/// `INSERT INTO employees|contacts (…) VALUES (…)`: ?1 is the timestamp, then the cells.
/// Built once per kind from the columns [`Values::cells`] names.
fn insert_sql(kind: RecordKind) -> &'static str {
    fn build(values: Values) -> String {
        let names: Vec<&str> = values.cells().iter().map(|(n, _)| *n).collect();
        let placeholders: Vec<String> = (2..=names.len() + 1).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO {} ({}, active, created_at, updated_at) VALUES ({}, 1, ?1, ?1)",
            table(values.kind()),
            names.join(", "),
            placeholders.join(", ")
        )
    }
    static SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
        [
            build(Values::Employee(EmployeeValues::default())),
            build(Values::Contact(ContactValues::default())),
        ]
    });
    match kind {
        RecordKind::Employee => &SQL[0],
        RecordKind::Contact => &SQL[1],
    }
}

/// The statements a run executes once per row, prepared once per run (a statement-cache
/// lookup hashes the SQL text: at 100k users that was a tenth of the write).
struct RowStatements<'t> {
    insert: [CachedStatement<'t>; 2],
    link: CachedStatement<'t>,
    mark: CachedStatement<'t>,
    log: CachedStatement<'t>,
    add_member: CachedStatement<'t>,
}

impl<'t> RowStatements<'t> {
    fn prepare(tx: &'t Transaction<'_>) -> Result<RowStatements<'t>, StoreError> {
        Ok(RowStatements {
            insert: [
                tx.prepare_cached(insert_sql(RecordKind::Employee))?,
                tx.prepare_cached(insert_sql(RecordKind::Contact))?,
            ],
            link: tx.prepare_cached(
                "INSERT OR REPLACE INTO sync_links (directory, object_id, record_kind, record_id, source, synced_at, upn, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'synced')",
            )?,
            mark: tx.prepare_cached(
                "INSERT INTO sync_links (directory, object_id, record_kind, record_id, source, synced_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (directory, object_id, record_kind) DO UPDATE SET state = excluded.state",
            )?,
            log: tx.prepare_cached(
                "INSERT INTO change_log (run_id, at, tenant, object_id, record_kind, record_id, action, changes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?,
            add_member: tx.prepare_cached(
                "INSERT OR IGNORE INTO group_members (group_id, member_kind, member_id) VALUES (?1, ?2, ?3)",
            )?,
        })
    }

    fn insert(&mut self, kind: RecordKind) -> &mut CachedStatement<'t> {
        match kind {
            RecordKind::Employee => &mut self.insert[0],
            RecordKind::Contact => &mut self.insert[1],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &mut self,
        run_id: i64,
        now: &str,
        tenant: &str,
        object_id: ObjectId,
        kind: &str,
        record_id: Option<i64>,
        action: &str,
        changes: &str,
    ) -> Result<(), StoreError> {
        self.log.execute(params![
            run_id,
            now,
            tenant,
            IdText::of(object_id),
            kind,
            record_id,
            action,
            changes
        ])?;
        Ok(())
    }
}

/// A run's one write transaction: the mirror and cursors it read, then the plan it decided,
/// committed together by [`RunWrite::finish`]; dropped unfinished, nothing is written.
pub struct RunWrite<'s> {
    tx: Transaction<'s>,
    now: String,
}

impl Store {
    /// Starts a run's write transaction (immediate: the store's one writer from here). `now`
    /// (RFC 3339) stamps every row the run writes.
    pub fn begin_run(&mut self, now: String) -> Result<RunWrite<'_>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The sync's own writes are not edits behind its back (migration 08); the row is
        // deleted before commit, and never seen by anyone else. (A row someone else left
        // there is cleared: it would stop the counting for good.)
        tx.execute("DELETE FROM sync_writing", [])?;
        tx.execute("INSERT INTO sync_writing (since) VALUES (?1)", [&now])?;
        Ok(RunWrite { tx, now })
    }
}

impl RunWrite<'_> {
    /// What the planner needs for `tenant`, as this transaction sees it.
    pub fn view(&self, tenant: &str) -> Result<entra_sync_core::plan::StoreView, StoreError> {
        crate::store::view_of(&self.tx, tenant)
    }

    /// The tenant's mirror, whole, as this transaction sees it.
    pub fn load_mirror(&self, tenant: &str) -> Result<Snapshot, StoreError> {
        crate::store::load_mirror(&self.tx, tenant)
    }

    /// The tenant's tracked groups from the mirror, without user members (a run planned
    /// from the users its changes touch: `crate::narrow`).
    pub fn mirror_groups(&self, tenant: &str, nested: bool) -> Result<Snapshot, StoreError> {
        narrow::mirror_groups(&self.tx, tenant, nested)
    }

    /// Adds `users`' mirror rows and memberships to `snapshot`.
    pub fn mirror_users(
        &self,
        tenant: &str,
        users: &BTreeSet<ObjectId>,
        snapshot: &mut Snapshot,
    ) -> Result<(), StoreError> {
        narrow::mirror_users(&self.tx, tenant, users, snapshot)
    }

    /// Adds to `view` the records `users` are linked to or whose names they want, and their
    /// links (with `unusual`, also the records the NOCASE indexes cannot compare).
    pub fn records_around(
        &self,
        directory: &str,
        users: &BTreeSet<ObjectId>,
        names: &narrow::Names,
        unusual: bool,
        view: &mut StoreView,
    ) -> Result<(), StoreError> {
        narrow::records_around(&self.tx, directory, users, names, unusual, view)
    }

    /// Whether someone but the sync edited the store since `tenant`'s last plan of every
    /// user, as this transaction sees it.
    pub fn edited_since_whole_plan(&self, tenant: &str) -> Result<bool, StoreError> {
        edited_since_whole_plan(&self.tx, tenant)
    }

    /// Users of `tenant` who want one of `names` although no record of theirs carries it
    /// (reported about it, or their record renamed away from it).
    pub fn users_wanting(
        &self,
        tenant: &str,
        names: &narrow::Names,
    ) -> Result<BTreeSet<ObjectId>, StoreError> {
        narrow::users_wanting(&self.tx, tenant, names)
    }

    /// Completes such a view: the tenant's groups with its records' memberships, the
    /// directories' names, the pending deactivations.
    pub fn groups_around(&self, tenant: &str, view: &mut StoreView) -> Result<(), StoreError> {
        narrow::groups_around(&self.tx, tenant, view)
    }

    /// `directory`'s active linked records (the percent guard's base).
    pub fn active_synced(&self, directory: &str) -> Result<usize, StoreError> {
        narrow::active_synced(&self.tx, directory)
    }

    /// Writes the Entra mirror diff and the delta cursors; the caller may then free the
    /// snapshot before planning.
    pub fn write_mirror(&self, tenant: &str, mirror: &MirrorWrite<'_>) -> Result<(), StoreError> {
        write_mirror(&self.tx, tenant, mirror, &self.now)?;
        Ok(())
    }

    /// Applies `plan`, records `run`, and commits. Returns the run id. With `state`, what the
    /// plan leaves open (reports, held changes) replaces the tenant's (or, for one user's run,
    /// that person's); without, the open state stays as it is (a run that planned nothing).
    pub fn finish(
        self,
        plan: &Plan,
        run: &RunRecord,
        state: Option<&Scope>,
    ) -> Result<i64, StoreError> {
        let run_id = self.write(plan, run, state)?;
        self.commit()?;
        Ok(run_id)
    }

    /// Records that the tenant's records were written from a reviewed plan (`apply FILE`),
    /// planned from Entra as a dry run read it, which neither the stored mirror nor the
    /// cursors hold: the tenant's next run plans the whole tenant again (as after a change of
    /// rules), from the mirror and the delta since its cursors.
    pub fn plan_again(&self, tenant: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE delta_cursors SET rules = 'plan again' WHERE tenant = ?1",
            [tenant],
        )?;
        Ok(())
    }

    /// Commits what was written: all of it becomes visible, or none.
    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.execute("DELETE FROM sync_writing", [])?;
        self.tx.commit()?;
        Ok(())
    }

    /// Writes `plan` and its `run` row into the transaction, uncommitted (`apply FILE` writes
    /// several tenants' plans, then commits once). Returns the run id.
    pub fn write(
        &self,
        plan: &Plan,
        run: &RunRecord,
        state: Option<&Scope>,
    ) -> Result<i64, StoreError> {
        let RunWrite { tx, now } = self;
        let now = now.as_str();
        let directory = plan.directory.as_str();
        // The snapshot is freed by now: give the plan's writes a page cache large enough
        // that dirty pages are not spilled to the WAL (and rewritten there) mid-transaction.
        // The connection lives for this run only.
        tx.pragma_update(None, "cache_size", -crate::store::APPLY_CACHE_KIB)?;
        let run_id = insert_run(tx, run)?;
        let mut rows = RowStatements::prepare(tx)?;
        park_renamed_usernames(tx, plan)?;
        let mut created: HashMap<(RecordKind, ObjectId), i64> = HashMap::new();
        let mut phase = crate::phase::Phase::start();
        for change in &plan.changes {
            let id = apply_change(tx, &mut rows, change, now)?;
            if let RecordRef::New(object_id) = change.record {
                created.insert((change.kind, object_id), id);
            }
            match &change.link {
                LinkWrite::Keep => {}
                LinkWrite::Synced | LinkWrite::SyncedFrom(_) => {
                    rows.link.execute(params![
                        directory,
                        IdText::of(change.object_id),
                        change.kind.as_str(),
                        id,
                        serde_json::to_string(&change.source()).unwrap_or_default(),
                        now,
                        &*change.user,
                    ])?;
                }
                LinkWrite::Mark(state) => {
                    rows.mark.execute(params![
                        directory,
                        IdText::of(change.object_id),
                        change.kind.as_str(),
                        id,
                        serde_json::to_string(&change.after).unwrap_or_default(),
                        now,
                        state.as_str(),
                    ])?;
                }
            }
            if !change.action.bookkeeping() {
                rows.log(
                    run_id,
                    now,
                    &plan.tenant,
                    change.object_id,
                    change.kind.as_str(),
                    Some(id),
                    change.action.as_str(),
                    &serde_json::to_string(&FieldLog(change.field_cells())).unwrap_or_default(),
                )?;
            }
        }
        phase.done(&plan.tenant, "apply records");
        for group in &plan.groups {
            apply_group(tx, &mut rows, run_id, now, &plan.tenant, group, &created)?;
        }
        drop(rows);
        phase.done(&plan.tenant, "apply groups");
        for report in &plan.reports {
            tx.prepare_cached(
                "INSERT INTO sync_reports (run_id, tenant, object_id, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                    run_id,
                    plan.tenant,
                    IdText::of(report.object_id),
                    serde_json::to_value(report.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    report.message
                ],
            )?;
        }
        if let Some(scope) = state {
            write_state(tx, plan, scope, now)?;
        }
        names_moved_for_others(tx, plan)?;
        phase.done(&plan.tenant, "apply reports and open state");
        Ok(run_id)
    }
}

/// Usernames can move between records in one run (a rename frees a name another user takes,
/// two users swap theirs), and the unique index on `employees.username` is checked statement
/// by statement: every employee whose username this plan changes first takes a placeholder no
/// other record has, so the writes that follow succeed in any order. The plan guarantees the
/// final names are unique.
fn park_renamed_usernames(tx: &Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    let mut park = tx.prepare_cached("UPDATE employees SET username = ?1 WHERE id = ?2")?;
    for change in &plan.changes {
        let (RecordRef::Existing(id), Some(before)) = (&change.record, &change.before) else {
            continue;
        };
        if change.kind == RecordKind::Employee
            && change.action != Action::Purge
            && before.username_key() != change.after.username_key()
        {
            park.execute(params![format!("\u{1}renaming #{id}"), id])?;
        }
    }
    Ok(())
}

/// Writes one record change; returns the record id.
fn apply_change(
    tx: &Transaction<'_>,
    rows: &mut RowStatements<'_>,
    change: &Change,
    now: &str,
) -> Result<i64, StoreError> {
    let table = table(change.kind);
    match (&change.record, change.action) {
        (RecordRef::Existing(id), Action::Purge) => {
            tx.execute(
                "DELETE FROM group_members WHERE member_kind = ?1 AND member_id = ?2",
                params![change.kind.as_str(), id],
            )?;
            tx.execute(
                "DELETE FROM sync_links WHERE record_kind = ?1 AND record_id = ?2",
                params![change.kind.as_str(), id],
            )?;
            tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?;
            Ok(*id)
        }
        (RecordRef::New(_), _) => {
            let cells = change.after.cells();
            let binds = std::iter::once(Sql(Cell::Text(Some(now))))
                .chain(cells.iter().map(|(_, c)| Sql(*c)));
            rows.insert(change.kind).execute(params_from_iter(binds))?;
            Ok(tx.last_insert_rowid())
        }
        (RecordRef::Existing(id), action) => {
            let changed: Vec<(&str, Cell<'_>)> = match &change.before {
                Some(before) => cell_diff(before, &change.after)
                    .into_iter()
                    .map(|(n, _, new)| (n, new))
                    .collect(),
                None => change.after.cells().to_vec(),
            };
            let state = match action {
                Action::Reactivate => ", active = 1, deactivated_at = NULL",
                Action::Deactivate | Action::Archive => ", active = 0, deactivated_at = ?1",
                _ => "",
            };
            if changed.is_empty() && state.is_empty() {
                return Ok(*id);
            }
            let mut sets: Vec<String> = changed
                .iter()
                .enumerate()
                .map(|(i, (n, _))| format!("{n} = ?{}", i + 2))
                .collect();
            sets.push("updated_at = ?1".into());
            let id_param = changed.len() + 2;
            let sql = format!(
                "UPDATE {table} SET {}{state} WHERE id = ?{id_param}",
                sets.join(", ")
            );
            let mut values: Vec<Sql<'_>> = vec![Sql(Cell::Text(Some(now)))];
            values.extend(changed.iter().map(|(_, v)| Sql(*v)));
            values.push(Sql(Cell::Int(*id)));
            tx.prepare_cached(&sql)?.execute(params_from_iter(values))?;
            Ok(*id)
        }
    }
}

fn apply_group(
    tx: &Transaction<'_>,
    rows: &mut RowStatements<'_>,
    run_id: i64,
    now: &str,
    tenant: &str,
    group: &GroupChange,
    created: &HashMap<(RecordKind, ObjectId), i64>,
) -> Result<(), StoreError> {
    let resolve = |kind: RecordKind, r: &RecordRef| -> Option<i64> {
        match r {
            RecordRef::Existing(id) => Some(*id),
            RecordRef::New(obj) => created.get(&(kind, *obj)).copied(),
        }
    };
    let (group_id, action) = match group.group {
        Some(id) if group.remove_group => {
            tx.execute("DELETE FROM group_members WHERE group_id = ?1", [id])?;
            tx.execute("DELETE FROM groups WHERE id = ?1", [id])?;
            rows.log(
                run_id,
                now,
                tenant,
                group.object_id,
                "group",
                Some(id),
                "remove_group",
                "{}",
            )?;
            return Ok(());
        }
        Some(id) => {
            tx.execute(
                "UPDATE groups SET display_name = ?1 WHERE id = ?2 AND display_name IS NOT ?1",
                params![group.display_name, id],
            )?;
            (id, "update_group")
        }
        None => {
            tx.execute(
                "INSERT INTO groups (tenant, object_id, display_name, read_only) VALUES (?1, ?2, ?3, 1)",
                params![tenant, IdText::of(group.object_id), group.display_name],
            )?;
            (tx.last_insert_rowid(), "create_group")
        }
    };
    let mut added = Vec::new();
    for (kind, r) in &group.add {
        if let Some(member) = resolve(*kind, r) {
            rows.add_member
                .execute(params![group_id, kind.as_str(), member])?;
            added.push((kind.as_str(), member));
        }
    }
    let mut removed = Vec::new();
    for (kind, member) in &group.remove {
        tx.prepare_cached(
            "DELETE FROM group_members WHERE group_id = ?1 AND member_kind = ?2 AND member_id = ?3",
        )?
        .execute(params![group_id, kind.as_str(), member])?;
        removed.push((kind.as_str(), *member));
    }
    rows.log(
        run_id,
        now,
        tenant,
        group.object_id,
        "group",
        Some(group_id),
        action,
        &serde_json::to_string(&GroupLog {
            display_name: group.display_name.as_deref(),
            members_added: added,
            members_removed: removed,
        })
        .unwrap_or_default(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
