//! PURE: from what Entra wants ([`Resolution`]) and what the store holds ([`StoreView`]) to the
//! list of changes of one tenant's run — matching (SPEC 4.3), kind changes (4.4), the root
//! (4.5), updates (4.6), deactivation (4.7), usernames (4.8), groups (4.9), email claims (4.11)
//! and the mass-deactivation guard (5.3).
//!
//! Makes every decision and no I/O; the product's `apply` writes the result without deciding
//! anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::directory::Snapshot;
use crate::id::{Email, ObjectId, Username};
use crate::record::{Cell, RecordKind, StoredRecord, Values, cell_diff};
use crate::resolve::{Desired, Report, ReportKind, Resolution};
use crate::rules::Rules;

/// Which Entra user a record was written from, and the values it was last written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub tenant: String,
    pub object_id: ObjectId,
    pub kind: RecordKind,
    pub record_id: i64,
    pub source: Option<Values>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub id: i64,
    pub object_id: ObjectId,
    pub display_name: Option<String>,
    pub members: BTreeSet<(RecordKind, i64)>,
}

/// What the planner needs to know of the store.
#[derive(Debug, Clone, Default)]
pub struct StoreView {
    /// Every employee and contact.
    pub records: BTreeMap<(RecordKind, i64), StoredRecord>,
    /// Links of every tenant (emails claimed by another tenant stay there).
    pub links: Vec<Link>,
    /// The read-only groups of the tenant being planned.
    pub groups: Vec<StoredGroup>,
    /// Records a ticket points at (never purged).
    pub ticketed: BTreeSet<(RecordKind, i64)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Safety {
    pub max_deactivations: u64,
    pub max_deactivation_percent: u64,
    pub allow_mass_deactivation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "ref", content = "value", rename_all = "snake_case")]
pub enum RecordRef {
    Existing(i64),
    /// A record this plan creates for the Entra user with this object id.
    New(ObjectId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    /// An existing record written from Entra because the source or the rule outcome changed.
    Update,
    /// An active record with the same email, linked to the user and written from Entra.
    Merge,
    /// A linked record that was inactive or archived, activated and written from Entra.
    Reactivate,
    /// Bookkeeping only: the source changed but the record already holds the new values.
    Resnapshot,
    Deactivate,
    /// Kind change: the record of the other kind is renamed `…_Archived` and deactivated.
    Archive,
    /// Retention: a record deactivated longer than the configured days is deleted.
    Purge,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Merge => "merge",
            Action::Reactivate => "reactivate",
            Action::Resnapshot => "resnapshot",
            Action::Deactivate => "deactivate",
            Action::Archive => "archive",
            Action::Purge => "purge",
        }
    }

    /// Whether it takes a record out of service (counted by the mass-deactivation guard).
    pub fn removes(self) -> bool {
        matches!(self, Action::Deactivate | Action::Archive)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    pub kind: RecordKind,
    pub record: RecordRef,
    pub object_id: ObjectId,
    pub user: Arc<str>,
    #[serde(skip)]
    pub before: Option<Values>,
    #[serde(skip)]
    pub after: Values,
    /// The user's link is (re)written with `after` as its source snapshot; `false` leaves
    /// the link as it is.
    #[serde(skip)]
    pub relink: bool,
}

impl Change {
    /// The fields this change writes, old → new: the differing ones for an existing record,
    /// the non-empty ones for a create, every one going to null for a purge. What the change
    /// log records and a dry run prints.
    pub fn field_cells(&self) -> Vec<(&'static str, Cell<'_>, Cell<'_>)> {
        let null = Cell::Text(None);
        match (self.action, &self.before) {
            (Action::Purge, _) => self
                .after
                .cells()
                .into_iter()
                .map(|(name, old)| (name, old, null))
                .collect(),
            (_, Some(before)) => cell_diff(before, &self.after),
            (_, None) => self
                .after
                .cells()
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(name, new)| (name, null, new))
                .collect(),
        }
    }

    /// Taking a linked record out of service (or, for a purge, out of the store).
    fn retire(action: Action, link: &Link, rec: &StoredRecord, after: Values) -> Change {
        Change {
            action,
            kind: link.kind,
            record: RecordRef::Existing(rec.id),
            object_id: link.object_id,
            user: rec
                .values
                .email()
                .map_or_else(|| Arc::from(link.object_id.to_string()), Arc::from),
            before: Some(rec.values.clone()),
            after,
            relink: false,
        }
    }
}

/// `update employee #12 ada@contoso.com: job_title "Dev" → "Lead"`: how a dry run, the
/// demo and the per-change debug log show a change.
impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = |cell| serde_json::to_string(&cell).unwrap_or_default();
        match &self.record {
            RecordRef::Existing(id) => write!(
                f,
                "{} {} #{id} {}",
                self.action.as_str(),
                self.kind,
                self.user
            )?,
            RecordRef::New(_) => write!(
                f,
                "{} new {} {}",
                self.action.as_str(),
                self.kind,
                self.user
            )?,
        }
        for (i, (name, old, new)) in self.field_cells().into_iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            if old.is_null() {
                write!(f, "{name}={}", json(new))?;
            } else {
                write!(f, "{name} {} → {}", json(old), json(new))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupChange {
    pub object_id: ObjectId,
    /// The stored group, or `None` when this plan creates it.
    pub group: Option<i64>,
    pub display_name: Option<String>,
    /// The group's rule is gone from the config: the group and its members are removed.
    pub remove_group: bool,
    pub add: Vec<(RecordKind, RecordRef)>,
    pub remove: Vec<(RecordKind, i64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub tenant: String,
    pub changes: Vec<Change>,
    /// Deactivations and kind changes held by the mass-deactivation guard.
    pub held: Vec<Change>,
    pub hold_reason: Option<String>,
    pub groups: Vec<GroupChange>,
    pub reports: Vec<Report>,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// Whether applying it would write anything to the record or group tables.
    pub fn writes_records(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Resnapshot) || !self.groups.is_empty()
    }
}

/// What the mass-deactivation guard holds, for the group plan. SPEC 5.3: what is held is not
/// half done: the records of held changes keep the group memberships they have, and held users
/// join no group until the hold is released.
struct Held {
    /// Users with a held change (a kind change is held whole).
    users: HashSet<ObjectId>,
    /// Records a held change would deactivate, archive or rewrite.
    records: HashSet<(RecordKind, i64)>,
}

impl Held {
    fn of(held: &[Change]) -> Held {
        Held {
            users: held.iter().map(|c| c.object_id).collect(),
            records: held
                .iter()
                .filter_map(|c| match c.record {
                    RecordRef::Existing(id) => Some((c.kind, id)),
                    RecordRef::New(_) => None,
                })
                .collect(),
        }
    }
}

/// One user's decision: its changes (a range of the planner's staged changes), applied or
/// held together (a held kind change is held whole), and the record it lives in afterwards.
struct Unit {
    object_id: ObjectId,
    changes: std::ops::Range<usize>,
    live: (RecordKind, RecordRef),
}

struct Planner<'a> {
    tenant: &'a str,
    store: &'a StoreView,
    /// Users in a rule's group this run: in scope, or untouchable (incomplete data).
    in_scope: HashSet<ObjectId>,
    my_links: HashMap<(ObjectId, RecordKind), &'a Link>,
    link_of_record: HashMap<(RecordKind, i64), &'a Link>,
    active_by_email: HashMap<(RecordKind, Email), Vec<i64>>,
    any_by_email: HashMap<Email, Vec<(RecordKind, i64)>>,
    /// Username → who holds it (a stored record, or a user this plan creates).
    usernames: HashMap<Username, RecordRef>,
    claimed: HashSet<(RecordKind, i64)>,
    emails_this_run: HashMap<Email, Arc<str>>,
    skipped: HashSet<ObjectId>,
    reports: Vec<Report>,
}

pub fn plan(
    tenant: &str,
    resolution: Resolution,
    store: &StoreView,
    group_names: &BTreeMap<ObjectId, Option<String>>,
    safety: &Safety,
) -> Plan {
    // The desired values move into the changes; the resolution is not kept beside the plan.
    let Resolution {
        desired,
        untouchable,
        group_members,
        reports,
    } = resolution;
    let in_scope = desired.keys().chain(&untouchable).copied().collect();
    let mut p = Planner::new(tenant, in_scope, reports, store);
    // Every user's changes go to one list, in object id order; a unit is a range of it.
    let mut staged: Vec<Change> = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    for (object_id, desired) in desired {
        let start = staged.len();
        if let Some(live) = p.user_unit(desired, &mut staged) {
            units.push(Unit {
                object_id,
                changes: start..staged.len(),
                live,
            });
        }
    }
    let deactivations = p.deactivations();

    let active_synced_before: HashSet<(RecordKind, i64)> = p
        .my_links
        .values()
        .filter(|l| {
            store
                .records
                .get(&(l.kind, l.record_id))
                .is_some_and(|r| r.active)
        })
        .map(|l| (l.kind, l.record_id))
        .collect();
    let removals = staged
        .iter()
        .chain(&deactivations)
        .filter(|c| c.action.removes())
        .count();
    let hold_reason = over_limit(removals, active_synced_before.len(), safety);

    let mut plan = Plan {
        tenant: tenant.to_string(),
        hold_reason: hold_reason.clone(),
        ..Plan::default()
    };
    let mut held = vec![false; staged.len()];
    let mut live: HashMap<ObjectId, &(RecordKind, RecordRef)> = HashMap::with_capacity(units.len());
    for unit in &units {
        if hold_reason.is_some()
            && staged[unit.changes.clone()]
                .iter()
                .any(|c| c.action.removes())
        {
            held[unit.changes.clone()].fill(true);
        } else {
            live.insert(unit.object_id, &unit.live);
        }
    }
    if hold_reason.is_some() {
        for (change, held) in staged.into_iter().zip(held) {
            if held {
                plan.held.push(change);
            } else {
                plan.changes.push(change);
            }
        }
        plan.held.extend(deactivations);
    } else {
        plan.changes = staged;
        plan.changes.extend(deactivations);
    }
    plan.groups = p.groups(&live, &Held::of(&plan.held), &group_members, group_names);
    p.reports.sort();
    p.reports.dedup();
    plan.reports = p.reports;
    plan
}

/// The rule groups' display names as Entra has them in `snapshot` (`None`: not read).
pub fn group_names(rules: &Rules, snapshot: &Snapshot) -> BTreeMap<ObjectId, Option<String>> {
    rules
        .group_ids()
        .map(|id| {
            let name = snapshot
                .groups
                .get(&id)
                .and_then(|g| g.display_name.clone());
            (id, name)
        })
        .collect()
}

/// The retention cutoff at `now`: records deactivated before it may be purged (RFC 3339,
/// comparable as text with `deactivated_at`). At most a century back.
pub fn retention_cutoff(now: DateTime<Utc>, days: u64) -> String {
    let days = days.min(36_500) as i64;
    (now - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Retention: the tenant's records deactivated before `cutoff` (RFC 3339), except the root
/// and records a ticket points at. Never part of the mass-deactivation count.
pub fn purges(tenant: &str, store: &StoreView, cutoff: &str) -> Vec<Change> {
    let mut out = Vec::new();
    for link in store.links.iter().filter(|l| l.tenant == tenant) {
        let key = (link.kind, link.record_id);
        let Some(rec) = store.records.get(&key) else {
            continue;
        };
        let old_enough = rec.deactivated_at.as_deref().is_some_and(|d| d < cutoff);
        if rec.active || rec.is_root || !old_enough || store.ticketed.contains(&key) {
            continue;
        }
        out.push(Change::retire(Action::Purge, link, rec, rec.values.clone()));
    }
    out
}

/// `Some(reason)` when `removals` exceeds a configured limit (SPEC 5.3).
fn over_limit(removals: usize, active_before: usize, safety: &Safety) -> Option<String> {
    if safety.allow_mass_deactivation || removals == 0 {
        return None;
    }
    let removals64 = removals as u64;
    if safety.max_deactivations > 0 && removals64 > safety.max_deactivations {
        return Some(format!(
            "{removals} deactivations exceed safety.max_deactivations = {}",
            safety.max_deactivations
        ));
    }
    let pct = safety.max_deactivation_percent;
    if pct > 0 && active_before > 0 && removals64 * 100 > pct * active_before as u64 {
        return Some(format!(
            "{removals} deactivations are more than safety.max_deactivation_percent = {pct}% of {active_before} active synced records"
        ));
    }
    None
}

impl<'a> Planner<'a> {
    fn new(
        tenant: &'a str,
        in_scope: HashSet<ObjectId>,
        reports: Vec<Report>,
        store: &'a StoreView,
    ) -> Planner<'a> {
        let mut my_links = HashMap::new();
        let mut link_of_record = HashMap::new();
        for link in &store.links {
            if !store.records.contains_key(&(link.kind, link.record_id)) {
                continue; // the record was deleted outside the sync: the link is stale
            }
            link_of_record.insert((link.kind, link.record_id), link);
            if link.tenant == tenant {
                my_links.insert((link.object_id, link.kind), link);
            }
        }
        let mut active_by_email: HashMap<(RecordKind, Email), Vec<i64>> = HashMap::new();
        let mut any_by_email: HashMap<Email, Vec<(RecordKind, i64)>> = HashMap::new();
        let mut usernames = HashMap::new();
        for ((kind, id), rec) in &store.records {
            if let Some(key) = rec.values.email_key() {
                any_by_email
                    .entry(key.clone())
                    .or_default()
                    .push((*kind, *id));
                if rec.active {
                    active_by_email.entry((*kind, key)).or_default().push(*id);
                }
            }
            if let Some(name) = rec.values.username_key() {
                usernames.insert(name, RecordRef::Existing(*id));
            }
        }
        Planner {
            tenant,
            store,
            in_scope,
            my_links,
            link_of_record,
            active_by_email,
            any_by_email,
            usernames,
            claimed: HashSet::new(),
            emails_this_run: HashMap::new(),
            skipped: HashSet::new(),
            reports,
        }
    }

    fn record(&self, kind: RecordKind, id: i64) -> Option<&'a StoredRecord> {
        self.store.records.get(&(kind, id))
    }

    /// Whether another Entra user of this tenant, still in scope, owns the record.
    fn owned_by_other_in_scope(&self, link: &Link, object_id: ObjectId) -> bool {
        link.object_id != object_id && self.in_scope.contains(&link.object_id)
    }

    /// The in-scope user other than `object_id` whose active record of `kind`, other than
    /// `except`, has `email`.
    fn email_holder(
        &self,
        kind: RecordKind,
        email: &Email,
        except: i64,
        object_id: ObjectId,
    ) -> Option<ObjectId> {
        self.active_by_email
            .get(&(kind, email.clone()))?
            .iter()
            .filter(|id| **id != except)
            .filter_map(|id| self.link_of_record.get(&(kind, *id)))
            .find(|link| self.owned_by_other_in_scope(link, object_id))
            .map(|link| link.object_id)
    }

    fn skip_duplicate(&mut self, desired: &Desired, holder: ObjectId) {
        let message = format!(
            "email {} belongs to the record of Entra user {holder}; fix the duplicate in Entra",
            desired.values.email().unwrap_or_default(),
        );
        self.skip(desired, ReportKind::DuplicateEmail, message);
    }

    fn skip(&mut self, desired: &Desired, kind: ReportKind, message: String) {
        self.skipped.insert(desired.object_id);
        self.reports.push(Report {
            kind,
            object_id: desired.object_id,
            user: desired.user.to_string(),
            message,
        });
    }

    /// Decides one in-scope user: pushes its changes to `changes` and returns the record it
    /// lives in afterwards, or `None` when it is skipped (with a report).
    fn user_unit(
        &mut self,
        d: Desired,
        changes: &mut Vec<Change>,
    ) -> Option<(RecordKind, RecordRef)> {
        let kind = d.kind();
        let obj = d.object_id;
        let email = d.values.email_key().unwrap_or_else(|| Email::new(""));

        // SPEC 4.11: an email linked to another tenant's record stays there.
        let foreign = self.any_by_email.get(&email).and_then(|recs| {
            recs.iter()
                .filter_map(|r| self.link_of_record.get(r))
                .find(|l| l.tenant != self.tenant)
        });
        if let Some(link) = foreign {
            let message = format!(
                "email {} already belongs to a record of tenant \"{}\"; not synced here",
                d.values.email().unwrap_or_default(),
                link.tenant
            );
            self.skip(&d, ReportKind::EmailClaimed, message);
            return None;
        }
        if let Some(other) = self.emails_this_run.get(&email) {
            let message = format!(
                "email {} is also the email of Entra user {other}, synced first; fix the duplicate in Entra",
                d.values.email().unwrap_or_default()
            );
            self.skip(&d, ReportKind::DuplicateEmail, message);
            return None;
        }

        // SPEC 4.3: the linked record, else an active record of the kind with the same email.
        let mut merged_by_email = false;
        let matched: Option<&StoredRecord> = match self.my_links.get(&(obj, kind)) {
            Some(link) => {
                // An email the user's new address takes from another in-scope user's active
                // record stays with that user, whichever of the two is planned first.
                if let Some(holder) = self.email_holder(kind, &email, link.record_id, obj) {
                    self.skip_duplicate(&d, holder);
                    return None;
                }
                self.record(kind, link.record_id)
            }
            None => {
                let mut candidates: Vec<i64> = self
                    .active_by_email
                    .get(&(kind, email.clone()))
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|id| !self.claimed.contains(&(kind, *id)))
                    .collect();
                candidates.sort_unstable();
                // The smallest id among active records with the email.
                let mut found = None;
                if let Some(id) = candidates.first() {
                    if let Some(link) = self.link_of_record.get(&(kind, *id))
                        && self.owned_by_other_in_scope(link, obj)
                    {
                        self.skip_duplicate(&d, link.object_id);
                        return None;
                    }
                    found = self.record(kind, *id);
                }
                merged_by_email = found.is_some();
                found
            }
        };
        if matched.is_some_and(|r| r.is_root) {
            self.skip(
                &d,
                ReportKind::RootConflict,
                "would change the root employee, which the sync never touches".into(),
            );
            return None;
        }

        // SPEC 4.4: active records of the other kind, linked to the user or with its email.
        let other = kind.other();
        let mut to_archive: BTreeSet<i64> = BTreeSet::new();
        if let Some(link) = self.my_links.get(&(obj, other))
            && self.record(other, link.record_id).is_some_and(|r| r.active)
        {
            to_archive.insert(link.record_id);
        }
        for id in self
            .active_by_email
            .get(&(other, email.clone()))
            .into_iter()
            .flatten()
        {
            let mine = match self.link_of_record.get(&(other, *id)) {
                None => true,
                Some(link) => link.tenant == self.tenant && link.object_id == obj,
            };
            if mine {
                to_archive.insert(*id);
            }
        }
        to_archive.retain(|id| !self.claimed.contains(&(other, *id)));
        if to_archive
            .iter()
            .any(|id| self.record(other, *id).is_some_and(|r| r.is_root))
        {
            self.skip(
                &d,
                ReportKind::RootConflict,
                "would archive the root employee, which the sync never touches".into(),
            );
            return None;
        }

        // SPEC 4.8: usernames are unique across all employees; never steal one.
        let username = d.values.username_key();
        if let Some(name) = &username {
            let mine = match (self.usernames.get(name), matched) {
                (None, _) => true,
                (Some(RecordRef::Existing(id)), Some(rec)) => *id == rec.id,
                _ => false,
            };
            if !mine {
                let message = format!(
                    "username {} is taken by another employee record; the user is skipped until it is freed",
                    d.values.username().unwrap_or_default()
                );
                self.skip(&d, ReportKind::UsernameCollision, message);
                return None;
            }
        }

        // Decided: build the changes.
        self.emails_this_run.insert(email, d.user.clone());
        for id in &to_archive {
            if let Some(rec) = self.record(other, *id) {
                self.claimed.insert((other, *id));
                let archived = self.archived_values(rec);
                changes.push(Change {
                    action: Action::Archive,
                    kind: other,
                    record: RecordRef::Existing(*id),
                    object_id: d.object_id,
                    user: d.user.clone(),
                    before: Some(rec.values.clone()),
                    after: archived,
                    relink: false,
                });
            }
        }
        let (action, record) = match matched {
            None => (Some(Action::Create), RecordRef::New(d.object_id)),
            Some(rec) => {
                self.claimed.insert((kind, rec.id));
                let source = self
                    .my_links
                    .get(&(obj, kind))
                    .and_then(|l| l.source.as_ref());
                let action = if !rec.active {
                    Some(Action::Reactivate)
                } else if merged_by_email {
                    Some(Action::Merge)
                } else if source == Some(&d.values) {
                    None
                } else if rec.values == d.values {
                    Some(Action::Resnapshot)
                } else {
                    Some(Action::Update)
                };
                if let Some(old) = rec.values.username_key() {
                    self.usernames.remove(&old);
                }
                (action, RecordRef::Existing(rec.id))
            }
        };
        if let Some(name) = username {
            self.usernames.insert(name, record.clone());
        }
        if let Some(action) = action {
            changes.push(Change {
                action,
                kind,
                record: record.clone(),
                object_id: d.object_id,
                user: d.user.clone(),
                before: matched.map(|r| r.values.clone()),
                after: d.values,
                relink: true,
            });
        }
        Some((kind, record))
    }

    /// `…_Archived` on the email and a free username (`…_Archived2` when taken).
    fn archived_values(&mut self, rec: &StoredRecord) -> Values {
        let mut suffix = "_Archived".to_string();
        if let Some(name) = rec.values.username() {
            let mut n = 1;
            while self
                .usernames
                .contains_key(&Username::new(&format!("{name}{suffix}")))
            {
                n += 1;
                suffix = format!("_Archived{n}");
            }
            self.usernames.remove(&Username::new(name));
        }
        let archived = rec.values.archived(&suffix, "_Archived");
        if let Some(name) = archived.username_key() {
            self.usernames.insert(name, RecordRef::Existing(rec.id));
        }
        archived
    }

    /// SPEC 4.7: linked records whose user left scope.
    fn deactivations(&mut self) -> Vec<Change> {
        let mut links: Vec<&&Link> = self.my_links.values().collect();
        links.sort_by_key(|l| (l.object_id, l.kind));
        let mut out = Vec::new();
        for link in links {
            let Some(rec) = self.record(link.kind, link.record_id) else {
                continue;
            };
            if !rec.active
                || self.claimed.contains(&(link.kind, link.record_id))
                || self.skipped.contains(&link.object_id)
                || self.in_scope.contains(&link.object_id)
            {
                continue;
            }
            if rec.is_root {
                self.reports.push(Report {
                    kind: ReportKind::RootConflict,
                    object_id: link.object_id,
                    user: link.object_id.to_string(),
                    message: "left scope, but the root employee is never deactivated".into(),
                });
                continue;
            }
            out.push(Change::retire(
                Action::Deactivate,
                link,
                rec,
                rec.values.revoked(),
            ));
        }
        out
    }

    /// The active record a user not decided this run still has (kept for group membership).
    fn current_live(&self, object_id: ObjectId) -> Option<(RecordKind, RecordRef)> {
        [RecordKind::Employee, RecordKind::Contact]
            .into_iter()
            .find_map(|kind| {
                let link = self.my_links.get(&(object_id, kind))?;
                let rec = self.record(kind, link.record_id)?;
                rec.active
                    .then_some((kind, RecordRef::Existing(link.record_id)))
            })
    }

    fn groups(
        &self,
        live: &HashMap<ObjectId, &(RecordKind, RecordRef)>,
        held: &Held,
        group_members: &BTreeMap<ObjectId, BTreeSet<ObjectId>>,
        names: &BTreeMap<ObjectId, Option<String>>,
    ) -> Vec<GroupChange> {
        let mut out = Vec::new();
        for (group_id, users) in group_members {
            let wanted: BTreeSet<(RecordKind, RecordRef)> = users
                .iter()
                .filter(|u| !held.users.contains(u))
                .filter_map(|u| {
                    live.get(u)
                        .map(|l| (*l).clone())
                        .or_else(|| self.current_live(*u))
                })
                .collect();
            let stored = self.store.groups.iter().find(|g| g.object_id == *group_id);
            let name = names
                .get(group_id)
                .cloned()
                .flatten()
                .or_else(|| stored.and_then(|g| g.display_name.clone()));
            let existing: BTreeSet<(RecordKind, RecordRef)> = stored
                .map(|g| {
                    g.members
                        .iter()
                        .map(|(k, id)| (*k, RecordRef::Existing(*id)))
                        .collect()
                })
                .unwrap_or_default();
            let add: Vec<_> = wanted.difference(&existing).cloned().collect();
            let remove: Vec<_> = existing
                .difference(&wanted)
                .filter_map(|(k, r)| match r {
                    RecordRef::Existing(id) if !held.records.contains(&(*k, *id)) => {
                        Some((*k, *id))
                    }
                    _ => None,
                })
                .collect();
            let renamed = stored.is_some_and(|g| g.display_name != name);
            if stored.is_none() || renamed || !add.is_empty() || !remove.is_empty() {
                out.push(GroupChange {
                    object_id: *group_id,
                    group: stored.map(|g| g.id),
                    display_name: name,
                    remove_group: false,
                    add,
                    remove,
                });
            }
        }
        for g in &self.store.groups {
            if !group_members.contains_key(&g.object_id) {
                out.push(GroupChange {
                    object_id: g.object_id,
                    group: Some(g.id),
                    display_name: g.display_name.clone(),
                    remove_group: true,
                    add: Vec::new(),
                    remove: g.members.iter().copied().collect(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
