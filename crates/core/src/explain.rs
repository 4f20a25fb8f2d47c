//! PURE: why one person is what the store says, for support staff (`entra-sync explain`,
//! `GET /explain`): their scope and its reason, the rule groups that hold them (directly or
//! through which nested group), the matching rules and the criterion that picked the winner,
//! the record they map to and how, what the next run would change, the local edits the next
//! Entra change will overwrite, and any held or pending deactivation.
//!
//! Built from the same snapshot, store view and plan a run uses; decides nothing itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use crate::directory::{MemberType, Snapshot};
use crate::id::ObjectId;
use crate::plan::{Action, Change, LinkState, Plan, RecordRef, StoreView, Waiting};
use crate::record::{Cell, RecordKind, cell_diff};
use crate::resolve::{Report, ReportKind, email_of, precedence_key};
use crate::rules::{Rule, Rules, Target};

/// Whether a person is in scope, and why not (SPEC 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeVerdict {
    InScope,
    /// Not in the tracked groups' listings: removed from every one of them, or deleted.
    NotInEntra,
    /// Graph returned them without the properties scope needs.
    IncompleteData,
    Disabled,
    NoEmail,
    InNoRuleGroup,
}

/// A rule group that contains the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub group_id: ObjectId,
    pub group_name: Option<String>,
    /// The nested groups between the rule group and the person, outermost first (empty:
    /// a direct member).
    pub via: Vec<GroupName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupName {
    pub id: ObjectId,
    pub name: Option<String>,
}

/// A rule whose group contains the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    pub order: i64,
    pub group_id: ObjectId,
    pub group_name: Option<String>,
    /// The group's `createdDateTime` (RFC 3339), when Graph gave one.
    pub group_created: Option<String>,
    pub target: Target,
    pub role: Option<String>,
    pub portal_access: Option<bool>,
    pub winner: bool,
}

/// The criterion of SPEC 4.2 that made the winning rule win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// The only rule whose group contains the person.
    OnlyRule,
    LowerOrder,
    OlderGroup,
    SmallerGroupId,
}

/// How the person reaches their record (SPEC 4.3), or why they cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Mapping {
    /// The record linked to them.
    Linked { kind: RecordKind, record: i64 },
    /// A record with their email that nobody in scope holds, taken over by the next run.
    MergedByEmail { kind: RecordKind, record: i64 },
    /// A new record, made by the next run.
    New { kind: RecordKind },
    /// Skipped with a report: the reason names who or what is in the way.
    Blocked { reason: ReportKind, message: String },
    /// Out of scope and linked to no record.
    None,
}

/// A field a change writes, or a local edit: its value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub field: &'static str,
    pub old: serde_json::Value,
    pub new: serde_json::Value,
}

/// A change the next run would make to the person's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextChange {
    pub action: Action,
    pub kind: RecordKind,
    /// `None`: a record the run creates.
    pub record: Option<i64>,
    pub fields: Vec<Field>,
    /// Held by the safety limits (SPEC 5.3) rather than applied.
    pub held: bool,
}

/// A record of theirs whose stored values differ from what the sync last wrote: local edits,
/// kept until their user's attributes or rule outcome change in Entra (SPEC 4.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalEdits {
    pub kind: RecordKind,
    pub record: i64,
    /// `old` is what the sync wrote, `new` what the store holds now.
    pub fields: Vec<Field>,
}

/// A linked record of theirs, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkedRecord {
    pub kind: RecordKind,
    pub record: i64,
    pub email: Option<String>,
    pub username: Option<String>,
    pub active: bool,
    /// What the sync last did with it (`synced`, `left`, `archived`, …).
    pub state: LinkState,
}

/// Everything `explain` says about one person in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub tenant: String,
    pub object_id: ObjectId,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    pub account_enabled: Option<bool>,
    pub scope: ScopeVerdict,
    pub memberships: Vec<Membership>,
    /// The matching rules, winner first, then in precedence order.
    pub rules: Vec<RuleMatch>,
    /// What decided between the winner and the runner-up.
    pub decided_by: Option<Criterion>,
    pub mapping: Mapping,
    pub records: Vec<LinkedRecord>,
    pub next_run: Vec<NextChange>,
    pub local_edits: Vec<LocalEdits>,
    /// Out of scope, waiting out the grace period or held (SPEC 2, 5.3).
    pub pending: Option<Waiting>,
    pub reports: Vec<Report>,
}

/// Explains `user` from what a run of every user at this moment would see (`snapshot`,
/// `view`) and do (`plan`, planned for the whole tenant; `directory` is the tenant's).
pub fn explain(
    rules: &Rules,
    snapshot: &Snapshot,
    view: &StoreView,
    plan: &Plan,
    directory: &str,
    user: ObjectId,
) -> Explanation {
    let entra = snapshot.users.get(&user);
    let memberships = memberships(rules, snapshot, user);
    let mut matching: Vec<&Rule> = rules
        .rules
        .iter()
        .filter(|r| memberships.iter().any(|m| m.group_id == r.group_id))
        .collect();
    matching.sort_by_key(|r| precedence_key(r, snapshot));
    let decided_by = match matching.as_slice() {
        [] => None,
        [_] => Some(Criterion::OnlyRule),
        [first, second, ..] => {
            let (a, b) = (
                precedence_key(first, snapshot),
                precedence_key(second, snapshot),
            );
            Some(if a.0 != b.0 {
                Criterion::LowerOrder
            } else if (a.1, a.2) != (b.1, b.2) {
                Criterion::OlderGroup
            } else {
                Criterion::SmallerGroupId
            })
        }
    };
    let group_name = |id: ObjectId| {
        snapshot
            .groups
            .get(&id)
            .and_then(|g| g.display_name.clone())
    };
    let rule_matches = matching
        .iter()
        .enumerate()
        .map(|(i, r)| RuleMatch {
            order: r.order,
            group_id: r.group_id,
            group_name: group_name(r.group_id),
            group_created: snapshot
                .groups
                .get(&r.group_id)
                .and_then(|g| g.created)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            target: r.target,
            role: r.role.clone(),
            portal_access: r.portal_access,
            winner: i == 0,
        })
        .collect();
    let reports: Vec<Report> = plan
        .reports
        .iter()
        .filter(|r| r.object_id == user)
        .cloned()
        .collect();
    let scope = match entra {
        None => ScopeVerdict::NotInEntra,
        Some(u) if u.is_limited() => ScopeVerdict::IncompleteData,
        Some(_) if matching.is_empty() => ScopeVerdict::InNoRuleGroup,
        Some(u) if u.account_enabled != Some(true) => ScopeVerdict::Disabled,
        Some(u) if email_of(u, rules.email_source).is_none() => ScopeVerdict::NoEmail,
        Some(_) => ScopeVerdict::InScope,
    };
    let links: Vec<_> = view
        .links
        .iter()
        .filter(|l| l.directory == directory && l.object_id == user)
        .collect();
    let records: Vec<LinkedRecord> = links
        .iter()
        .filter_map(|l| {
            let rec = view.records.get(&(l.kind, l.record_id))?;
            Some(LinkedRecord {
                kind: l.kind,
                record: l.record_id,
                email: rec.values.email().map(str::to_string),
                username: rec.values.username().map(str::to_string),
                active: rec.active,
                state: l.state,
            })
        })
        .collect();
    let next_run: Vec<NextChange> = plan
        .changes
        .iter()
        .filter(|c| c.object_id == user && !c.action.bookkeeping())
        .map(|c| next_change(c, false))
        .chain(
            plan.held
                .iter()
                .filter(|c| c.object_id == user)
                .map(|c| next_change(c, true)),
        )
        .collect();
    let kind = matching.first().map(|r| match r.target {
        Target::Employee => RecordKind::Employee,
        Target::Contact => RecordKind::Contact,
    });
    let blocking = reports.iter().find(|r| r.kind != ReportKind::NoEmail);
    let mapping = match (scope, kind, blocking) {
        (_, _, Some(r)) => Mapping::Blocked {
            reason: r.kind,
            message: r.message.clone(),
        },
        (ScopeVerdict::InScope, Some(kind), None) => {
            let own = plan
                .changes
                .iter()
                .chain(&plan.held)
                .find(|c| c.object_id == user && c.kind == kind);
            let linked = links.iter().find(|l| l.kind == kind);
            match (own.map(|c| (c.action, &c.record)), linked) {
                (Some((_, RecordRef::New(_))), _) => Mapping::New { kind },
                (_, Some(l)) => Mapping::Linked {
                    kind,
                    record: l.record_id,
                },
                (Some((_, RecordRef::Existing(id))), None) => {
                    Mapping::MergedByEmail { kind, record: *id }
                }
                (None, None) => Mapping::None,
            }
        }
        _ => match records.iter().find(|r| r.active).or(records.first()) {
            Some(r) => Mapping::Linked {
                kind: r.kind,
                record: r.record,
            },
            None => Mapping::None,
        },
    };
    let local_edits = links
        .iter()
        .filter(|l| l.state == LinkState::Synced)
        .filter_map(|l| {
            let rec = view.records.get(&(l.kind, l.record_id))?;
            let source = l.source.as_ref()?;
            if source.kind() != rec.values.kind() {
                return None;
            }
            let fields: Vec<Field> = cell_diff(source, &rec.values)
                .into_iter()
                .map(|(field, old, new)| field_of(field, old, new))
                .collect();
            (!fields.is_empty()).then_some(LocalEdits {
                kind: l.kind,
                record: l.record_id,
                fields,
            })
        })
        .collect();
    let pending = plan.waiting.iter().find(|w| w.object_id == user).cloned();
    Explanation {
        tenant: plan.tenant.clone(),
        object_id: user,
        user_principal_name: entra
            .and_then(|u| u.user_principal_name.clone())
            .or_else(|| links.iter().find_map(|l| l.upn.clone())),
        mail: entra.and_then(|u| u.mail.clone()),
        account_enabled: entra.and_then(|u| u.account_enabled),
        scope,
        memberships,
        rules: rule_matches,
        decided_by,
        mapping,
        records,
        next_run,
        local_edits,
        pending,
        reports,
    }
}

impl Explanation {
    /// One sentence per line, for people.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let who = self
            .user_principal_name
            .clone()
            .unwrap_or_else(|| self.object_id.to_string());
        out.push(format!(
            "{who} (Entra object id {}) in tenant \"{}\"",
            self.object_id, self.tenant
        ));
        let group = |id: ObjectId, name: &Option<String>| match name {
            Some(n) => format!("\"{n}\" ({id})"),
            None => id.to_string(),
        };
        out.push(match self.scope {
            ScopeVerdict::InScope => "In scope: enabled, has an email, and in a rule's group.".into(),
            ScopeVerdict::NotInEntra => {
                "Out of scope: Entra lists them in no rule's group (removed from them, or deleted)."
                    .into()
            }
            ScopeVerdict::IncompleteData => {
                "Left as it is: Graph returned this user without userPrincipalName or accountEnabled."
                    .into()
            }
            ScopeVerdict::Disabled => "Out of scope: the account is disabled in Entra.".into(),
            ScopeVerdict::NoEmail => {
                "Out of scope: the user has no email (see email_source); never created without one."
                    .into()
            }
            ScopeVerdict::InNoRuleGroup => "Out of scope: in no rule's group.".into(),
        });
        for m in &self.memberships {
            if m.via.is_empty() {
                out.push(format!(
                    "Member of rule group {} directly.",
                    group(m.group_id, &m.group_name)
                ));
            } else {
                let path: Vec<String> = m.via.iter().map(|g| group(g.id, &g.name)).collect();
                out.push(format!(
                    "Member of rule group {} through {}.",
                    group(m.group_id, &m.group_name),
                    path.join(" → ")
                ));
            }
        }
        for r in &self.rules {
            let outcome = match (r.target, &r.role, r.portal_access) {
                (Target::Employee, Some(role), _) => format!("employee, role {role}"),
                (Target::Employee, None, _) => "employee, no role".into(),
                (Target::Contact, _, Some(true)) => "contact with portal access".into(),
                (Target::Contact, _, _) => "contact without portal access".into(),
            };
            out.push(format!(
                "{} rule order {} on group {} (created {}): {outcome}.",
                if r.winner { "Wins:" } else { "Loses:" },
                r.order,
                group(r.group_id, &r.group_name),
                r.group_created.as_deref().unwrap_or("unknown")
            ));
        }
        if let Some(c) = self.decided_by {
            out.push(
                match c {
                    Criterion::OnlyRule => "Decided by: the only matching rule.",
                    Criterion::LowerOrder => "Decided by: the lower order.",
                    Criterion::OlderGroup => "Decided by: equal order, the older group.",
                    Criterion::SmallerGroupId => {
                        "Decided by: equal order and creation date, the smaller group id."
                    }
                }
                .into(),
            );
        }
        out.push(match &self.mapping {
            Mapping::Linked { kind, record } => format!("Record: {kind} #{record}, linked to this user."),
            Mapping::MergedByEmail { kind, record } => format!(
                "Record: {kind} #{record}, which has the user's email and no other user: the next run links and updates it."
            ),
            Mapping::New { kind } => format!("Record: none yet; the next run creates a new {kind}."),
            Mapping::Blocked { message, .. } => format!("Record: blocked: {message}."),
            Mapping::None => "Record: none.".into(),
        });
        for r in &self.records {
            out.push(format!(
                "  {} #{}: {} {}, {} ({}).",
                r.kind,
                r.record,
                r.username.as_deref().unwrap_or("-"),
                r.email.as_deref().unwrap_or("-"),
                if r.active { "active" } else { "deactivated" },
                r.state.as_str()
            ));
        }
        if self.next_run.is_empty() {
            out.push("Next run: no change.".into());
        }
        for c in &self.next_run {
            let fields: Vec<String> = c
                .fields
                .iter()
                .map(|f| {
                    if f.old.is_null() {
                        format!("{} = {}", f.field, f.new)
                    } else {
                        format!("{}: {} → {}", f.field, f.old, f.new)
                    }
                })
                .collect();
            let record = c
                .record
                .map_or_else(|| "new".to_string(), |id| format!("#{id}"));
            out.push(format!(
                "Next run{}: {} {} {record}{}{}",
                if c.held {
                    " (held by the safety limits)"
                } else {
                    ""
                },
                c.action.as_str(),
                c.kind,
                if fields.is_empty() { "" } else { ": " },
                fields.join(", ")
            ));
        }
        for e in &self.local_edits {
            for f in &e.fields {
                out.push(format!(
                    "Local edit on {} #{}: {} is {} (Entra gave {}); the next change of this user in Entra overwrites it.",
                    e.kind, e.record, f.field, f.new, f.old
                ));
            }
        }
        if let Some(p) = &self.pending {
            out.push(format!(
                "Pending deactivation: out of scope since {}; due at {} unless they come back.",
                p.since, p.due
            ));
        }
        out
    }
}

fn field_of(field: &'static str, old: Cell<'_>, new: Cell<'_>) -> Field {
    let json = |c: Cell<'_>| serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
    Field {
        field,
        old: json(old),
        new: json(new),
    }
}

fn next_change(c: &Change, held: bool) -> NextChange {
    NextChange {
        action: c.action,
        kind: c.kind,
        record: match c.record {
            RecordRef::Existing(id) => Some(id),
            RecordRef::New(_) => None,
        },
        fields: c
            .field_cells()
            .into_iter()
            .map(|(f, old, new)| field_of(f, old, new))
            .collect(),
        held,
    }
}

/// The rule groups that contain `user`, each with the shortest chain of nested groups that
/// leads to them (followed only when the rules follow nesting).
fn memberships(rules: &Rules, snapshot: &Snapshot, user: ObjectId) -> Vec<Membership> {
    let mut out = Vec::new();
    let mut seen_rule_groups = BTreeSet::new();
    for rule in &rules.rules {
        if !seen_rule_groups.insert(rule.group_id) {
            continue;
        }
        // Breadth first: the shortest path from the rule group down to the user.
        let mut parent: BTreeMap<ObjectId, ObjectId> = BTreeMap::new();
        let mut queue = VecDeque::from([rule.group_id]);
        let mut visited = BTreeSet::from([rule.group_id]);
        let mut found = None;
        while let Some(g) = queue.pop_front() {
            let Some(group) = snapshot.groups.get(&g) else {
                continue;
            };
            if group.members.get(&user) == Some(&MemberType::User) {
                found = Some(g);
                break;
            }
            if !rules.nested_groups {
                continue;
            }
            for (id, kind) in &group.members {
                if *kind == MemberType::Group && visited.insert(*id) {
                    parent.insert(*id, g);
                    queue.push_back(*id);
                }
            }
        }
        let Some(mut at) = found else {
            continue;
        };
        let mut via = Vec::new();
        while at != rule.group_id {
            via.push(GroupName {
                id: at,
                name: snapshot
                    .groups
                    .get(&at)
                    .and_then(|g| g.display_name.clone()),
            });
            let Some(up) = parent.get(&at) else { break };
            at = *up;
        }
        via.reverse();
        out.push(Membership {
            group_id: rule.group_id,
            group_name: snapshot
                .groups
                .get(&rule.group_id)
                .and_then(|g| g.display_name.clone()),
            via,
        });
    }
    out
}

#[cfg(test)]
mod tests;
