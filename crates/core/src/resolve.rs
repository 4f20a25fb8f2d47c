//! PURE: from a tenant's directory [`Snapshot`] and its rules to the record each in-scope user
//! should become (SPEC 4.1 scope, 4.2 precedence, field mapping, usernames, 4.9 group members).
//!
//! Knows nothing of the store: matching users to existing records is [`crate::plan`]'s job.
//! Never fails and never does I/O; a user it cannot handle becomes a [`Report`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::directory::{EntraUser, Snapshot};
use crate::id::{Email, ObjectId, Username};
use crate::record::{ContactValues, EmployeeValues, RecordKind, Values};
use crate::rules::{EmailSource, Rule, Rules, Target};

/// Why a user was skipped; it does not fail the run (SPEC 4.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    NoEmail,
    UsernameCollision,
    EmailClaimed,
    DuplicateEmail,
    RootConflict,
    IncompleteData,
    /// A `--user` run whose outcome depends on another user's pending change.
    WaitsForFullSync,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Report {
    pub kind: ReportKind,
    pub object_id: ObjectId,
    pub user: String,
    pub message: String,
    /// The names the skipped user wants, which someone else may hold or want too: not shown,
    /// kept with the open report so a run planned from a change looks at the user again
    /// exactly when the change touches one of them (the product's `narrow`).
    #[serde(skip)]
    pub wants: Wants,
}

/// A user's email and username as the sync compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wants {
    pub email: Option<Email>,
    pub username: Option<Username>,
}

impl Wants {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.username.is_none()
    }
}

impl Report {
    pub fn new(kind: ReportKind, user: &EntraUser, message: impl Into<String>) -> Report {
        Report {
            kind,
            object_id: user.id,
            user: user
                .user_principal_name
                .clone()
                .unwrap_or_else(|| user.id.to_string()),
            message: message.into(),
            wants: Wants::default(),
        }
    }
}

/// The record one in-scope user should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub object_id: ObjectId,
    /// For reports and logs: the UPN, or the id.
    pub user: Arc<str>,
    pub values: Values,
    /// The group of the winning rule.
    pub rule_group: ObjectId,
}

impl Desired {
    pub fn kind(&self) -> RecordKind {
        self.values.kind()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// In-scope users by object id.
    pub desired: BTreeMap<ObjectId, Desired>,
    /// Users in a rule's group whose data is incomplete: their records are left as they are.
    pub untouchable: BTreeSet<ObjectId>,
    /// For each rule group: its in-scope (or untouchable) users.
    pub group_members: BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    pub reports: Vec<Report>,
}

pub fn resolve(rules: &Rules, snapshot: &Snapshot) -> Resolution {
    let mut out = Resolution::default();
    // Every (user, rule) pair from each rule's (transitive) membership, sorted by user: a
    // user's candidate rules are one run of it, in the order of `snapshot.users`.
    let mut pairs: Vec<(ObjectId, usize)> = Vec::new();
    for (index, rule) in rules.rules.iter().enumerate() {
        let members = snapshot.members_of(rule.group_id, rules.nested_groups);
        pairs.extend(members.into_iter().map(|user| (user, index)));
    }
    pairs.sort_unstable();
    let precedence: Vec<_> = rules
        .rules
        .iter()
        .map(|r| precedence_key(r, snapshot))
        .collect();
    // Each rule's in-scope (or untouchable) members, in id order.
    let mut rule_members: Vec<Vec<ObjectId>> = vec![Vec::new(); rules.rules.len()];
    let mut desired: Vec<(ObjectId, Desired)> = Vec::new();
    let mut untouchable: Vec<ObjectId> = Vec::new();
    let mut users = snapshot.users.iter().peekable();
    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
        let user_id = run[0].0;
        while users.next_if(|(id, _)| **id < user_id).is_some() {}
        let Some((_, user)) = users.next_if(|(id, _)| **id == user_id) else {
            continue;
        };
        let candidates = run.iter().map(|(_, index)| *index);
        if user.is_limited() {
            for index in candidates {
                rule_members[index].push(user.id);
            }
            untouchable.push(user.id);
            out.reports.push(Report::new(
                ReportKind::IncompleteData,
                user,
                "Graph returned this user without userPrincipalName or accountEnabled; left unchanged",
            ));
            continue;
        }
        if user.account_enabled != Some(true) {
            continue;
        }
        let Some(winner) = candidates.clone().min_by_key(|index| &precedence[*index]) else {
            continue;
        };
        let rule = &rules.rules[winner];
        let Some(email) = email_of(user, rules.email_source) else {
            out.reports.push(Report::new(
                ReportKind::NoEmail,
                user,
                format!(
                    "no email ({}); the user is skipped until it has one",
                    match rules.email_source {
                        EmailSource::Mail => "mail is empty",
                        EmailSource::Upn => "userPrincipalName is empty",
                        EmailSource::ExternalUpn => "neither an external address nor mail",
                    }
                ),
            ));
            continue;
        };
        let values = map_values(rules, rule, user, email);
        for index in candidates {
            rule_members[index].push(user.id);
        }
        desired.push((
            user.id,
            Desired {
                object_id: user.id,
                user: Arc::from(user.user_principal_name.as_deref().unwrap_or_default()),
                values,
                rule_group: rule.group_id,
            },
        ));
    }
    // Built from sorted runs, so the maps and sets are bulk-built rather than searched.
    out.desired = desired.into_iter().collect();
    out.untouchable = untouchable.into_iter().collect();
    for (rule, members) in rules.rules.iter().zip(rule_members) {
        out.group_members
            .insert(rule.group_id, members.into_iter().collect());
    }
    out.reports.sort();
    out
}

/// Lowest order, then the oldest group, then the smaller group id (SPEC 4.2). A group without
/// a known creation time sorts after every dated one.
pub(crate) fn precedence_key(
    rule: &Rule,
    snapshot: &Snapshot,
) -> (i64, bool, Option<chrono::DateTime<chrono::Utc>>, ObjectId) {
    let created = snapshot.groups.get(&rule.group_id).and_then(|g| g.created);
    (rule.order, created.is_none(), created, rule.group_id)
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// For a B2B guest UPN `alice_fabrikam.com#EXT#@contoso.onmicrosoft.com`: `alice@fabrikam.com`.
pub fn external_address(upn: &str) -> Option<String> {
    let idx = upn.find("#EXT#")?;
    let encoded = &upn[..idx];
    let at = encoded.rfind('_')?;
    let (local, domain) = (&encoded[..at], &encoded[at + 1..]);
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

/// The user's email per `email_source`, or `None` when it has none.
pub fn email_of(user: &EntraUser, source: EmailSource) -> Option<String> {
    match source {
        EmailSource::Mail => non_empty(&user.mail),
        EmailSource::Upn => non_empty(&user.user_principal_name),
        EmailSource::ExternalUpn => user
            .user_principal_name
            .as_deref()
            .and_then(external_address)
            .or_else(|| non_empty(&user.mail)),
    }
}

/// The username: the UPN without its domain; for a guest, the local part of the external address.
pub fn username_of(upn: &str) -> Option<String> {
    let upn = upn.trim();
    let name = match external_address(upn) {
        Some(external) => external.split('@').next().map(str::to_string),
        None => upn.split('@').next().map(str::to_string),
    };
    name.filter(|n| !n.is_empty())
}

fn map_values(rules: &Rules, rule: &Rule, user: &EntraUser, email: String) -> Values {
    let d = &rules.employee_defaults;
    match rule.target {
        Target::Employee => Values::Employee(EmployeeValues {
            username: user.user_principal_name.as_deref().and_then(username_of),
            email: Some(email),
            first_name: non_empty(&user.given_name).or_else(|| d.first_name.clone()),
            last_name: non_empty(&user.surname).or_else(|| d.last_name.clone()),
            job_title: non_empty(&user.job_title).or_else(|| d.job_title.clone()),
            phone: non_empty(&user.business_phone).or_else(|| d.phone.clone()),
            department: non_empty(&user.department).or_else(|| d.department.clone()),
            security_role: rule.role.clone(),
        }),
        Target::Contact => {
            let phone = non_empty(&user.business_phone);
            Values::Contact(ContactValues {
                account: rule
                    .account
                    .clone()
                    .or_else(|| rules.tenant_account.clone()),
                email: Some(email),
                first_name: non_empty(&user.given_name),
                last_name: non_empty(&user.surname),
                job_title: non_empty(&user.job_title),
                phone_type: phone.as_ref().map(|_| rules.default_phone_type.clone()),
                phone,
                portal_access: rule.portal_access.unwrap_or(false),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::directory::{EntraGroup, MemberType};
    use crate::id::named as id;
    use crate::rules::EmployeeDefaults;
    use chrono::TimeZone;
    use proptest::prelude::*;

    pub(crate) fn user(id: &str, upn: &str, mail: Option<&str>) -> EntraUser {
        EntraUser {
            user_principal_name: Some(upn.into()),
            mail: mail.map(str::to_string),
            given_name: Some("Ada".into()),
            surname: Some("Lovelace".into()),
            account_enabled: Some(true),
            ..EntraUser::new(crate::id::named(id))
        }
    }

    fn rule(group: &str, order: i64, target: Target) -> Rule {
        Rule {
            group_id: id(group),
            order,
            target,
            role: (target == Target::Employee).then(|| format!("role-{group}")),
            portal_access: (target == Target::Contact).then_some(true),
            account: None,
        }
    }

    fn rules(list: Vec<Rule>) -> Rules {
        Rules {
            tenant: "t".into(),
            tenant_account: Some("Contoso".into()),
            rules: list,
            email_source: EmailSource::Mail,
            nested_groups: true,
            default_phone_type: "Work".into(),
            employee_defaults: EmployeeDefaults {
                department: Some("General".into()),
                job_title: Some("Staff".into()),
                ..Default::default()
            },
        }
    }

    fn group(name: &str, day: u32, members: &[&str]) -> EntraGroup {
        EntraGroup {
            id: id(name),
            display_name: Some(name.to_uppercase()),
            created: Some(chrono::Utc.with_ymd_and_hms(2020, 1, day, 0, 0, 0).unwrap()),
            members: members
                .iter()
                .map(|m| {
                    let kind = if m.starts_with('g') {
                        MemberType::Group
                    } else {
                        MemberType::User
                    };
                    (id(m), kind)
                })
                .collect(),
        }
    }

    fn snapshot(groups: Vec<EntraGroup>, users: Vec<EntraUser>) -> Snapshot {
        Snapshot {
            users: users.into_iter().map(|u| (u.id, u)).collect(),
            groups: groups.into_iter().map(|g| (g.id, g)).collect(),
        }
    }

    #[test]
    fn lowest_order_wins_then_oldest_group_then_smaller_id() {
        let u = user("u1", "ada@contoso.com", Some("ada@contoso.com"));
        let snap = snapshot(
            vec![
                group("ga", 5, &["u1"]),
                group("gb", 3, &["u1"]),
                group("gc", 3, &["u1"]),
            ],
            vec![u],
        );
        let by_order = resolve(
            &rules(vec![
                rule("ga", 10, Target::Employee),
                rule("gb", 20, Target::Contact),
            ]),
            &snap,
        );
        assert_eq!(by_order.desired[&id("u1")].rule_group, id("ga"));
        let by_age = resolve(
            &rules(vec![
                rule("ga", 10, Target::Employee),
                rule("gb", 10, Target::Contact),
            ]),
            &snap,
        );
        assert_eq!(by_age.desired[&id("u1")].rule_group, id("gb"));
        let by_id = resolve(
            &rules(vec![
                rule("gc", 10, Target::Employee),
                rule("gb", 10, Target::Contact),
            ]),
            &snap,
        );
        assert_eq!(by_id.desired[&id("u1")].rule_group, id("gb"));
    }

    #[test]
    fn disabled_users_and_users_without_email_are_out_of_scope() {
        let mut disabled = user("u1", "a@c.com", Some("a@c.com"));
        disabled.account_enabled = Some(false);
        let no_mail = user("u2", "b@c.com", Some("  "));
        let snap = snapshot(vec![group("ga", 1, &["u1", "u2"])], vec![disabled, no_mail]);
        let r = resolve(&rules(vec![rule("ga", 1, Target::Employee)]), &snap);
        assert!(r.desired.is_empty());
        assert_eq!(r.reports.len(), 1);
        assert_eq!(r.reports[0].kind, ReportKind::NoEmail);
        assert_eq!(r.reports[0].object_id, id("u2"));
    }

    #[test]
    fn employee_fields_use_defaults_only_when_entra_has_none() {
        let mut u = user("u1", "Ada.L@contoso.com", Some("Ada.L@Contoso.com"));
        u.job_title = Some("".into());
        u.department = Some("R&D".into());
        u.business_phone = Some("+1 555".into());
        let snap = snapshot(vec![group("ga", 1, &["u1"])], vec![u]);
        let r = resolve(&rules(vec![rule("ga", 1, Target::Employee)]), &snap);
        let Values::Employee(e) = &r.desired[&id("u1")].values else {
            panic!()
        };
        assert_eq!(e.username.as_deref(), Some("Ada.L"));
        assert_eq!(e.email.as_deref(), Some("Ada.L@Contoso.com"));
        assert_eq!(e.job_title.as_deref(), Some("Staff"));
        assert_eq!(e.department.as_deref(), Some("R&D"));
        assert_eq!(e.phone.as_deref(), Some("+1 555"));
        assert_eq!(e.security_role.as_deref(), Some("role-ga"));
    }

    #[test]
    fn contacts_get_account_phone_type_and_portal_access() {
        let mut with_phone = user("u1", "a@c.com", Some("a@c.com"));
        with_phone.business_phone = Some("123".into());
        let without = user("u2", "b@c.com", Some("b@c.com"));
        let mut r2 = rule("ga", 1, Target::Contact);
        r2.account = Some("Fabrikam".into());
        let snap = snapshot(
            vec![group("ga", 1, &["u1", "u2"])],
            vec![with_phone, without],
        );
        let r = resolve(&rules(vec![r2]), &snap);
        let Values::Contact(c1) = &r.desired[&id("u1")].values else {
            panic!()
        };
        let Values::Contact(c2) = &r.desired[&id("u2")].values else {
            panic!()
        };
        assert_eq!(c1.phone_type.as_deref(), Some("Work"));
        assert_eq!(c2.phone_type, None);
        assert_eq!(c1.account.as_deref(), Some("Fabrikam"));
        assert!(c1.portal_access);
        assert_eq!(
            c1.job_title, None,
            "employee defaults do not apply to contacts"
        );
    }

    #[test]
    fn guest_usernames_and_external_emails_come_from_the_external_address() {
        let upn = "alice_fabrikam.com#EXT#@contoso.onmicrosoft.com";
        assert_eq!(username_of(upn).as_deref(), Some("alice"));
        assert_eq!(external_address(upn).as_deref(), Some("alice@fabrikam.com"));
        assert_eq!(
            external_address("a_b_x.org#EXT#@t.onmicrosoft.com").as_deref(),
            Some("a_b@x.org")
        );
        let guest = user("u1", upn, None);
        assert_eq!(
            email_of(&guest, EmailSource::ExternalUpn).as_deref(),
            Some("alice@fabrikam.com")
        );
        assert_eq!(email_of(&guest, EmailSource::Mail), None);
        assert_eq!(email_of(&guest, EmailSource::Upn).as_deref(), Some(upn));
        let member = user("u2", "bob@contoso.com", Some("bob@contoso.com"));
        assert_eq!(
            email_of(&member, EmailSource::ExternalUpn).as_deref(),
            Some("bob@contoso.com")
        );
    }

    #[test]
    fn nested_members_count_only_when_nested_groups_is_on() {
        let snap = snapshot(
            vec![group("ga", 1, &["gnest"]), group("gnest", 2, &["u1"])],
            vec![user("u1", "a@c.com", Some("a@c.com"))],
        );
        let mut cfg = rules(vec![rule("ga", 1, Target::Employee)]);
        assert!(resolve(&cfg, &snap).desired.contains_key(&id("u1")));
        cfg.nested_groups = false;
        assert!(resolve(&cfg, &snap).desired.is_empty());
    }

    #[test]
    fn users_with_limited_data_are_left_alone_and_reported() {
        let limited = EntraUser::new(id("u1"));
        let snap = snapshot(vec![group("ga", 1, &["u1"])], vec![limited]);
        let r = resolve(&rules(vec![rule("ga", 1, Target::Employee)]), &snap);
        assert!(r.desired.is_empty());
        assert!(r.untouchable.contains(&id("u1")));
        assert_eq!(r.reports[0].kind, ReportKind::IncompleteData);
        assert!(r.group_members[&id("ga")].contains(&id("u1")));
    }

    #[test]
    fn group_members_are_every_rule_a_synced_user_is_in_not_only_the_winner() {
        let mut disabled = user("u3", "c@c.com", Some("c@c.com"));
        disabled.account_enabled = Some(false);
        let snap = snapshot(
            vec![
                group("ga", 1, &["u1", "u2", "u3", "u4", "u5"]),
                group("gb", 2, &["u1", "u5"]),
            ],
            vec![
                user("u1", "a@c.com", Some("a@c.com")),
                user("u2", "b@c.com", None),
                disabled,
                user("u5", "e@c.com", Some("e@c.com")),
            ],
        );
        let r = resolve(
            &rules(vec![
                rule("ga", 2, Target::Employee),
                rule("gb", 1, Target::Contact),
            ]),
            &snap,
        );
        // u2 has no email, u3 is disabled, u4 is not a user Graph returned.
        let ids = |g: &str| -> Vec<ObjectId> { r.group_members[&id(g)].iter().copied().collect() };
        assert_eq!(ids("ga"), vec![id("u1"), id("u5")]);
        assert_eq!(ids("gb"), vec![id("u1"), id("u5")]);
        assert_eq!(r.desired[&id("u1")].rule_group, id("gb"));
        assert_eq!(
            r.desired.keys().copied().collect::<Vec<_>>(),
            [id("u1"), id("u5")]
        );
        assert_eq!(r.reports.len(), 1, "{:?}", r.reports);
        assert_eq!(r.reports[0].kind, ReportKind::NoEmail);
    }

    proptest! {
        /// The winner never depends on the order Graph returned groups, members or rules in.
        #[test]
        fn winner_is_independent_of_input_order(
            orders in proptest::collection::vec(0i64..3, 4),
            days in proptest::collection::vec(1u32..3, 4),
            membership in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 5), 4),
            seed in any::<u64>(),
        ) {
            let names = ["g0", "g1", "g2", "g3"];
            let users: Vec<EntraUser> = (0..5).map(|i| user(&format!("u{i}"), &format!("u{i}@c.com"), Some(&format!("u{i}@c.com")))).collect();
            let groups: Vec<EntraGroup> = names.iter().enumerate().map(|(gi, name)| {
                let members: Vec<String> = (0..5).filter(|ui| membership[gi][*ui]).map(|ui| format!("u{ui}")).collect();
                let refs: Vec<&str> = members.iter().map(String::as_str).collect();
                group(name, days[gi], &refs)
            }).collect();
            let rule_list: Vec<Rule> = names.iter().enumerate().map(|(gi, name)| {
                rule(name, orders[gi], if gi % 2 == 0 { Target::Employee } else { Target::Contact })
            }).collect();
            let base = resolve(&rules(rule_list.clone()), &snapshot(groups.clone(), users.clone()));
            let mut shuffled_rules = rule_list;
            let mut shuffled_groups = groups;
            let mut shuffled_users = users;
            let rot = (seed % 4) as usize;
            shuffled_rules.rotate_left(rot);
            shuffled_rules.reverse();
            shuffled_groups.rotate_left(rot);
            shuffled_users.reverse();
            let other = resolve(&rules(shuffled_rules), &snapshot(shuffled_groups, shuffled_users));
            prop_assert_eq!(&base.desired, &other.desired);
            for (uid, d) in &base.desired {
                // The winner has the minimal (order, created, id) among the user's groups.
                let ui = (0..5).find(|ui| id(&format!("u{ui}")) == *uid).unwrap();
                let best = names.iter().enumerate()
                    .filter(|(gi, _)| membership[*gi][ui])
                    .map(|(gi, name)| (orders[gi], days[gi], id(name)))
                    .min().unwrap();
                prop_assert_eq!(d.rule_group, best.2);
            }
        }
    }
}
