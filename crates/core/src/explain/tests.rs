#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use super::*;
use crate::directory::EntraUser;
use crate::plan::{Run, Safety, Scope, group_names, plan};
use crate::record::{EmployeeValues, StoredRecord, Values};
use crate::resolve::resolve;
use crate::testkit::{CONTACTS, EMPLOYEES, directory, two_rules, user};

const NOW: &str = "2026-01-01T00:00:00Z";

fn explain_in(rules: &Rules, snapshot: &Snapshot, view: &StoreView, who: ObjectId) -> Explanation {
    let run = Run {
        tenant: "t",
        directory: "t",
        safety: Safety::default(),
        scope: Scope::All,
        purge_before: None,
        now: NOW,
    };
    let names = group_names(rules, snapshot);
    let p = plan(&run, resolve(rules, snapshot), view, &names);
    explain(rules, snapshot, view, &p, "t", who)
}

fn in_both(u: &EntraUser) -> Snapshot {
    directory(
        std::slice::from_ref(u),
        &BTreeMap::from([(EMPLOYEES, vec![u.id]), (CONTACTS, vec![u.id])]),
    )
}

fn created(snapshot: &mut Snapshot, group: ObjectId, when: &str) {
    snapshot.groups.get_mut(&group).unwrap().created = Some(when.parse().unwrap());
}

#[test]
fn the_lower_order_wins_and_says_so() {
    let u = user(1);
    let e = explain_in(&two_rules("t"), &in_both(&u), &StoreView::default(), u.id);
    assert_eq!(e.scope, ScopeVerdict::InScope);
    assert_eq!(e.decided_by, Some(Criterion::LowerOrder));
    let orders: Vec<(i64, bool)> = e.rules.iter().map(|r| (r.order, r.winner)).collect();
    assert_eq!(orders, [(10, true), (20, false)]);
    assert_eq!(
        e.mapping,
        Mapping::New {
            kind: RecordKind::Employee
        }
    );
    assert_eq!(e.next_run.len(), 1);
    assert_eq!(e.next_run[0].action, Action::Create);
    let text = e.lines().join("\n");
    assert!(text.contains("Decided by: the lower order."), "{text}");
    assert!(
        text.contains("the next run creates a new employee"),
        "{text}"
    );
}

#[test]
fn on_equal_order_the_older_group_wins_then_the_smaller_id() {
    let u = user(1);
    let mut rules = two_rules("t");
    rules.rules[1].order = 10;
    let mut snapshot = in_both(&u);
    // The contact group (0xc) is older: it wins although its id is smaller anyway; make the
    // employee group the older one to see age beat the id.
    created(&mut snapshot, EMPLOYEES, "2020-01-01T00:00:00Z");
    created(&mut snapshot, CONTACTS, "2021-01-01T00:00:00Z");
    let e = explain_in(&rules, &snapshot, &StoreView::default(), u.id);
    assert_eq!(e.decided_by, Some(Criterion::OlderGroup));
    assert_eq!(e.rules[0].group_id, EMPLOYEES);
    assert_eq!(
        e.rules[0].group_created.as_deref(),
        Some("2020-01-01T00:00:00Z")
    );
    created(&mut snapshot, CONTACTS, "2020-01-01T00:00:00Z");
    let e = explain_in(&rules, &snapshot, &StoreView::default(), u.id);
    assert_eq!(e.decided_by, Some(Criterion::SmallerGroupId));
    assert_eq!(e.rules[0].group_id, CONTACTS, "0x…c < 0x…e");
    assert_eq!(
        e.mapping,
        Mapping::New {
            kind: RecordKind::Contact
        }
    );
}

#[test]
fn a_member_through_a_nested_group_is_shown_with_the_path() {
    let u = user(1);
    let inner = ObjectId::from_u128(0x99);
    let mut snapshot = directory(
        std::slice::from_ref(&u),
        &BTreeMap::from([(EMPLOYEES, vec![]), (CONTACTS, vec![]), (inner, vec![u.id])]),
    );
    snapshot
        .groups
        .get_mut(&EMPLOYEES)
        .unwrap()
        .members
        .insert(inner, MemberType::Group);
    let e = explain_in(&two_rules("t"), &snapshot, &StoreView::default(), u.id);
    assert_eq!(e.memberships.len(), 1);
    assert_eq!(e.memberships[0].group_id, EMPLOYEES);
    assert_eq!(
        e.memberships[0]
            .via
            .iter()
            .map(|g| g.id)
            .collect::<Vec<_>>(),
        [inner]
    );
    assert_eq!(e.decided_by, Some(Criterion::OnlyRule));
    assert!(
        e.lines().join("\n").contains("through \"Group"),
        "{:?}",
        e.lines()
    );
    // Without nesting, they are in no rule's group.
    let mut flat = two_rules("t");
    flat.nested_groups = false;
    let e = explain_in(&flat, &snapshot, &StoreView::default(), u.id);
    assert_eq!(e.scope, ScopeVerdict::InNoRuleGroup);
    assert!(e.memberships.is_empty());
}

#[test]
fn out_of_scope_says_why() {
    let mut u = user(1);
    u.account_enabled = Some(false);
    let e = explain_in(&two_rules("t"), &in_both(&u), &StoreView::default(), u.id);
    assert_eq!(e.scope, ScopeVerdict::Disabled);
    let mut u = user(1);
    u.mail = None;
    let e = explain_in(&two_rules("t"), &in_both(&u), &StoreView::default(), u.id);
    assert_eq!(e.scope, ScopeVerdict::NoEmail);
    let e = explain_in(
        &two_rules("t"),
        &in_both(&user(2)),
        &StoreView::default(),
        user(1).id,
    );
    assert_eq!(e.scope, ScopeVerdict::NotInEntra);
}

fn employee(id: i64, username: &str, email: &str) -> StoredRecord {
    StoredRecord {
        id,
        values: Values::Employee(EmployeeValues {
            username: Some(username.into()),
            email: Some(email.into()),
            ..EmployeeValues::default()
        }),
        active: true,
        is_root: false,
        deactivated_at: None,
    }
}

#[test]
fn a_username_taken_by_another_record_blocks_with_its_id() {
    let u = user(1);
    let mut view = StoreView::default();
    view.records.insert(
        (RecordKind::Employee, 7),
        employee(7, "user1", "someone.else@contoso.com"),
    );
    let e = explain_in(&two_rules("t"), &in_both(&u), &view, u.id);
    match &e.mapping {
        Mapping::Blocked { reason, message } => {
            assert_eq!(*reason, ReportKind::UsernameCollision);
            assert!(message.contains("#7"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.next_run.is_empty());
}

#[test]
fn a_record_with_the_email_is_merged_and_local_edits_are_listed() {
    let u = user(1);
    let mut view = StoreView::default();
    view.records.insert(
        (RecordKind::Employee, 3),
        employee(3, "old.name", "user1@contoso.com"),
    );
    let e = explain_in(&two_rules("t"), &in_both(&u), &view, u.id);
    assert_eq!(
        e.mapping,
        Mapping::MergedByEmail {
            kind: RecordKind::Employee,
            record: 3
        }
    );
    let username = e.next_run[0]
        .fields
        .iter()
        .find(|f| f.field == "username")
        .unwrap();
    assert_eq!(
        (username.old.as_str(), username.new.as_str()),
        (Some("old.name"), Some("user1"))
    );

    // Linked, with a local edit of the job title.
    let mut desired = resolve(&two_rules("t"), &in_both(&u)).desired;
    let values = desired.remove(&u.id).unwrap().values;
    let mut edited = values.clone();
    if let Values::Employee(v) = &mut edited {
        v.job_title = Some("Local".into());
    }
    let mut view = StoreView::default();
    view.records.insert(
        (RecordKind::Employee, 3),
        StoredRecord {
            id: 3,
            values: edited,
            active: true,
            is_root: false,
            deactivated_at: None,
        },
    );
    view.links.push(crate::plan::Link {
        directory: "t".into(),
        object_id: u.id,
        kind: RecordKind::Employee,
        record_id: 3,
        source: Some(values),
        upn: u.user_principal_name.clone(),
        state: LinkState::Synced,
    });
    let e = explain_in(&two_rules("t"), &in_both(&u), &view, u.id);
    assert_eq!(
        e.mapping,
        Mapping::Linked {
            kind: RecordKind::Employee,
            record: 3
        }
    );
    assert!(
        e.next_run.is_empty(),
        "Entra did not change: {:?}",
        e.next_run
    );
    assert_eq!(e.local_edits.len(), 1);
    assert_eq!(e.local_edits[0].fields[0].field, "job_title");
    assert_eq!(e.local_edits[0].fields[0].new, "Local");
}

#[test]
fn an_email_claimed_by_another_tenant_names_it() {
    let u = user(1);
    let mut view = StoreView::default();
    view.records.insert(
        (RecordKind::Employee, 5),
        employee(5, "other", "User1@Contoso.com"),
    );
    view.links.push(crate::plan::Link {
        directory: "dir-of-other".into(),
        object_id: ObjectId::from_u128(0x5555),
        kind: RecordKind::Employee,
        record_id: 5,
        source: None,
        upn: None,
        state: LinkState::Synced,
    });
    view.directory_names
        .insert("dir-of-other".into(), "fabrikam".into());
    let e = explain_in(&two_rules("t"), &in_both(&u), &view, u.id);
    match &e.mapping {
        Mapping::Blocked { reason, message } => {
            assert_eq!(*reason, ReportKind::EmailClaimed);
            assert!(message.contains("\"fabrikam\""), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_root_employee_blocks() {
    let u = user(1);
    let mut view = StoreView::default();
    let mut root = employee(1, "root", "user1@contoso.com");
    root.is_root = true;
    view.records.insert((RecordKind::Employee, 1), root);
    let e = explain_in(&two_rules("t"), &in_both(&u), &view, u.id);
    assert!(
        matches!(
            e.mapping,
            Mapping::Blocked {
                reason: ReportKind::RootConflict,
                ..
            }
        ),
        "{:?}",
        e.mapping
    );
}
