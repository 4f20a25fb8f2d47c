//! An incremental run planned from the users its changes touch, not the whole tenant (SPEC 8:
//! local work proportional to the change).
//!
//! Whose outcome can a change move? The users Entra changed (`Refreshed::touched`); the few
//! reported users [`waiting_on_others`] for a reason no name says; and — repeated until
//! nothing more is found — for every name in play (the emails and usernames those users want,
//! and those their records carry):
//! - every user of the tenant linked to a record those users are linked to or that holds a
//!   name they want (SPEC 4.3 takeovers, 4.8 names, 4.11 emails of other tenants are decided
//!   from exactly those records);
//! - every user who wants that name although no record of theirs carries it: with an open
//!   report about it (a user blocked by another's name is kept as a report, and a change that
//!   frees or takes the name settles it again), or whose record an admin renamed away from it
//!   (`Plan::unheld`: they still want it, 4.6).
//!
//! The planner decides them as a run of those users ([`Scope::Touched`]) from a store view of
//! only their records; everybody else is as the last run left them, which is what a plan of
//! the whole tenant would find too. Edits made behind the sync's back are not seen here: they
//! send the run to the whole tenant before it gets here (`Pending::edited`).
//!
//! When a plan of those users could differ from a plan of the whole tenant — a deactivation
//! limit reached or allowed, one of them waiting on someone else's change, a group to create,
//! rename or remove, a record to purge — it gives up (`None`) and the caller plans the whole
//! tenant. The random histories (`tests/e2e/histories.rs`) hold every incremental run to the
//! same store as a full one.
//!
//! Owns the choice of users; reads through the run's transaction; decides nothing itself.

use std::collections::{BTreeMap, BTreeSet};

use entra_sync_core::ObjectId;
use entra_sync_core::directory::Snapshot;
use entra_sync_core::plan::{self, Action, Plan, Scope, StoreView};
use entra_sync_core::resolve::{self, Report, ReportKind, Resolution};
use entra_sync_core::rules::Rules;

use crate::apply::RunWrite;
use crate::store::StoreError;
use crate::store::narrow::{Names, linked_users};

/// Past this many users to plan, planning the whole tenant costs about as much.
pub const USERS_LIMIT: usize = 5_000;

/// The same for the records read around them (names shared by many records).
const RECORDS_LIMIT: usize = 4 * USERS_LIMIT;

/// The plan of the users `touched` and `reported` bring in, and those users; `None` when only
/// a plan of the whole tenant can be trusted. `snapshot` holds the touched users as Entra has
/// them now (and every tracked group); the others' rows are added from the stored mirror.
/// `run.scope` is replaced.
pub fn plan(
    write: &RunWrite<'_>,
    rules: &Rules,
    run: &plan::Run<'_>,
    snapshot: &mut Snapshot,
    touched: &BTreeSet<ObjectId>,
    reported: &BTreeSet<ObjectId>,
) -> Result<Option<(Plan, BTreeSet<ObjectId>)>, StoreError> {
    // An edit made since the run looked (outside this transaction) is seen by a whole plan.
    if write.edited_since_whole_plan(run.tenant)? {
        return Ok(None);
    }
    let mut users: BTreeSet<ObjectId> = touched.union(reported).copied().collect();
    // Users to add from the stored mirror (the touched ones are in `snapshot` as they are
    // now), and those whose records, and the names they want, the view does not hold yet.
    let mut more: BTreeSet<ObjectId> = reported.difference(touched).copied().collect();
    let mut unread = users.clone();
    // The names in play looked up so far (records holding them, users wanting them).
    let mut looked_up = Names::default();
    let mut view = StoreView::default();
    // The records the NOCASE indexes cannot compare are read once, on the first pass.
    let mut unusual = true;
    let resolution = loop {
        if users.len() > USERS_LIMIT {
            return Ok(None);
        }
        write.mirror_users(run.tenant, &more, snapshot)?;
        let resolution = resolve::resolve(rules, snapshot);
        let mut fresh = names(&resolution, &mut looked_up);
        write.records_around(run.directory, &unread, &fresh, unusual, &mut view)?;
        unusual = false;
        // The names the records read carry, or would carry again when an archive is undone,
        // until every record holding one of those is read too.
        loop {
            if view.records.len() > RECORDS_LIMIT {
                return Ok(None);
            }
            let carried = carried(&view, &mut looked_up);
            if carried.emails.is_empty() && carried.usernames.is_empty() {
                break;
            }
            write.records_around(run.directory, &BTreeSet::new(), &carried, false, &mut view)?;
            fresh.emails.extend(carried.emails);
            fresh.usernames.extend(carried.usernames);
        }
        let wanting = write.users_wanting(run.tenant, &fresh)?;
        more = linked_users(&view, run.directory)
            .into_iter()
            .chain(wanting)
            .filter(|u| !users.contains(u))
            .collect();
        if more.is_empty() {
            break resolution;
        }
        users.extend(more.iter().copied());
        unread.clone_from(&more);
    };
    write.groups_around(run.tenant, &mut view)?;
    let group_names = plan::group_names(rules, snapshot);
    if !groups_settled(&view, &resolution, &group_names) {
        return Ok(None);
    }
    let run = plan::Run {
        scope: Scope::Touched(users.clone()),
        ..run.clone()
    };
    let mut planned = plan::plan(&run, resolution.clone(), &view, &group_names);
    if removes(&planned) {
        // The percent limit counts the directory's active records, not the view's.
        view.active_synced = Some(write.active_synced(run.directory)?);
        planned = plan::plan(&run, resolution, &view, &group_names);
    }
    // A purge is decided with the tickets pointing at records, which this view does not read.
    let whole_tenant_needed = guarded(&planned)
        || planned.changes.iter().any(|c| c.action == Action::Purge)
        || planned
            .reports
            .iter()
            .any(|r| r.kind == ReportKind::WaitsForFullSync);
    Ok((!whole_tenant_needed).then_some((planned, users)))
}

/// The reported users every run with changes plans again, whatever the change: those whose
/// outcome can move without a change of their own, for a reason no name says — an email
/// another tenant's record holds (4.11: that tenant's runs change it), a wait a `--user` run
/// left, a report from before the store kept names (migration 09). Reports about a name
/// (4.5, 4.8, 4.11 within the tenant) are found by the name, when a change touches it; a
/// user without an email or with incomplete data waits only on Entra changing them.
pub fn waiting_on_others(reports: &[Report]) -> BTreeSet<ObjectId> {
    reports
        .iter()
        .filter(|r| match r.kind {
            ReportKind::NoEmail | ReportKind::IncompleteData => false,
            ReportKind::EmailClaimed | ReportKind::WaitsForFullSync => true,
            _ => r.wants.is_empty(),
        })
        .map(|r| r.object_id)
        .collect()
}

/// Whether the mass-deactivation guard held, or let through, anything.
fn guarded(plan: &Plan) -> bool {
    !plan.held.is_empty() || plan.hold_reason.is_some() || plan.released.is_some()
}

/// Whether the plan takes a record out of service, or was stopped from doing so.
fn removes(plan: &Plan) -> bool {
    guarded(plan) || plan.changes.iter().any(|c| c.action.removes())
}

/// The emails and usernames the resolved users want, as the planner compares them, that are
/// not in `looked_up` yet (which then holds them too).
fn names(resolution: &Resolution, looked_up: &mut Names) -> Names {
    let mut names = Names::default();
    for desired in resolution.desired.values() {
        names.add_new(&desired.values, looked_up);
    }
    names
}

/// The emails and usernames the records of `view` carry, and those an archived one would
/// carry again if its archive were undone, as the planner compares them, that are not in
/// `looked_up` yet (which then holds them): whoever holds, wants or is reported about one of
/// those is decided with the records' users (a name a record keeps blocks others; a name
/// an undone archive gives back must be free).
fn carried(view: &StoreView, looked_up: &mut Names) -> Names {
    let mut names = Names::default();
    for record in view.records.values() {
        names.add_new(&record.values, looked_up);
        names.add_new(&record.values.unarchived(), looked_up);
    }
    names
}

/// Whether every rule's group is stored under its current name and no stored group has lost
/// its rule: then the plan changes no group but its members' (a run of some users would
/// create a group with only their records in it, SPEC 4.9).
fn groups_settled(
    view: &StoreView,
    resolution: &Resolution,
    names: &BTreeMap<ObjectId, Option<String>>,
) -> bool {
    let stored: BTreeMap<ObjectId, &Option<String>> = view
        .groups
        .iter()
        .map(|g| (g.object_id, &g.display_name))
        .collect();
    resolution.group_members.keys().all(|group| {
        stored.get(group).is_some_and(|name| {
            names
                .get(group)
                .and_then(Option::as_ref)
                .is_none_or(|current| name.as_ref() == Some(current))
        })
    }) && stored
        .keys()
        .all(|group| resolution.group_members.contains_key(group))
}
