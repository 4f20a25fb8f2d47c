//! Incremental sync with delta queries (SPEC 5.1): changes arrive through delta rounds, an idle
//! round is cheap, expired cursors fall back to a full sync, and incremental runs converge to
//! exactly what a fresh full sync produces.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use crate::support::{TestEnv, tenant};
use std::time::Duration;

use graph_sim::{Fault, FaultKind, UserPatch};

fn graph_requests(env: &TestEnv) -> u64 {
    env.sim().stats().matching("/v1.0/")
}

/// Gives `user` a new job title in Entra.
fn retitle(env: &TestEnv, user: &str, title: &str) {
    env.sim()
        .update_user(
            user,
            UserPatch {
                job_title: Some(Some(title.into())),
                ..Default::default()
            },
        )
        .unwrap();
}

/// The next run applies the one retitle Entra made and purges bob's record.
async fn bob_is_purged_with_that_change(env: &TestEnv) {
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["updated"].as_i64(), t["purged"].as_i64()),
        (Some(1), Some(1)),
        "{t}"
    );
    assert!(
        env.rows("SELECT id FROM employees WHERE username = 'bob'")
            .is_empty()
    );
}

async fn staffed() -> (TestEnv, String, String, Vec<String>) {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let customers = env.group("Customers", 2);
    let users: Vec<String> = ["ada", "bob", "cyd", "dee"]
        .iter()
        .map(|u| env.user(u))
        .collect();
    env.add(&staff, &users[0]);
    env.add(&staff, &users[1]);
    env.add(&customers, &users[2]);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.contact_rule(&customers, 20, true);
    (env, staff, customers, users)
}

#[tokio::test]
async fn an_idle_incremental_round_costs_two_graph_requests_and_writes_no_record() {
    let (env, _, _, _) = staffed().await;
    let first = env.sync_ok(&[]).await;
    assert_eq!(tenant(&first, "t0")["mode"], "full");
    let before = env.dump();
    env.sim().reset_stats();
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(
        graph_requests(&env),
        2,
        "{:?}",
        env.sim().stats().by_endpoint
    );
    assert_eq!(env.dump(), before);
}

/// SPEC 8: a nested group found by the first full read gets a cursor of its own (taken after
/// the read); the next incremental run folds every group cursor into one, so idle rounds cost
/// two requests again, not three until the next full sync — and nothing that changed in
/// between is lost.
#[tokio::test]
async fn idle_rounds_cost_two_requests_once_a_nested_groups_cursor_is_folded_in() {
    let (env, staff, _, users) = staffed().await;
    let nested = env.group("Night shift", 3);
    env.add(&staff, &nested);
    let nina = env.user("nina");
    env.add(&nested, &nina);
    env.sync_ok(&[]).await;
    // Changes in both groups before the run that folds the cursors.
    env.remove(&staff, &users[0]);
    let omar = env.user("omar");
    env.add(&nested, &omar);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(tenant(&s, "t0")["created"], 1, "{s}");
    assert_eq!(tenant(&s, "t0")["deactivated"], 1, "{s}");
    for _ in 0..2 {
        env.sim().reset_stats();
        let s = env.sync_ok(&[]).await;
        assert_eq!(tenant(&s, "t0")["mode"], "incremental");
        assert_eq!(
            graph_requests(&env),
            2,
            "{:?}",
            env.sim().stats().by_endpoint
        );
    }
    // A change in the nested group after the fold still arrives.
    let pia = env.user("pia");
    env.add(&nested, &pia);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["created"], 1, "{s}");
}

#[tokio::test]
async fn changes_in_entra_reach_the_store_through_delta_rounds() {
    let (env, staff, customers, users) = staffed().await;
    env.sync_ok(&[]).await;
    retitle(&env, &users[0], "Lead");
    env.add(&customers, &users[3]);
    env.remove(&staff, &users[1]);
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(t["mode"], "incremental");
    assert_eq!(
        (
            t["updated"].as_i64(),
            t["created"].as_i64(),
            t["deactivated"].as_i64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        env.rows("SELECT username, job_title, active FROM employees ORDER BY username"),
        vec![vec!["ada", "Lead", "1"], vec!["bob", "Engineer", "0"]]
    );
    assert_eq!(
        env.rows("SELECT email FROM contacts WHERE active = 1 ORDER BY email"),
        vec![vec!["cyd@contoso.com"], vec!["dee@contoso.com"]]
    );
}

#[tokio::test]
async fn a_change_inside_a_nested_group_reaches_the_store() {
    let (env, staff, _, users) = staffed().await;
    let nested = env.group("Staff / Nested", 3);
    env.add(&staff, &nested);
    env.sync_ok(&[]).await;
    env.add(&nested, &users[3]);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dee' AND active = 1"),
        vec![vec!["1"]]
    );
}

#[tokio::test]
async fn a_change_made_while_a_full_sync_finds_a_nested_group_is_not_lost() {
    let (env, staff, _, users) = staffed().await;
    let nested = env.group("Staff / Nested", 3);
    env.add(&staff, &nested);
    // The first full sync finds the nested group only while it reads Staff. Its members are
    // read in a second wave, held back here so the test can change Staff meanwhile: after
    // Staff's page was served, before the sync ends.
    let nested_members = format!("/groups/{nested}/members");
    env.sim().inject_fault(Fault::new(
        &nested_members,
        FaultKind::Delay(Duration::from_millis(1500)),
        1,
    ));
    let change_during_the_read = async {
        while !env.sim().faults().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        env.add(&staff, &users[3]);
    };
    let (first, ()) = tokio::join!(env.sync_ok(&[]), change_during_the_read);
    assert_eq!(tenant(&first, "t0")["mode"], "full");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dee'"),
        vec![vec!["0"]],
        "the full read saw Staff before dee joined"
    );
    // Staff's delta cursor was taken before the read, so the next round replays the change.
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dee' AND active = 1"),
        vec![vec!["1"]]
    );
}

/// A nested group found by a full read gets its cursor before its members are read: a change
/// inside it after its members were read, while the sync still reads something else, is
/// replayed by the next round.
#[tokio::test]
async fn a_change_inside_a_nested_group_found_by_a_full_sync_after_its_read_is_not_lost() {
    let (env, staff, _, users) = staffed().await;
    let nested = env.group("Staff / Nested", 3);
    env.add(&staff, &nested);
    // The deleted users are read beside the members; held back, they keep the sync going
    // after both groups' members were served.
    env.sim().inject_fault(Fault::new(
        "/directory/deletedItems",
        FaultKind::Delay(Duration::from_millis(1500)),
        1,
    ));
    // Staff's, Customers' and then the nested group's members.
    let member_reads = "GET /v1.0/groups/{id}/members 200";
    let change_after_the_nested_read = async {
        while env.sim().stats().by_endpoint.get(member_reads).copied() < Some(3) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        env.add(&nested, &users[3]);
    };
    let (first, ()) = tokio::join!(env.sync_ok(&[]), change_after_the_nested_read);
    assert_eq!(tenant(&first, "t0")["mode"], "full");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dee'"),
        vec![vec!["0"]],
        "the full read saw the nested group before dee joined"
    );
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dee' AND active = 1"),
        vec![vec!["1"]]
    );
}

#[tokio::test]
async fn a_failed_incremental_run_is_recorded_as_incremental() {
    let (env, _, _, _) = staffed().await;
    env.sync_ok(&[]).await;
    env.sim()
        .inject_fault(Fault::status("/users/delta", 403, None, 1000));
    let out = env.run(&["sync", "--json"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(
        env.rows("SELECT mode, status FROM sync_runs ORDER BY id DESC LIMIT 1"),
        vec![vec!["incremental", "failed"]]
    );
}

#[tokio::test]
async fn disabled_and_soft_deleted_users_are_deactivated_by_an_incremental_run() {
    let (env, _, _, users) = staffed().await;
    env.sync_ok(&[]).await;
    env.sim().disable_user(&users[0]).unwrap();
    env.sim().delete_user(&users[2]).unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(
        env.rows("SELECT username, active FROM employees WHERE active = 0"),
        vec![vec!["ada", "0"]]
    );
    assert_eq!(
        env.rows("SELECT email, active FROM contacts"),
        vec![vec!["cyd@contoso.com", "0"]]
    );
}

#[tokio::test]
async fn an_expired_cursor_falls_back_to_a_full_sync_by_itself() {
    for status in [400, 410] {
        let (env, staff, _, users) = staffed().await;
        env.sync_ok(&[]).await;
        env.add(&staff, &users[3]);
        env.sim().expire_delta_tokens_with(status);
        let s = env.sync_ok(&[]).await;
        assert_eq!(tenant(&s, "t0")["mode"], "full", "status {status}");
        assert_eq!(
            env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dee'"),
            vec![vec!["1"]]
        );
        // The new cursors work again.
        let s = env.sync_ok(&[]).await;
        assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    }
}

#[tokio::test]
async fn a_rule_change_in_the_config_applies_on_the_next_incremental_run() {
    let (mut env, _, _, _) = staffed().await;
    env.sync_ok(&[]).await;
    env.rules[0] = env.rules[0].replace("role = \"Tech\"", "role = \"Senior\"");
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(
        env.rows("SELECT DISTINCT security_role FROM employees"),
        vec![vec!["Senior"]]
    );
}

/// One random change to the simulated tenant.
#[derive(Debug, Clone)]
enum Mutation {
    Add { group: usize, user: usize },
    Remove { group: usize, user: usize },
    Title { user: usize, n: u8 },
    Toggle { user: usize },
    SoftDelete { user: usize },
    Restore { user: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..3usize, 0..8usize).prop_map(|(group, user)| Mutation::Add { group, user }),
        (0..3usize, 0..8usize).prop_map(|(group, user)| Mutation::Remove { group, user }),
        (0..8usize, any::<u8>()).prop_map(|(user, n)| Mutation::Title { user, n }),
        (0..8usize).prop_map(|user| Mutation::Toggle { user }),
        (0..8usize).prop_map(|user| Mutation::SoftDelete { user }),
        (0..8usize).prop_map(|user| Mutation::Restore { user }),
    ]
}

/// The live records and group members. (A fresh store cannot hold the deactivated history an
/// incremental store keeps, so inactive records are left out of the comparison.)
fn records(env: &TestEnv) -> Vec<Vec<String>> {
    let mut rows = env.rows(
        "SELECT 'e', username, email, first_name, last_name, job_title, phone, department, security_role FROM employees WHERE active = 1
         UNION ALL SELECT 'c', account, email, first_name, last_name, job_title, phone, phone_type, portal_access FROM contacts WHERE active = 1",
    );
    rows.extend(env.rows(
        "SELECT 'g', g.display_name, m.member_kind, COALESCE(e.email, c.email) FROM group_members m
         JOIN groups g ON g.id = m.group_id
         LEFT JOIN employees e ON m.member_kind = 'employee' AND e.id = m.member_id
         LEFT JOIN contacts c ON m.member_kind = 'contact' AND c.id = m.member_id",
    ));
    rows.sort();
    rows
}

#[test]
fn incremental_runs_converge_to_what_a_fresh_full_sync_produces() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &proptest::collection::vec(proptest::collection::vec(mutation(), 1..4), 1..5),
            |rounds| {
                runtime.block_on(async {
                    let mut env = TestEnv::new().await;
                    let groups = [env.group("A", 1), env.group("B", 2), env.group("Nested", 3)];
                    env.add(&groups[0], &groups[2]);
                    let users: Vec<String> = (0..8).map(|i| env.user(&format!("u{i}"))).collect();
                    env.add(&groups[0], &users[0]);
                    env.add(&groups[1], &users[1]);
                    env.employee_rule(&groups[0], 10, Some("Tech"));
                    env.contact_rule(&groups[1], 20, true);
                    env.extra_config =
                        "[safety]\nmax_deactivations = 0\nmax_deactivation_percent = 0\n".into();
                    env.sync_ok(&[]).await;
                    for round in &rounds {
                        let sim = env.sim();
                        for m in round {
                            let _ = match m {
                                Mutation::Add { group, user } => {
                                    sim.add_member(&groups[*group], &users[*user])
                                }
                                Mutation::Remove { group, user } => {
                                    sim.remove_member(&groups[*group], &users[*user])
                                }
                                Mutation::Title { user, n } => sim
                                    .update_user(
                                        &users[*user],
                                        UserPatch {
                                            job_title: Some(Some(format!("T{n}"))),
                                            ..Default::default()
                                        },
                                    )
                                    .map(drop),
                                Mutation::Toggle { user } => match sim.user(&users[*user]) {
                                    Some(u) => sim
                                        .update_user(
                                            &users[*user],
                                            UserPatch {
                                                account_enabled: Some(!u.account_enabled),
                                                ..Default::default()
                                            },
                                        )
                                        .map(drop),
                                    None => Ok(()),
                                },
                                Mutation::SoftDelete { user } => sim.delete_user(&users[*user]),
                                Mutation::Restore { user } => {
                                    sim.restore_user(&users[*user]).map(drop)
                                }
                            };
                        }
                        let s = env.sync_ok(&[]).await;
                        assert_eq!(tenant(&s, "t0")["mode"], "incremental");
                    }
                    let incremental = records(&env);
                    std::fs::remove_file(env.store_path()).unwrap();
                    let _ = std::fs::remove_file(env.store_path().with_extension("db-wal"));
                    let _ = std::fs::remove_file(env.store_path().with_extension("db-shm"));
                    env.sync_ok(&["--full"]).await;
                    let full = records(&env);
                    prop_assert_eq!(incremental, full, "after {:?}", rounds);
                    Ok(())
                })
            },
        )
        .unwrap();
}

/// What Graph charged a run (`x-ms-resource-unit`, `$batch` items included) is in its summary:
/// the figure a pacer and an operator watch against Graph's budgets.
#[tokio::test]
async fn a_run_reports_the_resource_units_graph_charged() {
    let mut env = TestEnv::new().await;
    let g = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&g, &ada);
    env.employee_rule(&g, 10, None);
    env.sim().reset_stats();
    let s = env.sync_ok(&["--full"]).await;
    let charged = env.sim().stats().resource_units;
    assert!(charged > 0);
    assert_eq!(
        crate::support::tenant(&s, "t0")["resource_units"].as_u64(),
        Some(charged),
        "{s}"
    );
}

/// SPEC 8: an incremental run with one change plans the people it touches, not the tenant,
/// and leaves the store a full run would (a full run right after changes nothing).
#[tokio::test]
async fn one_change_is_planned_alone_and_leaves_the_store_a_full_run_would() {
    let (env, _, _, users) = staffed().await;
    env.sync_ok(&[]).await;
    retitle(&env, &users[0], "Lead");
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(t["mode"], "incremental");
    assert_eq!(t["updated"], 1);
    assert_eq!(t["planned_users"], 1, "{t}");
    let full = env.sync_ok(&["--full"]).await;
    let f = tenant(&full, "t0");
    assert_eq!(f["planned_users"], 3);
    assert_eq!(
        (f["created"].as_i64(), f["updated"].as_i64()),
        (Some(0), Some(0)),
        "{f}"
    );
}

/// A kind change archives the employee as `…_Archived`, or `…_Archived2` when an employee
/// the run's people are not linked to has that name: a run of those people must see it, or the
/// store's unique usernames refuse the write (and every retry).
#[tokio::test]
async fn a_kind_change_archives_under_a_name_no_employee_has_even_when_planned_alone() {
    let (env, staff, customers, users) = staffed().await;
    env.sync_ok(&[]).await;
    env.exec(
        "INSERT INTO employees (username, email, active) VALUES ('bob_Archived', 'old.bob@contoso.com', 0)",
    );
    env.remove(&staff, &users[1]);
    env.add(&customers, &users[1]);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["archived"], 1);
    assert_eq!(
        env.rows(
            "SELECT username, active FROM employees WHERE username LIKE 'bob%' ORDER BY username"
        ),
        vec![vec!["bob_Archived", "0"], vec!["bob_Archived2", "0"]]
    );
}

/// SPEC 4.14: retention turned on later purges what is old enough at the next run, whatever
/// that run's change is about.
#[tokio::test]
async fn retention_turned_on_purges_at_the_next_run_with_an_unrelated_change() {
    let (mut env, staff, _, users) = staffed().await;
    env.sync_ok(&[]).await;
    env.remove(&staff, &users[1]);
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET deactivated_at = '2020-01-01T00:00:00Z' WHERE username = 'bob'");
    env.extra_config
        .push_str("\n[retention]\npurge_deactivated_after_days = 30\n");
    retitle(&env, &users[0], "Lead");
    bob_is_purged_with_that_change(&env).await;
}

/// SPEC 4.14: a record an admin took out of service long ago, whose user then leaves (the run
/// only revokes its access), is purged by the next run whatever that run's change is about.
#[tokio::test]
async fn a_record_out_of_service_long_ago_is_purged_by_the_run_after_its_user_left() {
    let (mut env, staff, _, users) = staffed().await;
    env.extra_config
        .push_str("\n[retention]\npurge_deactivated_after_days = 30\n");
    env.sync_ok(&[]).await;
    env.exec(
        "UPDATE employees SET active = 0, deactivated_at = '2020-01-01T00:00:00Z' WHERE username = 'bob'",
    );
    env.remove(&staff, &users[1]);
    let left = env.sync_ok(&[]).await;
    assert_eq!(tenant(&left, "t0")["purged"], 0, "{left}");
    retitle(&env, &users[0], "Lead");
    bob_is_purged_with_that_change(&env).await;
}

/// SPEC 4.6, 4.8 and 4.13: a user whose record an admin renamed still wants their Entra
/// username. When a change makes someone else want it too, the name goes where a whole run
/// would send it (the smaller object id, nobody holding it now), not to whoever changed.
#[tokio::test]
async fn a_name_an_admin_renamed_away_is_still_wanted_by_its_user_in_a_run_of_one_change() {
    let (env, _, _, users) = staffed().await;
    env.sync_ok(&[]).await;
    // ada and bob: the smaller object id keeps wanting its name, the other changes to want it.
    let (keeper, changer) = if users[0] < users[1] {
        (("ada", &users[0]), ("bob", &users[1]))
    } else {
        (("bob", &users[1]), ("ada", &users[0]))
    };
    env.exec(&format!(
        "UPDATE employees SET username = 'renamed', email = 'renamed@contoso.com' WHERE username = '{}'",
        keeper.0
    ));
    // (That run plans the whole tenant, having an edit behind its back to see.)
    env.sync_ok(&[]).await;
    env.sim()
        .update_user(
            changer.1,
            UserPatch {
                user_principal_name: Some(format!("{}@fabrikam.com", keeper.0)),
                ..Default::default()
            },
        )
        .unwrap();
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(t["updated"], 0, "{t}");
    assert_eq!(
        t["planned_users"], 2,
        "the changed user and the one wanting the name: {t}"
    );
    assert_eq!(t["reports"][0]["kind"], "username_collision", "{t}");
    assert_eq!(
        env.rows("SELECT username FROM employees WHERE is_root = 0 ORDER BY username"),
        vec![vec![changer.0.to_string()], vec!["renamed".to_string()]]
    );
}

/// SPEC 4.13: an edit made behind the sync's back (here a synced record deleted) is seen by
/// the next run, not only by the nightly full sync, even when Entra changed nothing; the
/// sync's own writes are not such edits, so the run after is idle again.
#[tokio::test]
async fn a_record_deleted_behind_the_syncs_back_is_back_after_the_next_idle_run() {
    let (env, _, _, _) = staffed().await;
    env.sync_ok(&[]).await;
    let idle = env.sync_ok(&[]).await;
    assert_eq!(tenant(&idle, "t0")["planned_users"], 0, "{idle}");
    env.exec(
        "DELETE FROM group_members WHERE member_kind = 'employee'
             AND member_id = (SELECT id FROM employees WHERE username = 'bob');
         DELETE FROM sync_links WHERE record_kind = 'employee'
             AND record_id = (SELECT id FROM employees WHERE username = 'bob');
         DELETE FROM employees WHERE username = 'bob';",
    );
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["mode"].as_str(), t["created"].as_i64()),
        (Some("incremental"), Some(1)),
        "{t}"
    );
    assert_eq!(
        env.rows("SELECT username FROM employees WHERE is_root = 0 ORDER BY username"),
        vec![vec!["ada".to_string()], vec!["bob".to_string()]]
    );
    let after = env.sync_ok(&[]).await;
    assert_eq!(tenant(&after, "t0")["planned_users"], 0, "{after}");
}

/// SPEC 8 and 4.8: a user skipped over a name someone else holds is planned again by the run
/// whose change touches that name, and only by it.
#[tokio::test]
async fn a_reported_user_is_planned_again_only_when_a_change_touches_the_name_they_want() {
    let (env, _, _, users) = staffed().await;
    let mail = |user: &str, mail: &str| {
        env.sim()
            .update_user(
                user,
                UserPatch {
                    mail: Some(Some(mail.into())),
                    ..Default::default()
                },
            )
            .unwrap();
    };
    env.sync_ok(&[]).await;
    // bob comes to want ada's email, which ada's record holds: bob is skipped.
    mail(&users[1], "ada@contoso.com");
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        tenant(&s, "t0")["reports"][0]["kind"],
        "duplicate_email",
        "{s}"
    );
    retitle(&env, &users[2], "Buyer");
    let unrelated = env.sync_ok(&[]).await;
    let t = tenant(&unrelated, "t0");
    assert_eq!(t["planned_users"], 1, "{t}");
    assert_eq!(
        t["reports"][0]["kind"], "duplicate_email",
        "the report stays open: {t}"
    );
    // ada moves on: her old email is free, and bob gets it in the same run.
    mail(&users[0], "ada.new@contoso.com");
    let freed = env.sync_ok(&[]).await;
    let t = tenant(&freed, "t0");
    assert_eq!(
        (t["updated"].as_i64(), t["planned_users"].as_i64()),
        (Some(2), Some(2)),
        "{t}"
    );
    assert_eq!(t["reports"].as_array().map(Vec::len), Some(0), "{t}");
    assert_eq!(
        env.rows("SELECT username, email FROM employees WHERE is_root = 0 ORDER BY username"),
        vec![
            vec!["ada".to_string(), "ada.new@contoso.com".to_string()],
            vec!["bob".to_string(), "ada@contoso.com".to_string()]
        ]
    );
    let full = env.sync_ok(&["--full"]).await;
    let f = tenant(&full, "t0");
    assert_eq!(
        (f["created"].as_i64(), f["updated"].as_i64()),
        (Some(0), Some(0)),
        "{f}"
    );
}

/// SPEC 4.8 across tenants: usernames are unique over every employee, so a name one tenant's
/// run frees settles another tenant's user waiting for it in the same round, even though
/// nothing changed in that tenant's Entra.
#[tokio::test]
async fn a_username_freed_in_one_tenant_goes_to_the_user_waiting_for_it_in_another() {
    let mut env = TestEnv::with_tenants(2).await;
    let g0 = env.group_in(0, "Staff A", 1);
    let g1 = env.group_in(1, "Staff B", 1);
    let first = env.user_in(0, "jdoe");
    let second = env.user_in(1, "jdoe");
    env.rule(0, &g0, 10, "employee", String::new());
    env.rule(1, &g1, 10, "employee", String::new());
    let upn = |tenant: usize, user: &str, patch: UserPatch| {
        env.sims[tenant].control().update_user(user, patch).unwrap();
    };
    upn(
        1,
        &second,
        UserPatch {
            mail: Some(Some("jdoe@fabrikam.com".into())),
            ..Default::default()
        },
    );
    env.sims[0].control().add_member(&g0, &first).unwrap();
    env.sims[1].control().add_member(&g1, &second).unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        tenant(&s, "t1")["reports"][0]["kind"],
        "username_collision",
        "{s}"
    );
    env.sync_ok(&[]).await;
    upn(
        0,
        &first,
        UserPatch {
            user_principal_name: Some("john@contoso.com".into()),
            ..Default::default()
        },
    );
    let s = env.sync_ok(&[]).await;
    let t1 = tenant(&s, "t1");
    assert_eq!(t1["created"], 1, "{t1}");
    assert_eq!(
        env.rows("SELECT username, email FROM employees ORDER BY username"),
        vec![
            vec!["jdoe".to_string(), "jdoe@fabrikam.com".to_string()],
            vec!["john".to_string(), "jdoe@contoso.com".to_string()]
        ]
    );
}

/// Support's `--user` resync gives a record back the names Entra has for it, over an admin's
/// rename: whoever waited for the name the admin had given it gets it at the next run.
#[tokio::test]
async fn a_name_a_user_run_frees_goes_to_the_user_waiting_for_it_at_the_next_run() {
    let (env, staff, _, users) = staffed().await;
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET username = 'local' WHERE username = 'ada'");
    env.sync_ok(&[]).await;
    let local = env.user("local");
    env.add(&staff, &local);
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        tenant(&s, "t0")["reports"][0]["kind"],
        "username_collision",
        "{s}"
    );
    let out = env.run(&["sync", "--user", &users[0]]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    retitle(&env, &users[2], "Buyer");
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["created"].as_i64(), t["reports"].as_array().map(Vec::len)),
        (Some(1), Some(0)),
        "{t}"
    );
    assert_eq!(
        env.rows("SELECT username FROM employees WHERE is_root = 0 ORDER BY username"),
        vec![
            vec!["ada".to_string()],
            vec!["bob".to_string()],
            vec!["local".to_string()]
        ]
    );
}

/// SPEC 4.14: a ticket deleted from a record long out of service makes it due, and the next
/// run purges it, idle or not.
#[tokio::test]
async fn a_record_whose_last_ticket_is_deleted_is_purged_by_the_next_idle_run() {
    let (mut env, staff, _, users) = staffed().await;
    env.extra_config
        .push_str("\n[retention]\npurge_deactivated_after_days = 30\n");
    env.sync_ok(&[]).await;
    env.remove(&staff, &users[1]);
    env.sync_ok(&[]).await;
    env.exec(
        "UPDATE employees SET deactivated_at = '2020-01-01T00:00:00Z' WHERE username = 'bob';
         INSERT INTO tickets (subject, employee_id)
             SELECT 'printer', id FROM employees WHERE username = 'bob';",
    );
    let kept = env.sync_ok(&[]).await;
    assert_eq!(tenant(&kept, "t0")["purged"], 0, "{kept}");
    env.exec("DELETE FROM tickets");
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["purged"], 1, "{s}");
}

/// SPEC 4.4 and 4.8: a return from a kind change gives the archived employee back its own
/// names, which an admin had changed before and another user has taken since: the user is
/// reported, and the run (planned from that one change) writes nothing the store refuses.
#[tokio::test]
async fn an_undone_archive_never_gives_back_a_name_someone_took_meanwhile() {
    let (env, staff, customers, users) = staffed().await;
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET username = 'rob' WHERE username = 'bob'");
    env.sync_ok(&[]).await;
    env.remove(&staff, &users[1]);
    env.add(&customers, &users[1]);
    assert_eq!(tenant(&env.sync_ok(&[]).await, "t0")["archived"], 1);
    let rob = env.user("rob");
    env.add(&staff, &rob);
    assert_eq!(tenant(&env.sync_ok(&[]).await, "t0")["created"], 1);
    env.remove(&customers, &users[1]);
    env.add(&staff, &users[1]);
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(t["reports"][0]["kind"], "username_collision", "{t}");
    assert_eq!(
        env.rows("SELECT username, active FROM employees WHERE is_root = 0 ORDER BY username"),
        vec![
            vec!["ada".to_string(), "1".to_string()],
            vec!["rob".to_string(), "1".to_string()],
            vec!["rob_Archived".to_string(), "0".to_string()]
        ]
    );
}
