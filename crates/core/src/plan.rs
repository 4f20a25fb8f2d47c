//! PURE: from what Entra wants ([`Resolution`]) and what the store holds ([`StoreView`]) to the
//! list of changes of one tenant's run.
//!
//! Every SPEC rule is one function in the `decide` module: matching (4.3), kind change (4.4), the root
//! (4.5), rewriting (4.6), deactivation (4.7), usernames (4.8), email claims (4.11); here are
//! the read-only groups (4.9), the retention purges (4.14) and the mass-deactivation guard
//! (5.3). A user's decision depends only on that user, their records and the claims on their
//! names — never on which other users happened to be in the round or the order users are
//! planned in — so the store after a run does not depend on how the work was split (4.13).
//!
//! Makes every decision and no I/O; the product's `apply` writes the result without deciding
//! anything.

mod decide;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::directory::Snapshot;
use crate::id::ObjectId;
use crate::record::{Cell, RecordKind, StoredRecord, Values, cell_diff};
use crate::resolve::{Report, Resolution, Wants};
use crate::rules::Rules;

use decide::{Decided, Decisions};

/// What the sync last did with a linked record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Written from Entra; its user was in scope then.
    Synced,
    /// Deactivated by the sync because its user left scope (SPEC 4.7): the user's return
    /// reactivates it.
    Left,
    /// Its access revoked because its user left scope, when an admin had already deactivated
    /// it: their return gives the access back and leaves it deactivated.
    LeftInactive,
    /// Archived by the sync because its user changed kind (SPEC 4.4).
    Archived,
    /// The same, of a record an admin had deactivated: undoing the archive leaves it so.
    ArchivedInactive,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Synced => "synced",
            LinkState::Left => "left",
            LinkState::LeftInactive => "left_inactive",
            LinkState::Archived => "archived",
            LinkState::ArchivedInactive => "archived_inactive",
        }
    }

    /// Whether the sync archived the record (kind change).
    pub fn archived(self) -> bool {
        matches!(self, LinkState::Archived | LinkState::ArchivedInactive)
    }

    pub fn parse(text: &str) -> Option<LinkState> {
        match text {
            "synced" => Some(LinkState::Synced),
            "left" => Some(LinkState::Left),
            "left_inactive" => Some(LinkState::LeftInactive),
            "archived" => Some(LinkState::Archived),
            "archived_inactive" => Some(LinkState::ArchivedInactive),
            _ => None,
        }
    }
}

/// Which Entra user of which directory a record belongs to, and what it was last written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The directory (tenant GUID) the user lives in. Links belong to the directory, not to
    /// the config's name for it (SPEC 4.3).
    pub directory: String,
    pub object_id: ObjectId,
    pub kind: RecordKind,
    pub record_id: i64,
    /// The values the record was last written with (`None`: unreadable, rewrite it).
    pub source: Option<Values>,
    /// The UPN the record was last synced from (`sync --user` finds leavers by it).
    pub upn: Option<String>,
    pub state: LinkState,
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
    /// Links of every directory (an email claimed by another tenant stays there).
    pub links: Vec<Link>,
    /// The read-only groups of the tenant being planned.
    pub groups: Vec<StoredGroup>,
    /// Records a ticket points at (never purged).
    pub ticketed: BTreeSet<(RecordKind, i64)>,
    /// The config's names of the directories links belong to, for messages.
    pub directory_names: BTreeMap<String, String>,
    /// Users of the tenant being planned that a run saw out of scope, and since when (RFC
    /// 3339): their grace period counts from it (SPEC 2, `safety.deactivate_after_minutes`).
    pub out_of_scope_since: BTreeMap<ObjectId, String>,
    /// This directory's active linked records, counted by the store, when the view holds
    /// only some of them (a run planned from the users a change touches): the percent
    /// guard's base (SPEC 5.3). `None`: the view holds every record, count them.
    pub active_synced: Option<usize>,
}

impl StoreView {
    /// How to name a directory in a message: its config name when known.
    pub fn directory_name<'a>(&'a self, directory: &'a str) -> &'a str {
        self.directory_names
            .get(directory)
            .map_or(directory, String::as_str)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Safety {
    pub max_deactivations: u64,
    pub max_deactivation_percent: u64,
    pub allow_mass_deactivation: bool,
    /// The grace period: how long a user stays out of scope before their records leave
    /// service (0: at once).
    pub deactivate_after_minutes: u64,
}

/// Whose records a run may change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everybody's (a full or incremental run).
    All,
    /// These people's (`sync --user`: everyone the query matches): rewritten from Entra even if
    /// Entra did not change, and only when the outcome does not wait on another user's pending
    /// change (SPEC 1).
    Users(BTreeSet<ObjectId>),
    /// These people's (an incremental run's: the users its changes touch, and whom they
    /// touch): planned as a run of these people, rewritten only where Entra changed, like a
    /// run of everybody.
    Touched(BTreeSet<ObjectId>),
}

impl Scope {
    /// Whether `user` is one of a `--user` run's people (rewritten whatever changed).
    pub fn names(&self, user: ObjectId) -> bool {
        matches!(self, Scope::Users(users) if users.contains(&user))
    }

    /// The people a run of some people plans; `None` for a run of everybody.
    pub fn people(&self) -> Option<&BTreeSet<ObjectId>> {
        match self {
            Scope::All => None,
            Scope::Users(users) | Scope::Touched(users) => Some(users),
        }
    }
}

/// The run a plan is for.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// The tenant's config name, for messages and the plan.
    pub tenant: &'a str,
    /// The tenant's directory: links of this directory are this run's.
    pub directory: &'a str,
    pub safety: Safety,
    pub scope: Scope,
    /// Retention (SPEC 4.14): records deactivated before this time (RFC 3339) are purged;
    /// `None` when retention is off.
    pub purge_before: Option<&'a str>,
    /// The run's time (RFC 3339): records it takes out of service are deactivated at it.
    pub now: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "ref", content = "value", rename_all = "snake_case")]
pub enum RecordRef {
    Existing(i64),
    /// A record this plan creates for the Entra user with this object id.
    New(ObjectId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    /// An existing record written from Entra because the source or the rule outcome changed.
    Update,
    /// A record with the user's email, not yet theirs, taken over: linked and written.
    Merge,
    /// The user's record, out of service (deactivated, archived, or taken over while
    /// inactive), back in service and written from Entra.
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

    /// Whether it only touches the sync's bookkeeping, never a record's columns.
    pub fn bookkeeping(self) -> bool {
        matches!(self, Action::Resnapshot)
    }
}

/// What a change does to the link between its user and its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "write", content = "value", rename_all = "snake_case")]
pub enum LinkWrite {
    /// Nothing.
    Keep,
    /// The link is (re)written: source `after`, the user's UPN, state synced.
    Synced,
    /// The same, with this source: what Entra wants, where the record keeps local edits.
    SyncedFrom(Box<Values>),
    /// The link's state becomes this; a record without a link of the user's gets one.
    Mark(LinkState),
}

impl Change {
    /// The source a synced link records: what Entra wanted when the record was written.
    pub fn source(&self) -> Option<&Values> {
        match &self.link {
            LinkWrite::Synced => Some(&self.after),
            LinkWrite::SyncedFrom(source) => Some(source),
            LinkWrite::Keep | LinkWrite::Mark(_) => None,
        }
    }
}

/// One record change, whole: what a reviewed plan file carries and `apply` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    pub kind: RecordKind,
    pub record: RecordRef,
    pub object_id: ObjectId,
    /// For reports and logs: the user's UPN, or the record's email.
    pub user: Arc<str>,
    pub before: Option<Values>,
    pub after: Values,
    pub link: LinkWrite,
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

    /// A change to a record its user no longer wants in service (or, for a purge, in the store).
    fn retire(
        action: Action,
        link: &Link,
        rec: &StoredRecord,
        after: Values,
        write: LinkWrite,
    ) -> Change {
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
            link: write,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A user out of scope whose records wait out the grace period (SPEC 2,
/// `safety.deactivate_after_minutes`), or whose deactivation fell due and is held (5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub object_id: ObjectId,
    /// The user's UPN as last synced, or their record's email.
    pub user: String,
    /// When a run first saw them out of scope.
    pub since: String,
    /// When their records leave service, unless they come back first.
    pub due: String,
}

/// When a user out of scope since `since` falls due for deactivation after a grace period of
/// `minutes` (at most a century); an unreadable `since` counts as `now`, a time past the
/// calendar's end as never.
fn due_at(since: &str, now: &str, minutes: u64) -> Option<DateTime<Utc>> {
    let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc());
    let start = parse(since).or_else(|| parse(now))?;
    let minutes = minutes.min(100 * 366 * 24 * 60) as i64;
    start.checked_add_signed(chrono::Duration::minutes(minutes))
}

/// When the grace period of a user out of scope since `since` ends, as RFC 3339 (seconds,
/// UTC), for people; `now` when it cannot be said.
pub fn grace_due(since: &str, now: &str, minutes: u64) -> String {
    due_at(since, now, minutes).map_or_else(
        || now.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Whether a user out of scope since `since` has waited out a grace period of `minutes` at
/// `now` (at once without one; never when `now` or the due time cannot be read).
pub fn grace_reached(since: &str, now: &str, minutes: u64) -> bool {
    if minutes == 0 {
        return true;
    }
    let now_t = DateTime::parse_from_rfc3339(now).ok().map(|t| t.to_utc());
    match (due_at(since, now, minutes), now_t) {
        (Some(due), Some(now)) => due <= now,
        _ => false,
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub tenant: String,
    /// The tenant's directory, which the plan's links belong to.
    pub directory: String,
    pub changes: Vec<Change>,
    /// Deactivations and kind changes held by the mass-deactivation guard: each held user's
    /// changes, whole.
    pub held: Vec<Change>,
    /// With retention on: when the oldest record that will be due for a purge was deactivated
    /// (it falls due once the cutoff passes it); `Some("")` asks the next run to plan again
    /// (this one purged, which can free a name someone waits for); [`PURGE_NEVER`] when
    /// nothing could fall due; `None` when retention is off. A run with nothing new from
    /// Entra plans only when it is due. A run of some users ([`Scope::people`]) says when its
    /// people's records fall due, and the store keeps the earlier of that and what it had.
    pub purge_watch: Option<String>,
    pub hold_reason: Option<String>,
    /// Why the limits would have held this plan's deactivations, which it applies because the
    /// run allows them (`--allow-mass-deactivation`; a reviewed plan always carries them).
    pub released: Option<String>,
    /// Users out of scope whose deactivation waits (the grace period) or is held: what stays
    /// pending after the run, with when it started (SPEC 2).
    pub waiting: Vec<Waiting>,
    pub groups: Vec<GroupChange>,
    pub reports: Vec<Report>,
    /// The live users whose record does not carry the names they want, and will not after
    /// this plan (an admin renamed it, and Entra has not changed them since: SPEC 4.6). They
    /// still want those names (4.8), which no record says: the store keeps them, so that a run
    /// planned from a change finds them when someone else comes to want one. (Not in a plan
    /// file: the run after `apply FILE` plans every user again.)
    #[serde(skip)]
    pub unheld: Vec<(ObjectId, Wants)>,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// Whether applying it would write anything to the record or group tables.
    pub fn writes_records(&self) -> bool {
        self.changes.iter().any(|c| !c.action.bookkeeping()) || !self.groups.is_empty()
    }

    /// The records this plan writes, links, or adds to a group: a purge must leave them be.
    fn touched(&self) -> HashSet<(RecordKind, i64)> {
        let changed = self.changes.iter().filter_map(|c| match c.record {
            RecordRef::Existing(id) => Some((c.kind, id)),
            RecordRef::New(_) => None,
        });
        let added = self.groups.iter().flat_map(|g| {
            g.add.iter().filter_map(|(kind, r)| match r {
                RecordRef::Existing(id) => Some((*kind, *id)),
                RecordRef::New(_) => None,
            })
        });
        changed.chain(added).collect()
    }
}

/// Plans one tenant's run (see the module docs for the rules and where each one lives).
pub fn plan(
    run: &Run<'_>,
    resolution: Resolution,
    store: &StoreView,
    group_names: &BTreeMap<ObjectId, Option<String>>,
) -> Plan {
    let Resolution {
        desired,
        untouchable,
        group_members,
        reports,
    } = resolution;
    let decisions = Decisions::new(run, store, desired, &untouchable);
    let (decided, held, hold_reason, waiting) = match &run.scope {
        Scope::All => {
            let (first, waiting) = grace_2(&decisions, &BTreeSet::new());
            let (decided, held, reason) = guard_5_3(&decisions, first, &run.safety, &waiting);
            (decided, held, reason, waiting)
        }
        Scope::Users(targets) | Scope::Touched(targets) => {
            let (alone, waiting) = grace_2(&decisions, &decisions.everybody_but(targets));
            let (decided, held, reason) = user_run_1(&decisions, alone, targets, &run.safety);
            (decided, held, reason, waiting)
        }
    };
    // Over a limit with nothing held: the run allows the deactivations.
    let (hold_reason, released) = if held.is_empty() {
        (None, hold_reason)
    } else {
        (hold_reason, None)
    };
    let mut plan = Plan {
        tenant: run.tenant.to_string(),
        directory: run.directory.to_string(),
        hold_reason,
        released,
        ..Plan::default()
    };
    plan.groups = groups_4_9(
        store,
        &decided,
        &held,
        &waiting,
        &group_members,
        group_names,
        &decisions,
    );
    let mut all_reports = reports;
    all_reports.extend(decided.reports());
    if let Some(targets) = run.scope.people() {
        all_reports.retain(|r| targets.contains(&r.object_id));
    }
    all_reports.sort();
    all_reports.dedup();
    plan.reports = all_reports;
    plan.waiting = decisions.waiting(&waiting, &held);
    if let Some(targets) = run.scope.people() {
        // Whoever else waits stays as the store has them: the run replaces its people's.
        plan.waiting.retain(|w| targets.contains(&w.object_id));
    }
    plan.held = held;
    plan.unheld = decisions.unheld(&decided);
    if let Some(targets) = run.scope.people() {
        plan.unheld.retain(|(user, _)| targets.contains(user));
    }
    // A run of some users' people (`Scope::Touched`) are everyone whose records it touches:
    // their purges are the whole tenant's (nothing else can have fallen due since the last
    // run of everybody, or the caller plans everybody).
    let purgeable = match &run.scope {
        Scope::All | Scope::Touched(_) => decisions.purgeable(&decided, &waiting),
        Scope::Users(_) => Vec::new(),
    };
    plan.changes = decisions.into_changes(&decided);
    if let Some(targets) = run.scope.people() {
        plan.keep_groups_of(targets, store);
    }
    match (&run.scope, run.purge_before) {
        (Scope::All | Scope::Touched(_), Some(cutoff)) => {
            plan.purge_4_14(run, store, &purgeable, cutoff);
        }
        // A record it takes out of service is purged after retention: a run of every user
        // re-plans by then even when Entra brings nothing (SPEC 4.14).
        (Scope::Users(_), Some(_)) if plan.changes.iter().any(|c| c.action.removes()) => {
            plan.purge_watch = Some(run.now.to_string());
        }
        _ => {}
    }
    plan
}

/// SPEC 5.3: when the run would take more records out of service than a limit allows, every
/// user with a deactivation or archive is held whole (a held kind change keeps its record, its
/// username and its email; no second live record), and everything else applies. Held users are
/// planned as if they had not changed, which can hold more users (a record a held user would
/// have taken over now leaves with its old user): repeated until nothing more is held.
fn guard_5_3(
    decisions: &Decisions<'_>,
    first: Decided,
    safety: &Safety,
    waiting: &BTreeSet<ObjectId>,
) -> (Decided, Vec<Change>, Option<String>) {
    let removals = decisions.removals(&first);
    let Some(reason) = over_limit(removals, decisions.active_synced(), safety) else {
        return (first, Vec::new(), None);
    };
    if safety.allow_mass_deactivation {
        return (first, Vec::new(), Some(reason));
    }
    let mut held_users: BTreeSet<ObjectId> = decisions.removing_users(&first);
    let kept = |held: &BTreeSet<ObjectId>| held.union(waiting).copied().collect();
    let mut decided = decisions.decide(&kept(&held_users));
    loop {
        let more: BTreeSet<ObjectId> = decisions
            .removing_users(&decided)
            .difference(&held_users)
            .copied()
            .collect();
        if more.is_empty() {
            break;
        }
        held_users.extend(more);
        decided = decisions.decide(&kept(&held_users));
    }
    // What the held users would have had, for the summary and `status`.
    let held = decisions.preview(&first, &held_users);
    (decided, held, Some(reason))
}

/// SPEC 1, `--user`: the person gets exactly the outcome a full run would give them. Planned
/// with everybody else as they are; when that differs from what a full run would do for them,
/// the outcome waits on another user's pending change (a username or email someone else is
/// about to free): the person is reported, and nothing is written. When a full run would hold
/// their change (SPEC 5.3), it is held here too, and stays held.
fn user_run_1(
    decisions: &Decisions<'_>,
    mut alone: Decided,
    targets: &BTreeSet<ObjectId>,
    safety: &Safety,
) -> (Decided, Vec<Change>, Option<String>) {
    let (everybody, waiting) = grace_2(decisions, &BTreeSet::new());
    let (full, held, reason) = guard_5_3(decisions, everybody, safety, &waiting);
    let theirs: Vec<Change> = held
        .into_iter()
        .filter(|c| targets.contains(&c.object_id))
        .collect();
    for target in targets {
        if theirs.iter().any(|c| c.object_id == *target) {
            alone.forget(*target);
        } else if full.outcome_of(*target) != alone.outcome_of(*target) {
            decisions.wait(&mut alone, *target);
        }
    }
    // Held, or allowed (`--allow-mass-deactivation`, a reviewed plan): the reason stays with
    // a run whose people are among those the limits count.
    let counted = theirs.iter().any(|c| c.action.removes())
        || (safety.allow_mass_deactivation
            && decisions
                .removing_users(&full)
                .iter()
                .any(|u| targets.contains(u)));
    let reason = if counted { reason } else { None };
    (alone, theirs, reason)
}

/// SPEC 2, the grace period (`safety.deactivate_after_minutes`): a user out of scope keeps
/// their records as they are until they have been out of scope that long — planned as if they
/// had not left, so a return within it changes nothing — and then leaves like anyone else
/// (their deactivation counted by the guard, 5.3). Keeping a leaver can make another user
/// leave (a returning account that would have taken their record over): repeated until
/// nothing more waits. Decides everybody but `kept`; returns who waits.
fn grace_2(decisions: &Decisions<'_>, kept: &BTreeSet<ObjectId>) -> (Decided, BTreeSet<ObjectId>) {
    let mut waiting = BTreeSet::new();
    if decisions.grace_minutes() == 0 {
        return (decisions.decide(kept), waiting);
    }
    loop {
        let decided = decisions.decide(&kept.union(&waiting).copied().collect());
        let more: BTreeSet<ObjectId> = decisions
            .leaving_users(&decided)
            .into_iter()
            .chain(decisions.out_of_scope_synced(&decided))
            .filter(|u| !waiting.contains(u) && !decisions.grace_over(*u))
            .collect();
        if more.is_empty() {
            return (decided, waiting);
        }
        waiting.extend(more);
    }
}

/// `Some(reason)` when `removals` exceeds a configured limit (SPEC 5.3).
fn over_limit(removals: usize, active_before: usize, safety: &Safety) -> Option<String> {
    if removals == 0 {
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

/// SPEC 4.9: each rule's group holds the records of its in-scope users, whichever rule decided
/// them. What a hold keeps is not half done (5.3): held users keep the memberships they have
/// and join no group until the hold is released; so do users waiting out the grace period
/// (SPEC 2), whose return then changes nothing.
fn groups_4_9(
    store: &StoreView,
    decided: &Decided,
    held: &[Change],
    waiting: &BTreeSet<ObjectId>,
    group_members: &BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    names: &BTreeMap<ObjectId, Option<String>>,
    decisions: &Decisions<'_>,
) -> Vec<GroupChange> {
    let held_users: HashSet<ObjectId> = held.iter().map(|c| c.object_id).collect();
    let mut held_records: HashSet<(RecordKind, i64)> = held
        .iter()
        .filter_map(|c| match c.record {
            RecordRef::Existing(id) => Some((c.kind, id)),
            RecordRef::New(_) => None,
        })
        .collect();
    if !waiting.is_empty() {
        held_records.extend(
            store
                .links
                .iter()
                .filter(|l| l.directory == decisions.directory() && waiting.contains(&l.object_id))
                .map(|l| (l.kind, l.record_id)),
        );
    }
    let mut out = Vec::new();
    for (group_id, users) in group_members {
        let wanted: BTreeSet<(RecordKind, RecordRef)> = users
            .iter()
            .filter(|u| !held_users.contains(u))
            .filter_map(|u| {
                decided
                    .live_record(*u)
                    .or_else(|| decisions.current_live(*u))
            })
            .collect();
        let stored = store.groups.iter().find(|g| g.object_id == *group_id);
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
                RecordRef::Existing(id) if !held_records.contains(&(*k, *id)) => Some((*k, *id)),
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
    for g in &store.groups {
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

/// [`Plan::purge_watch`] when retention is on and no record can fall due until someone
/// leaves: later than any cutoff.
pub const PURGE_NEVER: &str = "9999-12-31T23:59:59Z";

/// The retention cutoff at `now`: records deactivated before it may be purged (RFC 3339,
/// comparable as text with `deactivated_at`). At most a century back.
pub fn retention_cutoff(now: DateTime<Utc>, days: u64) -> String {
    let days = days.min(36_500) as i64;
    (now - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Plan {
    /// A `--user` run changes its people's group memberships only.
    fn keep_groups_of(&mut self, users: &BTreeSet<ObjectId>, store: &StoreView) {
        let mut theirs: Vec<(RecordKind, RecordRef)> = store
            .links
            .iter()
            .filter(|l| users.contains(&l.object_id))
            .map(|l| (l.kind, RecordRef::Existing(l.record_id)))
            .collect();
        theirs.extend(self.changes.iter().map(|c| (c.kind, c.record.clone())));
        for group in &mut self.groups {
            group.add.retain(|m| theirs.contains(m));
            group
                .remove
                .retain(|(k, id)| theirs.contains(&(*k, RecordRef::Existing(*id))));
        }
        self.groups.retain(|g| {
            !g.remove_group && (g.group.is_none() || !g.add.is_empty() || !g.remove.is_empty())
        });
    }

    /// SPEC 4.14, retention: purges the records deactivated before `cutoff` among
    /// `purgeable` (records of users out of scope, and archived records: never a record its
    /// user is in scope for, which they may come back to). Decided on the store as this plan
    /// leaves it: never the root, a record a ticket points at, one this plan reactivates,
    /// links, rewrites or makes a group member, or one a hold keeps. Purges are never counted by
    /// the mass-deactivation guard. Sets when the next purge will be due.
    fn purge_4_14(&mut self, run: &Run<'_>, store: &StoreView, purgeable: &[&Link], cutoff: &str) {
        let touched = self.touched();
        let held: HashSet<(RecordKind, i64)> = self
            .held
            .iter()
            .filter_map(|c| match c.record {
                RecordRef::Existing(id) => Some((c.kind, id)),
                RecordRef::New(_) => None,
            })
            .collect();
        let mut watch: Option<String> = self
            .changes
            .iter()
            .any(|c| c.action.removes())
            .then(|| run.now.to_string());
        let mut purged = false;
        for link in purgeable {
            let key = (link.kind, link.record_id);
            let Some(rec) = store.records.get(&key) else {
                continue;
            };
            if rec.active || rec.is_root || store.ticketed.contains(&key) || held.contains(&key) {
                continue;
            }
            let Some(since) = rec.deactivated_at.as_deref() else {
                continue;
            };
            // One this plan writes (an access revoked, say) is not purged now, but may be by
            // the next run: it is watched like one not due yet.
            if since >= cutoff || touched.contains(&key) {
                if watch.as_deref().is_none_or(|w| since < w) {
                    watch = Some(since.to_string());
                }
                continue;
            }
            purged = true;
            self.changes.push(Change::retire(
                Action::Purge,
                link,
                rec,
                rec.values.clone(),
                LinkWrite::Keep,
            ));
        }
        self.purge_watch = Some(if purged {
            String::new()
        } else {
            watch.unwrap_or_else(|| PURGE_NEVER.to_string())
        });
    }
}

#[cfg(test)]
mod tests;
