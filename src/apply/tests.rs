//! Plans applied to a real (temporary) SQLite store, then planned again: what a user of the PSA
//! would see in its tables after one run and after the next. The planner's own tests, on
//! built store views, are in the core crate; these hold the store to what the plan says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use entra_sync_core::ObjectId;
use entra_sync_core::directory::{EntraUser, Snapshot};
use entra_sync_core::plan::{Action, Plan, Run, Safety, Scope, group_names, plan};
use entra_sync_core::resolve::{ReportKind, resolve};
use entra_sync_core::rules::Rules;
use entra_sync_core::run::{RunCounts, RunMode, RunStatus};
use entra_sync_core::testkit::{CONTACTS, EMPLOYEES, directory, two_rules, user};

use crate::store::{RunRecord, Store};

const EMP: ObjectId = EMPLOYEES;
const CON: ObjectId = CONTACTS;

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    users: Vec<EntraUser>,
    members: BTreeMap<ObjectId, Vec<ObjectId>>,
    safety: Safety,
}

/// Keeps only the users with these numbers.
fn keep(members: &mut Vec<ObjectId>, numbers: &[u32]) {
    members.retain(|id| numbers.iter().any(|n| user(*n).id == *id));
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("psa.db")).unwrap();
        World {
            _dir: dir,
            store,
            users: Vec::new(),
            members: BTreeMap::from([(EMP, vec![]), (CON, vec![])]),
            safety: Safety::default(),
        }
    }

    fn add(&mut self, u: EntraUser, group: ObjectId) {
        self.members.get_mut(&group).unwrap().push(u.id);
        self.users.push(u);
    }

    fn rules(tenant: &str) -> Rules {
        two_rules(tenant)
    }

    fn snapshot(&self) -> Snapshot {
        directory(&self.users, &self.members)
    }

    fn plan_for(&self, tenant: &str) -> Plan {
        self.plan_with(tenant, &Self::rules(tenant), self.safety)
    }

    /// A tenant's plan; in these tests a tenant's directory is its name.
    fn plan_with(&self, tenant: &str, rules: &Rules, safety: Safety) -> Plan {
        let snapshot = self.snapshot();
        let run = Run {
            tenant,
            directory: tenant,
            safety,
            scope: Scope::All,
            purge_before: None,
            now: "2026-01-01T00:00:00Z",
        };
        plan(
            &run,
            resolve(rules, &snapshot),
            &self.store.view(tenant).unwrap(),
            &group_names(rules, &snapshot),
        )
    }

    fn sync_tenant(&mut self, tenant: &str) -> Plan {
        let p = self.plan_for(tenant);
        let run = RunRecord {
            tenant: tenant.into(),
            mode: RunMode::Full,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            status: RunStatus::Success,
            counts: RunCounts::default(),
            graph_requests: 0,
            error: None,
        };
        self.store
            .begin_run("2026-01-01T00:00:00Z".into())
            .unwrap()
            .finish(&p, &run, Some(&Scope::All))
            .unwrap();
        p
    }

    fn sync(&mut self) -> Plan {
        self.sync_tenant("t")
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let mut stmt = self.store.conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                        rusqlite::types::Value::Null => "NULL".to_string(),
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    fn exec(&self, sql: &str) {
        self.store.conn.execute_batch(sql).unwrap();
    }
}

fn actions(p: &Plan) -> Vec<(Action, String)> {
    p.changes
        .iter()
        .filter(|c| c.action != Action::Resnapshot)
        .map(|c| (c.action, c.user.to_string()))
        .collect()
}

#[test]
fn first_run_creates_records_and_groups_and_second_run_changes_nothing() {
    let mut w = World::new();
    w.add(user(1), EMP);
    w.add(user(2), CON);
    let first = w.sync();
    assert_eq!(first.count(Action::Create), 2);
    assert_eq!(
        w.rows("SELECT username, email, first_name, security_role, active FROM employees"),
        vec![vec![
            "user1",
            "User1@Contoso.com",
            "Given1",
            "Technician",
            "1"
        ]]
    );
    assert_eq!(
        w.rows("SELECT account, email, portal_access, phone_type FROM contacts"),
        vec![vec!["Contoso", "User2@Contoso.com", "1", "NULL"]]
    );
    assert_eq!(
        w.rows("SELECT COUNT(*) FROM group_members"),
        vec![vec!["2"]]
    );
    let second = w.plan_for("t");
    assert!(
        !second.writes_records(),
        "second run plans {:?}",
        second.changes
    );
}

#[test]
fn edits_behind_the_syncs_back_are_counted_and_its_own_writes_are_not() {
    let mut w = World::new();
    w.add(user(1), EMP);
    w.add(user(2), CON);
    let edited = |w: &World| w.store.edited_since_whole_plan("t").unwrap();
    assert!(edited(&w), "a tenant never planned whole");
    w.sync();
    assert!(
        !edited(&w),
        "the sync's creates, links and memberships are not edits"
    );
    w.users[0].job_title = Some("Lead".into());
    w.sync();
    assert!(!edited(&w), "nor its updates");
    // What the PSA does besides: tickets and its own timestamps are not what plans read.
    w.exec(
        "INSERT INTO tickets (subject, employee_id) VALUES ('printer', 1);
         UPDATE employees SET updated_at = 'now';",
    );
    assert!(!edited(&w));
    for edit in [
        "UPDATE employees SET username = 'renamed'",
        "UPDATE contacts SET active = 0",
        "DELETE FROM group_members WHERE member_kind = 'contact'",
        "INSERT INTO employees (username, email) VALUES ('new', 'new@contoso.com')",
        "DELETE FROM sync_links WHERE record_kind = 'contact'",
        "DELETE FROM tickets",
    ] {
        w.exec(edit);
        assert!(edited(&w), "{edit}");
        w.sync();
        assert!(!edited(&w), "a plan of every user saw {edit}");
    }
    // A marker row someone else left would silence the triggers: it counts as an edit, and
    // the sync's next write clears it.
    w.exec("INSERT INTO sync_writing (since) VALUES ('left behind')");
    assert!(edited(&w));
    w.sync();
    assert!(!edited(&w));
    w.exec("UPDATE employees SET username = 'again' WHERE id = 1");
    assert!(edited(&w), "counting again");
}

#[test]
fn existing_record_with_same_email_is_merged_keeping_id_and_ticket() {
    let mut w = World::new();
    w.exec(
        "INSERT INTO employees (id, username, email, first_name, active, is_root) VALUES (42, 'old', 'user1@contoso.com', 'Old', 1, 0);
         INSERT INTO tickets (id, subject, employee_id) VALUES (7, 'Printer', 42);",
    );
    w.add(user(1), EMP);
    let p = w.sync();
    assert_eq!(
        actions(&p),
        vec![(Action::Merge, "user1@contoso.com".into())]
    );
    assert_eq!(
        w.rows("SELECT id, username, first_name FROM employees"),
        vec![vec!["42", "user1", "Given1"]]
    );
    assert_eq!(
        w.rows("SELECT employee_id FROM tickets WHERE id = 7"),
        vec![vec!["42"]]
    );
}

#[test]
fn local_edit_persists_until_the_entra_user_changes() {
    let mut w = World::new();
    w.add(user(1), EMP);
    w.sync();
    w.exec("UPDATE employees SET job_title = 'Local title'");
    assert!(!w.plan_for("t").writes_records());
    w.sync();
    assert_eq!(
        w.rows("SELECT job_title FROM employees"),
        vec![vec!["Local title"]]
    );
    w.users[0].surname = Some("Changed".into());
    let p = w.sync();
    assert_eq!(p.count(Action::Update), 1);
    assert_eq!(
        w.rows("SELECT job_title, last_name FROM employees"),
        vec![vec!["Engineer", "Changed"]]
    );
}

#[test]
fn user_moved_from_employee_to_contact_group_is_archived_and_gets_a_contact() {
    let mut w = World::new();
    w.add(user(1), EMP);
    w.sync();
    w.members.get_mut(&EMP).unwrap().clear();
    w.members.get_mut(&CON).unwrap().push(user(1).id);
    let p = w.sync();
    assert_eq!(p.count(Action::Archive), 1);
    assert_eq!(p.count(Action::Create), 1);
    assert_eq!(
        w.rows("SELECT username, email, active, security_role FROM employees"),
        vec![vec![
            "user1_Archived",
            "User1@Contoso.com_Archived",
            "0",
            "NULL"
        ]]
    );
    assert_eq!(
        w.rows("SELECT email, active FROM contacts"),
        vec![vec!["User1@Contoso.com", "1"]]
    );
    // And back: the archived employee is reactivated (same id) and the contact archived.
    w.members.get_mut(&CON).unwrap().clear();
    w.members.get_mut(&EMP).unwrap().push(user(1).id);
    let p = w.sync();
    assert_eq!(p.count(Action::Reactivate), 1);
    assert_eq!(p.count(Action::Archive), 1);
    assert_eq!(
        w.rows("SELECT id, username, active FROM employees"),
        vec![vec!["1", "user1", "1"]]
    );
    assert_eq!(
        w.rows("SELECT email, active, portal_access FROM contacts"),
        vec![vec!["User1@Contoso.com_Archived", "0", "0"]]
    );
}

#[test]
fn root_employee_is_never_touched() {
    let mut w = World::new();
    w.exec("INSERT INTO employees (id, username, email, first_name, active, is_root) VALUES (1, 'root', 'user1@contoso.com', 'Root', 1, 1)");
    w.add(user(1), CON);
    let p = w.sync();
    assert!(p.changes.is_empty());
    assert_eq!(p.reports[0].kind, ReportKind::RootConflict);
    assert_eq!(
        w.rows("SELECT username, active, is_root FROM employees"),
        vec![vec!["root", "1", "1"]]
    );
    let mut w = World::new();
    w.exec("INSERT INTO employees (id, username, email, first_name, active, is_root) VALUES (1, 'root', 'user1@contoso.com', 'Root', 1, 1)");
    w.add(user(1), EMP);
    let p = w.sync();
    assert!(p.changes.is_empty());
    assert_eq!(p.reports[0].kind, ReportKind::RootConflict);
}

#[test]
fn username_collision_is_reported_and_never_steals_the_name() {
    let mut w = World::new();
    w.exec("INSERT INTO employees (id, username, email, active, is_root) VALUES (5, 'USER1', 'someone@else.com', 0, 0)");
    w.add(user(1), EMP);
    w.add(user(2), EMP);
    let p = w.sync();
    assert_eq!(
        actions(&p),
        vec![(Action::Create, "user2@contoso.com".into())]
    );
    assert_eq!(p.reports.len(), 1);
    assert_eq!(p.reports[0].kind, ReportKind::UsernameCollision);
    assert_eq!(
        w.rows("SELECT username FROM employees WHERE id = 5"),
        vec![vec!["USER1"]]
    );
}

#[test]
fn leaving_scope_deactivates_and_coming_back_reactivates_the_same_record() {
    let mut w = World::new();
    for n in 1..=10 {
        w.add(user(n), EMP);
    }
    w.sync();
    w.users[0].account_enabled = Some(false);
    let p = w.sync();
    assert_eq!(
        actions(&p),
        vec![(Action::Deactivate, "User1@Contoso.com".into())]
    );
    assert_eq!(
        w.rows("SELECT active, security_role, deactivated_at IS NOT NULL FROM employees WHERE username = 'user1'"),
        vec![vec!["0", "NULL", "1"]]
    );
    assert_eq!(
        w.rows("SELECT COUNT(*) FROM group_members"),
        vec![vec!["9"]]
    );
    w.users[0].account_enabled = Some(true);
    let p = w.sync();
    assert_eq!(p.count(Action::Reactivate), 1);
    assert_eq!(
        w.rows("SELECT id, active, security_role, deactivated_at FROM employees WHERE username = 'user1'"),
        vec![vec!["1", "1", "Technician", "NULL"]]
    );
}

#[test]
fn mass_deactivation_is_held_until_allowed_and_creates_still_apply() {
    let mut w = World::new();
    for n in 1..=10 {
        w.add(user(n), EMP);
    }
    w.sync();
    w.safety = Safety {
        max_deactivations: 2,
        max_deactivation_percent: 0,
        allow_mass_deactivation: false,
        deactivate_after_minutes: 0,
    };
    keep(w.members.get_mut(&EMP).unwrap(), &[1, 2]);
    w.add(user(11), EMP);
    let p = w.sync();
    assert!(p.hold_reason.is_some());
    assert_eq!(p.held.len(), 8);
    assert_eq!(p.count(Action::Create), 1);
    assert_eq!(
        w.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["11"]]
    );
    // Still held on the next run, until allowed.
    assert_eq!(w.plan_for("t").held.len(), 8);
    w.safety.allow_mass_deactivation = true;
    let p = w.sync();
    assert_eq!(p.count(Action::Deactivate), 8);
    assert_eq!(
        w.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["3"]]
    );
}

#[test]
fn percent_limit_counts_active_synced_records_and_holds_kind_changes_whole() {
    let mut w = World::new();
    for n in 1..=4 {
        w.add(user(n), EMP);
    }
    w.sync();
    w.safety = Safety {
        max_deactivations: 0,
        max_deactivation_percent: 20,
        allow_mass_deactivation: false,
        deactivate_after_minutes: 0,
    };
    keep(w.members.get_mut(&EMP).unwrap(), &[2, 3, 4]);
    w.members.get_mut(&CON).unwrap().push(user(1).id);
    let p = w.sync();
    assert!(p.hold_reason.is_some(), "1 of 4 is 25% > 20%");
    assert_eq!(
        p.count(Action::Create),
        0,
        "the new contact is held with the archive"
    );
    assert_eq!(w.rows("SELECT COUNT(*) FROM contacts"), vec![vec!["0"]]);
    assert_eq!(
        w.rows("SELECT username, active FROM employees WHERE id = 1"),
        vec![vec!["user1", "1"]]
    );
}

#[test]
fn a_hold_leaves_group_memberships_as_they_are_until_it_is_released() {
    let mut w = World::new();
    for n in 1..=4 {
        w.add(user(n), EMP);
    }
    w.sync();
    let members = |w: &World, group: ObjectId| {
        w.rows(&format!(
            "SELECT m.member_kind, m.member_id FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE g.object_id = '{group}' ORDER BY 1, 2"
        ))
    };
    let employees_before = members(&w, EMP);
    assert_eq!(employees_before.len(), 4);
    w.safety = Safety {
        max_deactivations: 1,
        max_deactivation_percent: 0,
        allow_mass_deactivation: false,
        deactivate_after_minutes: 0,
    };
    // User 1 moves to the contact group (a kind change); users 2 and 3 leave scope.
    keep(w.members.get_mut(&EMP).unwrap(), &[4]);
    w.members.get_mut(&CON).unwrap().push(user(1).id);
    let p = w.sync();
    assert!(p.hold_reason.is_some());
    assert_eq!(
        members(&w, EMP),
        employees_before,
        "held users keep their memberships"
    );
    assert!(
        members(&w, CON).is_empty(),
        "a held kind change puts no record in the new rule's group"
    );

    w.safety.allow_mass_deactivation = true;
    w.sync();
    assert_eq!(members(&w, EMP), vec![vec!["employee", "4"]]);
    assert_eq!(
        members(&w, CON),
        vec![vec!["contact".to_string(), contact_id(&w, 1)]]
    );
}

fn contact_id(w: &World, n: u32) -> String {
    w.rows(&format!(
        "SELECT id FROM contacts WHERE email = 'User{n}@Contoso.com'"
    ))[0][0]
        .clone()
}

#[test]
fn an_email_linked_to_another_tenant_stays_there() {
    let mut w = World::new();
    w.add(user(1), EMP);
    w.sync_tenant("first");
    let p = w.sync_tenant("second");
    assert!(p.changes.is_empty());
    assert_eq!(p.reports[0].kind, ReportKind::EmailClaimed);
    assert!(p.reports[0].message.contains("\"first\""));
    assert_eq!(w.rows("SELECT COUNT(*) FROM employees"), vec![vec!["1"]]);
}

#[test]
fn duplicate_emails_in_one_tenant_create_one_record_and_report_the_other() {
    let mut w = World::new();
    let mut twin = user(2);
    twin.mail = user(1).mail;
    w.add(user(1), EMP);
    w.add(twin, EMP);
    let p = w.sync();
    assert_eq!(p.count(Action::Create), 1);
    assert_eq!(p.reports[0].kind, ReportKind::DuplicateEmail);
    // The report does not turn into a deactivation of anybody on the next run.
    let again = w.plan_for("t");
    assert!(!again.writes_records());
}

#[test]
fn removing_a_rule_removes_its_read_only_group_but_not_records_of_users_in_other_groups() {
    let mut w = World::new();
    w.add(user(1), EMP);
    w.add(user(2), CON);
    w.sync();
    w.members.remove(&CON);
    w.members.get_mut(&EMP).unwrap().push(user(2).id);
    let only_employees = Rules {
        rules: World::rules("t")
            .rules
            .into_iter()
            .filter(|r| r.group_id == EMP)
            .collect(),
        ..World::rules("t")
    };
    let p = w.plan_with(
        "t",
        &only_employees,
        Safety {
            allow_mass_deactivation: true,
            ..Safety::default()
        },
    );
    assert!(
        p.groups
            .iter()
            .any(|g| g.object_id == CON && g.remove_group)
    );
    assert_eq!(
        p.count(Action::Archive),
        1,
        "user2 becomes an employee; the contact is archived"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever memberships users have, a second plan after applying the first changes nothing,
    /// and no two active records of a kind share an email.
    #[test]
    fn any_membership_converges_in_one_run(memberships in proptest::collection::vec(0u8..4, 1..12)) {
        let mut w = World::new();
        for (i, m) in memberships.iter().enumerate() {
            let u = user(i as u32 + 1);
            if m & 1 != 0 { w.members.get_mut(&EMP).unwrap().push(u.id); }
            if m & 2 != 0 { w.members.get_mut(&CON).unwrap().push(u.id); }
            w.users.push(u);
        }
        w.safety.allow_mass_deactivation = true;
        w.sync();
        let again = w.plan_for("t");
        prop_assert!(!again.writes_records(), "{:?}", again.changes);
        let dupes = w.rows("SELECT COUNT(*) FROM (SELECT lower(email) FROM employees WHERE active = 1 GROUP BY lower(email) HAVING COUNT(*) > 1)");
        prop_assert_eq!(&dupes[0][0], "0");
        let expected = memberships.iter().filter(|m| **m != 0).count();
        let live = w.rows("SELECT (SELECT COUNT(*) FROM employees WHERE active = 1) + (SELECT COUNT(*) FROM contacts WHERE active = 1)");
        prop_assert_eq!(live[0][0].parse::<usize>().unwrap(), expected);
    }
}
