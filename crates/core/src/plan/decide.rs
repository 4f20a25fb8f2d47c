//! Each user's decision, one function per SPEC rule: email claims of other tenants (4.11),
//! matching (4.3), the root (4.5), kind change (4.4), rewriting (4.6), deactivation (4.7) and
//! usernames and emails shared by several users (4.8, and 4.11 within the tenant).
//!
//! A decision is made in two steps. First each user on their own: which record they live in,
//! which records they archive, what is written. Then the names: a username or email two users
//! want, or that a record nobody rewrites keeps, goes to one of them by a rule that does not
//! depend on the order users are planned in — whoever holds it now, else the smaller object id;
//! a user who loses a name is skipped with a report, which keeps their records as they are,
//! so the names are settled again until nothing changes. A user claims the names they want,
//! except a return that undoes an archive: it claims the names it gives back to the record
//! (an admin may have renamed it before), and is reported under those.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::id::{Email, ObjectId, Username};
use crate::record::{RecordKind, StoredRecord, Values};
use crate::resolve::{Desired, Report, ReportKind, Wants};

use super::{Action, Change, Link, LinkState, LinkWrite, RecordRef, Run, StoreView};

/// How a user reached the record of their kind (SPEC 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Matched {
    /// Their own linked record, in whatever state.
    Linked(i64),
    /// A record with their email that no other in-scope user holds: taken over.
    TakenOver(i64),
    /// None: a new record.
    New,
}

/// A user's outcome in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// In scope, decided: the record of their kind, what is done to it, and the records of the
    /// other kind archived (SPEC 4.4).
    Live {
        kind: RecordKind,
        matched: Matched,
        action: Option<Action>,
        archives: Vec<i64>,
    },
    /// Out of scope: their active records, deactivated.
    Leaving(Vec<(RecordKind, i64, Action)>),
    /// Skipped with a report: their records stay as they are.
    Skipped(Report),
}

/// Everything the decisions read, indexed once per plan.
pub(super) struct Decisions<'a> {
    run: &'a Run<'a>,
    store: &'a StoreView,
    /// The in-scope users and what they should become (moved into the changes at the end).
    desired: BTreeMap<ObjectId, Desired>,
    untouchable: &'a BTreeSet<ObjectId>,
    /// This directory's links by user.
    mine: BTreeMap<ObjectId, Vec<&'a Link>>,
    /// The link of each record, whatever its directory.
    owner: HashMap<(RecordKind, i64), &'a Link>,
    by_email: HashMap<Email, Vec<(RecordKind, i64)>>,
    by_username: HashMap<Username, Vec<i64>>,
}

/// The names a live user wants and the records they rewrite, while names are settled.
struct Claim {
    email: Option<Email>,
    username: Option<Username>,
    /// The records the user's outcome touches (theirs: they never block the user).
    records: Vec<(RecordKind, i64)>,
    /// Those of them the outcome writes names to; the others keep theirs (a record the run
    /// leaves as it is, local edits and all, keeps the names it has).
    written: Vec<(RecordKind, i64)>,
}

/// The outcomes of a plan's users.
pub(super) struct Decided {
    outcomes: BTreeMap<ObjectId, Outcome>,
    /// The `…_Archived` username each archived employee gets.
    archived_names: HashMap<i64, String>,
    /// Reports besides the skips: the root's leavers.
    reports: Vec<Report>,
}

impl<'a> Decisions<'a> {
    pub(super) fn new(
        run: &'a Run<'a>,
        store: &'a StoreView,
        desired: BTreeMap<ObjectId, Desired>,
        untouchable: &'a BTreeSet<ObjectId>,
    ) -> Decisions<'a> {
        let mut mine: BTreeMap<ObjectId, Vec<&Link>> = BTreeMap::new();
        let mut owner = HashMap::new();
        for link in &store.links {
            if !store.records.contains_key(&(link.kind, link.record_id)) {
                continue; // the record was deleted outside the sync: the link is stale
            }
            owner.insert((link.kind, link.record_id), link);
            if link.directory == run.directory {
                mine.entry(link.object_id).or_default().push(link);
            }
        }
        let mut by_email: HashMap<Email, Vec<(RecordKind, i64)>> = HashMap::new();
        let mut by_username: HashMap<Username, Vec<i64>> = HashMap::new();
        for ((kind, id), rec) in &store.records {
            if let Some(email) = rec.values.email_key() {
                by_email.entry(email).or_default().push((*kind, *id));
            }
            if let Some(name) = rec.values.username_key() {
                by_username.entry(name).or_default().push(*id);
            }
        }
        Decisions {
            run,
            store,
            desired,
            untouchable,
            mine,
            owner,
            by_email,
            by_username,
        }
    }

    /// The directory being planned.
    pub(super) fn directory(&self) -> &str {
        self.run.directory
    }

    fn record(&self, kind: RecordKind, id: i64) -> Option<&'a StoredRecord> {
        self.store.records.get(&(kind, id))
    }

    fn in_scope(&self, user: ObjectId) -> bool {
        self.desired.contains_key(&user) || self.untouchable.contains(&user)
    }

    /// Everybody this run knows of (in scope, or linked in this directory) but `users`.
    pub(super) fn everybody_but(&self, users: &BTreeSet<ObjectId>) -> BTreeSet<ObjectId> {
        self.desired
            .keys()
            .chain(self.untouchable.iter())
            .chain(self.mine.keys())
            .copied()
            .filter(|u| !users.contains(u))
            .collect()
    }

    /// This directory's active linked records before the run (the percent guard's base).
    pub(super) fn active_synced(&self) -> usize {
        if let Some(counted) = self.store.active_synced {
            return counted;
        }
        self.mine
            .values()
            .flatten()
            .filter(|l| self.record(l.kind, l.record_id).is_some_and(|r| r.active))
            .count()
    }

    /// This directory's links retention may purge once their record is old enough: those of
    /// users out of scope whose record this run does not take over and who do not wait out the
    /// grace period, and archived ones.
    pub(super) fn purgeable(
        &self,
        decided: &Decided,
        waiting: &BTreeSet<ObjectId>,
    ) -> Vec<&'a Link> {
        let taken = decided.taken();
        let mut out = Vec::new();
        for (user, links) in &self.mine {
            if waiting.contains(user) {
                continue;
            }
            let out_of_scope = !self.in_scope(*user);
            out.extend(links.iter().copied().filter(|l| {
                (out_of_scope || l.state.archived()) && !taken.contains(&(l.kind, l.record_id))
            }));
        }
        out
    }

    /// The record a user not decided this run (skipped, say) still lives in, for group
    /// membership: the one the sync last wrote for them and did not take out of service,
    /// whether or not an admin deactivated it since (a local edit must not change what a run
    /// that sees nothing new in Entra would not: SPEC 4.13).
    pub(super) fn current_live(&self, user: ObjectId) -> Option<(RecordKind, RecordRef)> {
        self.mine
            .get(&user)?
            .iter()
            .filter(|l| l.state == LinkState::Synced && self.record(l.kind, l.record_id).is_some())
            .map(|l| (l.kind, l.record_id))
            .min()
            .map(|(kind, id)| (kind, RecordRef::Existing(id)))
    }

    /// The grace period (SPEC 2), in minutes; 0 without one.
    pub(super) fn grace_minutes(&self) -> u64 {
        self.run.safety.deactivate_after_minutes
    }

    /// Since when `user` is out of scope: as a run first saw it, else now.
    fn out_since(&self, user: ObjectId) -> &str {
        self.store
            .out_of_scope_since
            .get(&user)
            .map_or(self.run.now, String::as_str)
    }

    /// Whether `user`, out of scope, has been so for the grace period (always, without one).
    pub(super) fn grace_over(&self, user: ObjectId) -> bool {
        super::grace_reached(self.out_since(user), self.run.now, self.grace_minutes())
    }

    /// The users out of scope whose deactivation stays pending after the run: those waiting
    /// out the grace period and the leavers a hold keeps, each with when it started.
    pub(super) fn waiting(
        &self,
        waiting: &BTreeSet<ObjectId>,
        held: &[super::Change],
    ) -> Vec<super::Waiting> {
        let now = self.run.now;
        let held_leavers = held
            .iter()
            .map(|c| c.object_id)
            .filter(|u| !self.in_scope(*u));
        let users: BTreeSet<ObjectId> = waiting.iter().copied().chain(held_leavers).collect();
        users
            .into_iter()
            .map(|user| {
                let since = self.out_since(user);
                super::Waiting {
                    object_id: user,
                    user: self.label(user),
                    since: since.to_string(),
                    due: super::grace_due(since, now, self.grace_minutes()),
                }
            })
            .collect()
    }

    /// How to name a user who is out of scope: the UPN they were last synced from, else
    /// their record's email, else their object id.
    fn label(&self, user: ObjectId) -> String {
        let links = self.mine.get(&user).map(Vec::as_slice).unwrap_or_default();
        links
            .iter()
            .find_map(|l| l.upn.clone())
            .or_else(|| {
                links.iter().find_map(|l| {
                    self.record(l.kind, l.record_id)
                        .and_then(|r| r.values.email().map(str::to_string))
                })
            })
            .unwrap_or_else(|| user.to_string())
    }

    /// A `--user` person whose outcome waits on somebody else's pending change: reported,
    /// nothing of theirs written.
    pub(super) fn wait(&self, decided: &mut Decided, user: ObjectId) {
        let name = self
            .desired
            .get(&user)
            .map_or_else(|| user.to_string(), |d| d.user.to_string());
        let report = Report {
            kind: ReportKind::WaitsForFullSync,
            object_id: user,
            user: name,
            message: "the outcome depends on another user's pending change (a username or email \
                      someone else is about to free); nothing was written: run a full sync"
                .into(),
            wants: Wants::default(),
        };
        decided.outcomes.insert(user, Outcome::Skipped(report));
    }

    /// Decides every user but the `kept` ones, who keep their records as they are.
    pub(super) fn decide(&self, kept: &BTreeSet<ObjectId>) -> Decided {
        let mut outcomes: BTreeMap<ObjectId, Outcome> = BTreeMap::new();
        for (user, d) in &self.desired {
            if kept.contains(user) {
                continue;
            }
            outcomes.insert(*user, self.decide_alone(d, kept));
        }
        self.names_4_8(&mut outcomes, kept);
        let mut reports = Vec::new();
        let taken: HashSet<(RecordKind, i64)> =
            outcomes.values().flat_map(Self::records_of).collect();
        for (user, links) in &self.mine {
            if self.in_scope(*user) || kept.contains(user) {
                continue;
            }
            let leaving = self.deactivate_4_7(links, &taken, &mut reports);
            if !leaving.is_empty() {
                outcomes.insert(*user, Outcome::Leaving(leaving));
            }
        }
        let archived_names = self.archived_usernames(&outcomes);
        Decided {
            outcomes,
            archived_names,
            reports,
        }
    }

    /// One user's outcome on their own, before names are settled with the others.
    fn decide_alone(&self, d: &Desired, kept: &BTreeSet<ObjectId>) -> Outcome {
        let email = d.values.email_key().unwrap_or_else(|| Email::new(""));
        if let Some(report) = self.email_claims_4_11(d, &email) {
            return Outcome::Skipped(report);
        }
        let matched = self.match_4_3(d, &email, kept);
        if let Some(report) = self.root_4_5(d, matched) {
            return Outcome::Skipped(report);
        }
        let archives = match self.kind_change_4_4(d, &email) {
            Ok(archives) => archives,
            Err(report) => return Outcome::Skipped(report),
        };
        Outcome::Live {
            kind: d.kind(),
            matched,
            action: self.rewrite_4_6(d, matched),
            archives,
        }
    }

    /// SPEC 4.11: an email linked to another tenant's record (active or not) stays there.
    fn email_claims_4_11(&self, d: &Desired, email: &Email) -> Option<Report> {
        let foreign = self
            .by_email
            .get(email)?
            .iter()
            .filter_map(|r| self.owner.get(r))
            .find(|l| l.directory != self.run.directory)?;
        Some(report(
            d,
            ReportKind::EmailClaimed,
            format!(
                "email {} already belongs to a record of tenant \"{}\"; not synced here",
                d.values.email().unwrap_or_default(),
                self.store.directory_name(&foreign.directory)
            ),
        ))
    }

    /// SPEC 4.3: the user's linked record of the target kind, in whatever state; else a record
    /// of the kind with the same email, active or not, that no other in-scope user holds
    /// (unlinked, or linked to a user of this tenant who is no longer in scope: a rehire or a
    /// re-created account takes over its old record), active ones first, then the oldest;
    /// else a new record.
    fn match_4_3(&self, d: &Desired, email: &Email, kept: &BTreeSet<ObjectId>) -> Matched {
        let kind = d.kind();
        if let Some(link) = self.link_of(d.object_id, kind) {
            return Matched::Linked(link.record_id);
        }
        let free = |r: &&(RecordKind, i64)| {
            r.0 == kind
                && match self.owner.get(r) {
                    None => true,
                    Some(l) => {
                        l.directory == self.run.directory
                            && l.object_id != d.object_id
                            && !self.in_scope(l.object_id)
                            && !kept.contains(&l.object_id)
                    }
                }
        };
        self.by_email
            .get(email)
            .into_iter()
            .flatten()
            .filter(free)
            .filter_map(|r| self.record(r.0, r.1))
            .min_by_key(|rec| (!rec.active, rec.id))
            .map_or(Matched::New, |rec| Matched::TakenOver(rec.id))
    }

    fn link_of(&self, user: ObjectId, kind: RecordKind) -> Option<&'a Link> {
        self.mine
            .get(&user)?
            .iter()
            .find(|l| l.kind == kind)
            .copied()
    }

    /// SPEC 4.5: the root employee is never changed by a sync.
    fn root_4_5(&self, d: &Desired, matched: Matched) -> Option<Report> {
        let id = match matched {
            Matched::Linked(id) | Matched::TakenOver(id) => id,
            Matched::New => return None,
        };
        self.record(d.kind(), id)
            .is_some_and(|r| r.is_root)
            .then(|| {
                report(
                    d,
                    ReportKind::RootConflict,
                    "would change the root employee, which the sync never touches".into(),
                )
            })
    }

    /// SPEC 4.4: the records of the other kind that leave with a kind change: linked to the
    /// user and not yet archived (active or deactivated), or active, unlinked and with the
    /// user's email. Seen in one run or across several, the move ends with one live record.
    fn kind_change_4_4(&self, d: &Desired, email: &Email) -> Result<Vec<i64>, Report> {
        let other = d.kind().other();
        let mut archives: BTreeSet<i64> = BTreeSet::new();
        if let Some(link) = self.link_of(d.object_id, other)
            && !link.state.archived()
        {
            archives.insert(link.record_id);
        }
        for r in self.by_email.get(email).into_iter().flatten() {
            if r.0 == other
                && !self.owner.contains_key(r)
                && self.record(r.0, r.1).is_some_and(|rec| rec.active)
            {
                archives.insert(r.1);
            }
        }
        if archives
            .iter()
            .any(|id| self.record(other, *id).is_some_and(|r| r.is_root))
        {
            return Err(report(
                d,
                ReportKind::RootConflict,
                "would archive the root employee, which the sync never touches".into(),
            ));
        }
        Ok(archives.into_iter().collect())
    }

    /// SPEC 4.6: what is written to the user's record. A record is rewritten from Entra when
    /// the user's values or rule outcome changed since it was last written (local edits
    /// persist until then); a record an admin deactivated while the user stayed in scope stays
    /// deactivated until then (a local edit too), while one the sync took out of service
    /// comes back. A `--user` run rewrites its person's record even when Entra did not change.
    fn rewrite_4_6(&self, d: &Desired, matched: Matched) -> Option<Action> {
        let forced = self.run.scope.names(d.object_id);
        let (id, linked) = match matched {
            Matched::New => return Some(Action::Create),
            Matched::Linked(id) => (id, true),
            Matched::TakenOver(id) => (id, false),
        };
        let rec = self.record(d.kind(), id)?;
        if !linked {
            return Some(if rec.active {
                Action::Merge
            } else {
                Action::Reactivate
            });
        }
        let link = self.link_of(d.object_id, d.kind())?;
        let unchanged = !forced && link.source.as_ref() == Some(&d.values);
        match (link.state, rec.active) {
            (LinkState::Left | LinkState::Archived, _) => Some(Action::Reactivate),
            // The archive is undone; the record stays as the admin left it (deactivated).
            // The archive or the revocation is undone; the record stays as the admin left it.
            (LinkState::ArchivedInactive | LinkState::LeftInactive, _) if unchanged => {
                Some(Action::Update)
            }
            (LinkState::ArchivedInactive | LinkState::LeftInactive, _) => Some(Action::Reactivate),
            (LinkState::Synced, false) if unchanged => None,
            (LinkState::Synced, false) => Some(Action::Reactivate),
            (LinkState::Synced, true) if unchanged => None,
            (LinkState::Synced, true) if rec.values == d.values => Some(Action::Resnapshot),
            (LinkState::Synced, true) => Some(Action::Update),
        }
    }

    /// What a user's return writes to the record the sync took out of service (it left
    /// scope, or changed kind and back) when nothing else changed since it was written: it
    /// undoes what the sync did — service, access, the `_Archived` names — and nothing more, so
    /// local edits made before stay (SPEC 4.6), as they do when no run saw them go (4.13).
    /// `None` when the record is simply rewritten from Entra.
    fn undone(&self, d: &Desired, current: &Values) -> Option<Values> {
        if self.run.scope.names(d.object_id) {
            return None;
        }
        let link = self.link_of(d.object_id, d.kind())?;
        if link.source.as_ref() != Some(&d.values) {
            return None;
        }
        match link.state {
            LinkState::Synced => None,
            LinkState::Left | LinkState::LeftInactive => Some(current.with_access_of(&d.values)),
            LinkState::Archived | LinkState::ArchivedInactive => {
                Some(current.unarchived().with_access_of(&d.values))
            }
        }
    }

    /// The names a live user claims: those they want — or, when their return undoes an
    /// archive, the names that gives back, which are the record's own (an admin may have
    /// renamed it before) and must be free like any other name written.
    fn claimed_names(&self, d: &Desired, outcome: &Outcome) -> (Option<Email>, Option<Username>) {
        if let Some(values) = self.unarchiving(d, outcome) {
            return (values.email_key(), values.username_key());
        }
        (d.values.email_key(), d.values.username_key())
    }

    /// What a live user's return writes to the record the sync archived, when it gives back
    /// the record's own names (see [`Self::undone`]).
    fn unarchiving(&self, d: &Desired, outcome: &Outcome) -> Option<Values> {
        let Outcome::Live {
            kind,
            matched: Matched::Linked(id),
            action: Some(_),
            ..
        } = outcome
        else {
            return None;
        };
        if !self.link_of(d.object_id, *kind)?.state.archived() {
            return None;
        }
        self.undone(d, &self.record(*kind, *id)?.values)
    }

    /// The live users whose record will not carry the names they want after this plan: it
    /// is not rewritten (or only given back on their return), and an admin renamed it.
    pub(super) fn unheld(&self, decided: &Decided) -> Vec<(ObjectId, Wants)> {
        decided
            .outcomes
            .iter()
            .filter_map(|(user, outcome)| {
                let Outcome::Live {
                    kind,
                    matched: Matched::Linked(id) | Matched::TakenOver(id),
                    action,
                    ..
                } = outcome
                else {
                    return None;
                };
                let d = self.desired.get(user)?;
                let record = self.record(*kind, *id)?;
                let after = match self.unarchiving(d, outcome) {
                    Some(values) => values,
                    None if action.is_some() && !self.only_returning(d) => return None,
                    None => record.values.clone(),
                };
                let wants = Wants {
                    email: d.values.email_key(),
                    username: d.values.username_key(),
                };
                let carried = Wants {
                    email: after.email_key(),
                    username: after.username_key(),
                };
                (wants != carried).then_some((*user, wants))
            })
            .collect()
    }

    /// Whether the user's return only gives back service and access (their names stay as the
    /// record has them).
    fn only_returning(&self, d: &Desired) -> bool {
        !self.run.scope.names(d.object_id)
            && self.link_of(d.object_id, d.kind()).is_some_and(|l| {
                matches!(l.state, LinkState::Left | LinkState::LeftInactive)
                    && l.source.as_ref() == Some(&d.values)
            })
    }

    /// SPEC 4.7: the records of a user who left scope (removed from every rule's group,
    /// disabled, deleted, lost their email) leave service — unless a returning account took
    /// one over this run. Never the root; never deleted. A record already out of service (an
    /// admin deactivated it) only loses its access and stays as it is otherwise, so that the
    /// user's return gives back exactly that: whether a run saw them leave must not matter
    /// (SPEC 4.13).
    fn deactivate_4_7(
        &self,
        links: &[&Link],
        taken: &HashSet<(RecordKind, i64)>,
        reports: &mut Vec<Report>,
    ) -> Vec<(RecordKind, i64, Action)> {
        let mut out = Vec::new();
        for link in links {
            let key = (link.kind, link.record_id);
            let Some(rec) = self.record(link.kind, link.record_id) else {
                continue;
            };
            if taken.contains(&key) || link.state != LinkState::Synced {
                continue;
            }
            if !rec.active {
                // Out of service already: only the access goes (SPEC 4.7), the record stays
                // as the admin left it.
                if !rec.is_root && rec.values.revoked() != rec.values {
                    out.push((link.kind, link.record_id, Action::Update));
                }
                continue;
            }
            if rec.is_root {
                reports.push(Report {
                    kind: ReportKind::RootConflict,
                    object_id: link.object_id,
                    user: link.object_id.to_string(),
                    message: "left scope, but the root employee is never deactivated".into(),
                    wants: Wants::default(),
                });
                continue;
            }
            out.push((link.kind, link.record_id, Action::Deactivate));
        }
        out
    }

    /// The records an outcome rewrites, takes over or archives.
    fn records_of(outcome: &Outcome) -> Vec<(RecordKind, i64)> {
        match outcome {
            Outcome::Live {
                kind,
                matched,
                archives,
                ..
            } => {
                let mut out: Vec<_> = archives.iter().map(|id| (kind.other(), *id)).collect();
                if let Matched::Linked(id) | Matched::TakenOver(id) = matched {
                    out.push((*kind, *id));
                }
                out
            }
            Outcome::Leaving(_) | Outcome::Skipped(_) => Vec::new(),
        }
    }

    /// SPEC 4.8 and 4.11 within the tenant: usernames are unique across all employees and an
    /// email belongs to one in-scope person.
    ///
    /// First the blocks: a name a live user wants is blocked by a record nobody rewrites this
    /// run that keeps it (for emails: an active record of another user of this tenant who
    /// keeps it). A blocked user is skipped, which keeps their records as they are, which can
    /// block others: repeated until nothing more is blocked (the result does not depend on the
    /// order users are looked at, since a skip only ever blocks more). Then a name several live
    /// users want goes to whoever holds it now, else to the smaller object id; the others are
    /// skipped, and the blocks are settled again.
    fn names_4_8(&self, outcomes: &mut BTreeMap<ObjectId, Outcome>, kept: &BTreeSet<ObjectId>) {
        let mut claims: BTreeMap<ObjectId, Claim> = BTreeMap::new();
        // Users whose claim is not the names they want (an undone archive gives back the
        // record's own): their reports speak of, and are kept under, the names claimed.
        let mut as_claimed: HashMap<ObjectId, Desired> = HashMap::new();
        // Those of them whose record's own email another tenant's record has (4.11), skipped
        // before the names are settled, like any user whose email does.
        let mut claimed_elsewhere: Vec<(ObjectId, Report)> = Vec::new();
        for (user, outcome) in outcomes.iter() {
            if matches!(outcome, Outcome::Live { .. }) {
                let d = &self.desired[user];
                if let Some(values) = self.unarchiving(d, outcome) {
                    let claimed = Desired {
                        values,
                        ..d.clone()
                    };
                    if let Some(report) = claimed
                        .values
                        .email_key()
                        .and_then(|email| self.email_claims_4_11(&claimed, &email))
                    {
                        claimed_elsewhere.push((*user, report));
                        continue;
                    }
                    as_claimed.insert(*user, claimed);
                }
                let records = Self::records_of(outcome);
                let written = match outcome {
                    Outcome::Live {
                        kind,
                        action,
                        archives,
                        ..
                    } if action.is_none() || self.only_returning(d) => {
                        archives.iter().map(|id| (kind.other(), *id)).collect()
                    }
                    _ => records.clone(),
                };
                let (email, username) = self.claimed_names(d, outcome);
                claims.insert(
                    *user,
                    Claim {
                        email,
                        username,
                        records,
                        written,
                    },
                );
            }
        }
        for (user, report) in claimed_elsewhere {
            outcomes.insert(user, Outcome::Skipped(report));
        }
        let mut rewritten: HashSet<(RecordKind, i64)> = claims
            .values()
            .flat_map(|c| c.written.iter().copied())
            .collect();
        let mut wanted_emails: HashMap<Email, Vec<ObjectId>> = HashMap::new();
        let mut wanted_names: HashMap<Username, Vec<ObjectId>> = HashMap::new();
        for (user, claim) in &claims {
            if let Some(e) = &claim.email {
                wanted_emails.entry(e.clone()).or_default().push(*user);
            }
            if let Some(n) = &claim.username {
                wanted_names.entry(n.clone()).or_default().push(*user);
            }
        }
        let mut todo: BTreeSet<ObjectId> = claims.keys().copied().collect();
        loop {
            // The blocks, to their fixpoint.
            while let Some(user) = todo.pop_first() {
                let Some(claim) = claims.get(&user) else {
                    continue;
                };
                let d = as_claimed.get(&user).unwrap_or(&self.desired[&user]);
                let report = claim
                    .username
                    .as_ref()
                    .and_then(|n| {
                        self.username_blocker(n, &rewritten, &claim.records)
                            .map(|id| self.username_taken(d, n, id))
                    })
                    .or_else(|| {
                        let email = claim.email.as_ref()?;
                        self.email_blocker(user, email, &rewritten, &claim.records, kept)
                            .map(|holder| duplicate(d, holder))
                    });
                if let Some(report) = report {
                    self.skip(
                        user,
                        report,
                        outcomes,
                        &mut claims,
                        &mut rewritten,
                        &mut todo,
                        &wanted_emails,
                        &wanted_names,
                    );
                }
            }
            // The contended names.
            // A winner claiming its record's own name does not want it from Entra: the runs
            // after see its record keep the name, and say so; this one says the same.
            let mut losers = self.contended(
                &wanted_names,
                &claims,
                &as_claimed,
                |v, n| v.username_key().as_ref() == Some(n),
                |d, name, winner| match self.link_of(winner, RecordKind::Employee) {
                    Some(link) if as_claimed.contains_key(&winner) => {
                        self.username_taken(d, name, link.record_id)
                    }
                    _ => self.username_taken_by(d, winner),
                },
            );
            losers.extend(self.contended(
                &wanted_emails,
                &claims,
                &as_claimed,
                |v, e| v.email_key().as_ref() == Some(e),
                |d, _, winner| duplicate(d, winner),
            ));
            if losers.is_empty() {
                return;
            }
            losers.sort();
            for (user, report) in losers {
                if claims.contains_key(&user) {
                    self.skip(
                        user,
                        report,
                        outcomes,
                        &mut claims,
                        &mut rewritten,
                        &mut todo,
                        &wanted_emails,
                        &wanted_names,
                    );
                }
            }
        }
    }

    /// Skips `user`: their records keep their names, so whoever wants one of those names, or
    /// the names the user wanted, is looked at again.
    #[allow(clippy::too_many_arguments)]
    fn skip(
        &self,
        user: ObjectId,
        report: Report,
        outcomes: &mut BTreeMap<ObjectId, Outcome>,
        claims: &mut BTreeMap<ObjectId, Claim>,
        rewritten: &mut HashSet<(RecordKind, i64)>,
        todo: &mut BTreeSet<ObjectId>,
        wanted_emails: &HashMap<Email, Vec<ObjectId>>,
        wanted_names: &HashMap<Username, Vec<ObjectId>>,
    ) {
        outcomes.insert(user, Outcome::Skipped(report));
        let Some(claim) = claims.remove(&user) else {
            return;
        };
        for r in &claim.written {
            rewritten.remove(r);
            let Some(rec) = self.record(r.0, r.1) else {
                continue;
            };
            if let Some(n) = rec.values.username_key() {
                todo.extend(wanted_names.get(&n).into_iter().flatten());
            }
            if let Some(e) = rec.values.email_key() {
                todo.extend(wanted_emails.get(&e).into_iter().flatten());
            }
        }
        todo.remove(&user);
    }

    /// The users who lose a name several live users want, each with their report.
    fn contended<K: std::hash::Hash + Eq>(
        &self,
        wanted: &HashMap<K, Vec<ObjectId>>,
        claims: &BTreeMap<ObjectId, Claim>,
        as_claimed: &HashMap<ObjectId, Desired>,
        carries: impl Fn(&Values, &K) -> bool,
        lost: impl Fn(&Desired, &K, ObjectId) -> Report,
    ) -> Vec<(ObjectId, Report)> {
        let mut losers = Vec::new();
        for (name, wanting) in wanted {
            let live: Vec<ObjectId> = wanting
                .iter()
                .copied()
                .filter(|u| claims.contains_key(u))
                .collect();
            if live.len() < 2 {
                continue;
            }
            let winner = self.winner(&live, |u| {
                self.carried(&claims[&u].records, |v| carries(v, name))
            });
            for user in live.into_iter().filter(|u| *u != winner) {
                let d = as_claimed.get(&user).unwrap_or(&self.desired[&user]);
                losers.push((user, lost(d, name, winner)));
            }
        }
        losers
    }

    /// Of the users wanting one name: the one holding it now (the smaller id if several),
    /// else the smaller id.
    fn winner(&self, wanting: &[ObjectId], holds: impl Fn(ObjectId) -> bool) -> ObjectId {
        let holders: Vec<ObjectId> = wanting.iter().copied().filter(|u| holds(*u)).collect();
        let pool = if holders.is_empty() {
            wanting
        } else {
            &holders
        };
        pool.iter().copied().min().unwrap_or(ObjectId::from_u128(0))
    }

    /// Whether one of these records carries a name now.
    fn carried(&self, records: &[(RecordKind, i64)], carries: impl Fn(&Values) -> bool) -> bool {
        records
            .iter()
            .filter_map(|(k, id)| self.record(*k, *id))
            .any(|r| carries(&r.values))
    }

    /// An employee record nobody rewrites this run that keeps `name`.
    fn username_blocker(
        &self,
        name: &Username,
        rewritten: &HashSet<(RecordKind, i64)>,
        own: &[(RecordKind, i64)],
    ) -> Option<i64> {
        self.by_username.get(name)?.iter().copied().find(|id| {
            let key = (RecordKind::Employee, *id);
            !rewritten.contains(&key) && !own.contains(&key)
        })
    }

    /// Another user of this tenant whose active record with `email` stays as it is this run
    /// (they are skipped, kept, or have incomplete data).
    fn email_blocker(
        &self,
        user: ObjectId,
        email: &Email,
        rewritten: &HashSet<(RecordKind, i64)>,
        mine: &[(RecordKind, i64)],
        kept: &BTreeSet<ObjectId>,
    ) -> Option<ObjectId> {
        self.by_email
            .get(email)?
            .iter()
            .filter(|r| !rewritten.contains(r) && !mine.contains(r))
            .filter(|r| self.record(r.0, r.1).is_some_and(|rec| rec.active))
            .filter_map(|r| self.owner.get(r))
            .find(|l| {
                l.directory == self.run.directory
                    && l.object_id != user
                    && (self.in_scope(l.object_id) || kept.contains(&l.object_id))
            })
            .map(|l| l.object_id)
    }

    /// The report of a user whose username `record` keeps. When that record's user wants the
    /// name too, it says so, as the run that settled the name between them did: the report
    /// reads the same whether or not the holder's record is rewritten this run, so it does
    /// not depend on how the runs were split (SPEC 4.13).
    fn username_taken(&self, d: &Desired, name: &Username, record: i64) -> Report {
        let holder = self
            .owner
            .get(&(RecordKind::Employee, record))
            .filter(|l| l.directory == self.run.directory)
            .filter(|l| {
                self.desired
                    .get(&l.object_id)
                    .and_then(|h| h.values.username_key())
                    .as_ref()
                    == Some(name)
            });
        if let Some(holder) = holder {
            return self.username_taken_by(d, holder.object_id);
        }
        report(
            d,
            ReportKind::UsernameCollision,
            format!(
                "username {} is taken by another employee record (#{record}); the user is skipped until it is freed",
                d.values.username().unwrap_or_default()
            ),
        )
    }

    fn username_taken_by(&self, d: &Desired, winner: ObjectId) -> Report {
        report(
            d,
            ReportKind::UsernameCollision,
            format!(
                "username {} is also wanted by Entra user {winner}, who keeps it; fix the duplicate in Entra",
                d.values.username().unwrap_or_default()
            ),
        )
    }

    /// The `…_Archived` username of each archived employee: the first of `_Archived`,
    /// `_Archived2`, … that no employee has and no live user wants.
    fn archived_usernames(&self, outcomes: &BTreeMap<ObjectId, Outcome>) -> HashMap<i64, String> {
        let wanted: HashSet<Username> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Live { .. }))
            .filter_map(|(u, _)| self.desired[u].values.username_key())
            .collect();
        let mut given: HashSet<Username> = HashSet::new();
        let mut out = HashMap::new();
        for outcome in outcomes.values() {
            let Outcome::Live {
                kind: RecordKind::Contact,
                archives,
                ..
            } = outcome
            else {
                continue;
            };
            for id in archives {
                let Some(name) = self
                    .record(RecordKind::Employee, *id)
                    .and_then(|r| r.values.username())
                else {
                    continue;
                };
                let free = |candidate: &Username| {
                    !self.by_username.contains_key(candidate)
                        && !wanted.contains(candidate)
                        && !given.contains(candidate)
                };
                let mut n = 1;
                let mut suffix = "_Archived".to_string();
                while !free(&Username::new(&format!("{name}{suffix}"))) {
                    n += 1;
                    suffix = format!("_Archived{n}");
                }
                given.insert(Username::new(&format!("{name}{suffix}")));
                out.insert(*id, suffix);
            }
        }
        out
    }
}

fn report(d: &Desired, kind: ReportKind, message: String) -> Report {
    Report {
        kind,
        object_id: d.object_id,
        user: d.user.to_string(),
        message,
        wants: Wants {
            email: d.values.email_key(),
            username: d.values.username_key(),
        },
    }
}

fn duplicate(d: &Desired, holder: ObjectId) -> Report {
    report(
        d,
        ReportKind::DuplicateEmail,
        format!(
            "email {} belongs to the record of Entra user {holder}; fix the duplicate in Entra",
            d.values.email().unwrap_or_default(),
        ),
    )
}

impl Decided {
    fn removal_count(&self, store: &StoreView, outcome: &Outcome) -> usize {
        let active =
            |kind: RecordKind, id: i64| store.records.get(&(kind, id)).is_some_and(|r| r.active);
        match outcome {
            Outcome::Live { kind, archives, .. } => archives
                .iter()
                .filter(|id| active(kind.other(), **id))
                .count(),
            Outcome::Leaving(records) => records
                .iter()
                .filter(|(_, _, a)| *a == Action::Deactivate)
                .count(),
            Outcome::Skipped(_) => 0,
        }
    }
}

impl Decisions<'_> {
    /// Records this decision takes out of service (active ones deactivated or archived).
    pub(super) fn removals(&self, decided: &Decided) -> usize {
        decided
            .outcomes
            .values()
            .map(|o| decided.removal_count(self.store, o))
            .sum()
    }

    /// The users out of scope whose records this decision takes out of service or strips.
    pub(super) fn leaving_users(&self, decided: &Decided) -> BTreeSet<ObjectId> {
        decided
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Leaving(_)))
            .map(|(u, _)| *u)
            .collect()
    }

    /// Users out of scope with a record the sync last wrote for them in scope (`synced`) that
    /// nobody takes over in `decided`: those whose records an admin had already taken out of
    /// service leave no outcome, yet wait out the grace period too, so that retention does not
    /// purge what their return within it would find.
    pub(super) fn out_of_scope_synced(&self, decided: &Decided) -> Vec<ObjectId> {
        let taken = decided.taken();
        self.mine
            .iter()
            .filter(|(user, links)| {
                !self.in_scope(**user)
                    && links.iter().any(|l| {
                        l.state == LinkState::Synced && !taken.contains(&(l.kind, l.record_id))
                    })
            })
            .map(|(user, _)| *user)
            .collect()
    }

    /// The users whose outcome takes a record out of service.
    pub(super) fn removing_users(&self, decided: &Decided) -> BTreeSet<ObjectId> {
        decided
            .outcomes
            .iter()
            .filter(|(_, o)| decided.removal_count(self.store, o) > 0)
            .map(|(u, _)| *u)
            .collect()
    }

    /// The changes of `users`' outcomes, the desired values cloned (what a hold keeps back).
    pub(super) fn preview(&self, decided: &Decided, users: &BTreeSet<ObjectId>) -> Vec<Change> {
        let mut out = Vec::new();
        for user in users {
            if let Some(outcome) = decided.outcomes.get(user) {
                let d = self.desired.get(user).cloned();
                self.changes_of(decided, *user, outcome, d, &mut out);
            }
        }
        out
    }

    /// Every change of the decision, in object id order; the desired values move into them.
    pub(super) fn into_changes(mut self, decided: &Decided) -> Vec<Change> {
        let mut desired = std::mem::take(&mut self.desired);
        let mut out = Vec::new();
        for (user, outcome) in &decided.outcomes {
            let d = desired.remove(user);
            self.changes_of(decided, *user, outcome, d, &mut out);
        }
        out
    }

    fn changes_of(
        &self,
        decided: &Decided,
        user: ObjectId,
        outcome: &Outcome,
        d: Option<Desired>,
        out: &mut Vec<Change>,
    ) {
        match outcome {
            Outcome::Skipped(_) => {}
            Outcome::Leaving(records) => {
                for (kind, id, action) in records {
                    let (Some(link), Some(rec)) =
                        (self.link_of(user, *kind), self.record(*kind, *id))
                    else {
                        continue;
                    };
                    let state = match action {
                        Action::Deactivate => LinkState::Left,
                        _ => LinkState::LeftInactive,
                    };
                    out.push(Change::retire(
                        *action,
                        link,
                        rec,
                        rec.values.revoked(),
                        LinkWrite::Mark(state),
                    ));
                }
            }
            Outcome::Live {
                kind,
                matched,
                action,
                archives,
            } => {
                let Some(d) = d else { return };
                let other = kind.other();
                let own_other_link = self.link_of(user, other);
                for id in archives {
                    let Some(rec) = self.record(other, *id) else {
                        continue;
                    };
                    let suffix = decided
                        .archived_names
                        .get(id)
                        .map_or("_Archived", String::as_str);
                    let linked_here = own_other_link.filter(|l| l.record_id == *id);
                    // A record an admin deactivated stays so when the archive is undone.
                    let state = match linked_here {
                        Some(l) if !rec.active && l.state == LinkState::Synced => {
                            LinkState::ArchivedInactive
                        }
                        _ => LinkState::Archived,
                    };
                    out.push(Change {
                        action: Action::Archive,
                        kind: other,
                        record: RecordRef::Existing(*id),
                        object_id: user,
                        user: d.user.clone(),
                        before: Some(rec.values.clone()),
                        after: rec.values.archived(suffix, "_Archived"),
                        link: if linked_here.is_some() || own_other_link.is_none() {
                            LinkWrite::Mark(state)
                        } else {
                            LinkWrite::Keep
                        },
                    });
                }
                let Some(action) = action else { return };
                let (record, before) = match matched {
                    Matched::New => (RecordRef::New(user), None),
                    Matched::Linked(id) | Matched::TakenOver(id) => (
                        RecordRef::Existing(*id),
                        self.record(*kind, *id).map(|r| r.values.clone()),
                    ),
                };
                let undone = match (matched, &before) {
                    (Matched::Linked(_), Some(current)) => self.undone(&d, current),
                    _ => None,
                };
                let (after, link) = match undone {
                    Some(after) => (after, LinkWrite::SyncedFrom(Box::new(d.values))),
                    None => (d.values, LinkWrite::Synced),
                };
                out.push(Change {
                    action: *action,
                    kind: *kind,
                    record,
                    object_id: user,
                    user: d.user.clone(),
                    before,
                    after,
                    link,
                });
            }
        }
    }
}

impl Decided {
    /// The records the decision's live users rewrite, take over or archive.
    fn taken(&self) -> HashSet<(RecordKind, i64)> {
        self.outcomes
            .values()
            .flat_map(Decisions::records_of)
            .collect()
    }

    /// Every report of the decision: the skipped users' and the root's leavers'.
    pub(super) fn reports(&self) -> impl Iterator<Item = Report> + '_ {
        self.outcomes
            .values()
            .filter_map(|o| match o {
                Outcome::Skipped(r) => Some(r.clone()),
                _ => None,
            })
            .chain(self.reports.iter().cloned())
    }

    /// Drops `user`'s outcome: nothing of theirs is written (a `--user` person held whole).
    pub(super) fn forget(&mut self, user: ObjectId) {
        self.outcomes.remove(&user);
    }

    /// The record a live user lives in after this run.
    pub(super) fn live_record(&self, user: ObjectId) -> Option<(RecordKind, RecordRef)> {
        match self.outcomes.get(&user)? {
            Outcome::Live { kind, matched, .. } => Some((
                *kind,
                match matched {
                    Matched::New => RecordRef::New(user),
                    Matched::Linked(id) | Matched::TakenOver(id) => RecordRef::Existing(*id),
                },
            )),
            _ => None,
        }
    }

    /// What the run decided for `user`, the action aside (a `--user` run rewrites where a full
    /// run might not): compared to tell whether a one-user run may go ahead.
    pub(super) fn outcome_of(&self, user: ObjectId) -> Option<Outcome> {
        self.outcomes.get(&user).map(|o| match o {
            Outcome::Live {
                kind,
                matched,
                archives,
                ..
            } => Outcome::Live {
                kind: *kind,
                matched: *matched,
                action: None,
                archives: archives.clone(),
            },
            other => other.clone(),
        })
    }
}
