//! SPEC 1, reviewed plans: `sync --plan-out FILE` writes what a sync would do with a
//! fingerprint of what it was planned from; `apply FILE` applies exactly that, whole, or
//! refuses naming what moved (the cursors, a record, the rules) and writes nothing.

use crate::support::{TestEnv, tenant};

/// Staff with ada and bob, synced; then carol joins and bob's title changes in Entra.
async fn with_pending_changes() -> (TestEnv, String, Vec<String>) {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let users: Vec<String> = ["ada", "bob", "carol"]
        .iter()
        .map(|u| env.user(u))
        .collect();
    env.add(&staff, &users[0]);
    env.add(&staff, &users[1]);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.sync_ok(&[]).await;
    env.add(&staff, &users[2]);
    env.sim()
        .update_user(
            &users[1],
            graph_sim::UserPatch {
                job_title: Some(Some("Lead".into())),
                ..Default::default()
            },
        )
        .unwrap();
    (env, staff, users)
}

fn plan_path(env: &TestEnv) -> String {
    env.dir.path().join("plan.json").display().to_string()
}

async fn plan_out(env: &TestEnv) -> i32 {
    let path = plan_path(env);
    let out = env.run(&["sync", "--plan-out", &path]).await;
    assert!(
        out.stderr.contains("plan written to"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    out.code
}

fn people(env: &TestEnv) -> Vec<Vec<String>> {
    env.rows("SELECT id, username, job_title, active FROM employees ORDER BY id")
}

#[tokio::test]
async fn a_reviewed_plan_is_applied_exactly_and_only_once() {
    let (env, _staff, _users) = with_pending_changes().await;
    let before = people(&env);
    assert_eq!(plan_out(&env).await, 0);
    assert_eq!(
        people(&env),
        before,
        "--plan-out writes nothing to the store"
    );
    let text = std::fs::read_to_string(plan_path(&env)).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["format"], "entra-sync plan");
    assert_eq!(file["version"], 1);
    let mut actions: Vec<&str> = file["tenants"][0]["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["action"].as_str())
        .collect();
    actions.sort_unstable();
    assert_eq!(actions, ["create", "update"], "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(plan_path(&env))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "a plan holds people's records");

    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("1 created, 1 updated"),
        "{}",
        out.stdout
    );
    assert_eq!(
        people(&env),
        vec![
            vec!["1", "ada", "Engineer", "1"],
            vec!["2", "bob", "Lead", "1"],
            vec!["3", "carol", "Engineer", "1"]
        ]
    );
    assert_eq!(
        env.rows("SELECT mode, status FROM sync_runs ORDER BY id DESC LIMIT 1"),
        vec![vec!["apply", "success"]]
    );
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM change_log WHERE action = 'create'")[0][0],
        "3",
        "the change log has the applied create"
    );
    // The same file again: what it changed has moved.
    let again = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(
        again.stderr.contains("employee #2 changed in the store"),
        "{}",
        again.stderr
    );
    // The next sync finds everything done.
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["created"].as_i64(), t["updated"].as_i64()),
        (Some(0), Some(0)),
        "{s}"
    );
}

#[tokio::test]
async fn a_stale_plan_is_refused_naming_what_moved() {
    // A sync ran since: the cursors moved.
    let (env, _staff, _users) = with_pending_changes().await;
    plan_out(&env).await;
    env.sync_ok(&[]).await;
    let before = env.dump();
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("the delta cursors moved"),
        "{}",
        out.stderr
    );
    assert_eq!(env.dump(), before, "nothing applied");

    // A record the plan touches was edited in the PSA.
    let (env, _staff, _users) = with_pending_changes().await;
    plan_out(&env).await;
    env.exec("UPDATE employees SET department = 'Moved' WHERE username = 'bob'");
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("employee #2 changed in the store"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.lines().count() == 1, "one line: {}", out.stderr);
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees")[0][0],
        "2",
        "carol's create was not applied either"
    );

    // A record that takes a name the plan writes appeared.
    let (env, _staff, _users) = with_pending_changes().await;
    plan_out(&env).await;
    env.exec("INSERT INTO employees (username, email, active, is_root) VALUES ('carol', 'other@x.com', 1, 0)");
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("employee #3 now holds a username or email the plan writes"),
        "{}",
        out.stderr
    );

    // The rules changed.
    let (mut env, staff, _users) = with_pending_changes().await;
    plan_out(&env).await;
    env.rules.clear();
    env.employee_rule(&staff, 10, Some("Admin"));
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the rules, mapping, safety or retention settings in the config changed"),
        "{}",
        out.stderr
    );
}

/// Four employees synced under `safety`; then the first two leave in Entra.
async fn four_then_two_leave(safety: &str) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::new().await;
    env.extra_config = format!("[safety]\n{safety}\n");
    let staff = env.group("Staff", 1);
    let users: Vec<String> = (0..4).map(|i| env.user(&format!("u{i}"))).collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    for u in &users[..2] {
        env.remove(&staff, u);
    }
    (env, users)
}

#[tokio::test]
async fn a_plan_with_deactivations_over_the_limits_needs_the_flag() {
    let (env, _users) =
        four_then_two_leave("max_deactivations = 1\nmax_deactivation_percent = 0").await;
    assert_eq!(
        plan_out(&env).await,
        3,
        "like a dry run, the hold shows as exit 3"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan_path(&env)).unwrap()).unwrap();
    let deactivations = file["tenants"][0]["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "deactivate")
        .count();
    assert_eq!(deactivations, 2, "the reviewer sees every deactivation");
    assert!(
        file["tenants"][0]["plan"]["released"]
            .as_str()
            .unwrap()
            .contains("max_deactivations = 1")
    );
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("--allow-mass-deactivation"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1")[0][0],
        "4"
    );
    let out = env
        .run(&["apply", &plan_path(&env), "--allow-mass-deactivation"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1")[0][0],
        "2"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_plan_is_a_usage_error() {
    let (env, _staff, _users) = with_pending_changes().await;
    let path = plan_path(&env);
    for (text, says) in [
        ("not json", "not JSON"),
        ("{\"format\": \"something else\"}", "not an entra-sync plan"),
        (
            "{\"format\": \"entra-sync plan\", \"version\": 99}",
            "version Some(99)",
        ),
        (
            "{\"format\": \"entra-sync plan\", \"version\": 1, \"tenants\": 5}",
            "malformed plan",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = env.run(&["apply", &path]).await;
        assert_eq!(out.code, 2, "{text}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{text}: {}", out.stderr);
    }
    let out = env.run(&["apply", "/nonexistent/plan.json"]).await;
    assert_eq!(out.code, 2);
}

#[tokio::test]
async fn applying_a_plan_of_nothing_new_keeps_what_is_pending() {
    let mut env = TestEnv::new().await;
    env.extra_config = "[safety]\ndeactivate_after_minutes = 60\n".into();
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.remove(&staff, &ada);
    env.sync_ok(&[]).await;
    let pending = || env.rows("SELECT object_id, since FROM pending_deactivations");
    let before = pending();
    assert_eq!(before.len(), 1);
    assert_eq!(plan_out(&env).await, 0);
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        pending(),
        before,
        "a plan of nothing new leaves the open state as it is"
    );
}

#[tokio::test]
async fn an_edited_plan_or_a_run_that_moved_no_cursor_is_refused_too() {
    // The plan in the file was edited after review.
    let (env, _staff, _users) = with_pending_changes().await;
    plan_out(&env).await;
    let path = plan_path(&env);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"Lead\"", "\"CEO\"", 1)).unwrap();
    let out = env.run(&["apply", &path]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("is not the one that was planned"),
        "{}",
        out.stderr
    );

    // A --user run (it moves no cursor) changed the open state and a record since.
    let (env, _staff, users) = with_pending_changes().await;
    plan_out(&env).await;
    env.sync_ok(&["--user", &users[1]]).await;
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("employee #2 changed in the store"),
        "{}",
        out.stderr
    );

    // The safety settings changed.
    let (mut env, _staff, _users) = with_pending_changes().await;
    plan_out(&env).await;
    env.extra_config = "[safety]\nmax_deactivations = 7\n".into();
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("safety or retention settings"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_one_person_plan_over_the_limits_needs_the_flag_too() {
    // A --user run sees its person's departure only: one of four, 25 %, over 20 %.
    let (env, users) =
        four_then_two_leave("max_deactivations = 0\nmax_deactivation_percent = 20").await;
    let path = plan_path(&env);
    let out = env
        .run(&["sync", "--user", &users[0], "--plan-out", &path])
        .await;
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    let out = env.run(&["apply", &path]).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1")[0][0],
        "4"
    );
}

#[tokio::test]
async fn a_first_sync_can_be_planned_reviewed_and_applied() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    assert_eq!(plan_out(&env).await, 0);
    assert!(!env.store_path().exists(), "--plan-out creates no store");
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        env.rows("SELECT username, active FROM employees"),
        vec![vec!["ada", "1"]]
    );
    // The next sync (a full one: no cursors yet) finds it made.
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["created"], 0, "{s}");
}

/// Two tenants whose new users want the same username (unique across tenants, SPEC 4.8):
/// a sync writes the first tenant, then plans the second against that. A reviewed plan of both
/// must do the same: the second tenant's plan is made as if the first's were applied, so
/// applying the file leaves the store a sync would (it was refused by the store's unique
/// index, the whole apply failing).
#[tokio::test]
async fn a_plan_of_several_tenants_plans_each_after_the_ones_before_it() {
    let env_for = || async {
        let mut env = TestEnv::with_tenants(2).await;
        for t in 0..2 {
            let staff = env.group_in(t, "Staff", 1);
            let user = env.user_in(t, "sam");
            env.sims[t].control().add_member(&staff, &user).unwrap();
            env.rule(t, &staff, 10, "employee", String::new());
        }
        env
    };
    let synced = env_for().await;
    let s = synced.sync_ok(&[]).await;
    let reviewed = env_for().await;
    assert_eq!(plan_out(&reviewed).await, 0);
    assert!(
        !reviewed.store_path().exists()
            || reviewed.rows("SELECT COUNT(*) FROM employees") == [["0"]],
        "--plan-out writes nothing to the store"
    );
    let out = reviewed.run(&["apply", &plan_path(&reviewed)]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let employees = |env: &TestEnv| {
        env.rows("SELECT username, email, active FROM employees ORDER BY username, email")
    };
    assert_eq!(employees(&reviewed), employees(&synced), "{s}");
    assert_eq!(
        reviewed.rows("SELECT tenant, kind FROM open_reports"),
        synced.rows("SELECT tenant, kind FROM open_reports")
    );
}

/// A plan of several tenants is made on a copy of the store taken when the run starts, and
/// fingerprinted against that copy as it was: a record an admin adds to the store while the
/// run still reads Graph is seen by `apply`, which refuses naming it.
#[tokio::test]
async fn a_record_added_while_several_tenants_are_planned_is_seen_by_apply() {
    let mut env = TestEnv::with_tenants(2).await;
    for t in 0..2 {
        let staff = env.group_in(t, "Staff", 1);
        let user = env.user_in(t, &format!("sam{t}"));
        env.sims[t].control().add_member(&staff, &user).unwrap();
        env.rule(t, &staff, 10, "employee", String::new());
    }
    env.init_store();
    env.sim().inject_fault(graph_sim::Fault::new(
        "/users/delta",
        graph_sim::FaultKind::Delay(std::time::Duration::from_millis(1500)),
        1,
    ));
    let added_meanwhile = async {
        while !env.sim().faults().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        env.exec(
            "INSERT INTO employees (username, email, first_name, active) VALUES ('sam0', 'other@example.com', 'Other', 1)",
        );
    };
    let (code, ()) = tokio::join!(plan_out(&env), added_meanwhile);
    assert_eq!(code, 0);
    let out = env.run(&["apply", &plan_path(&env)]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("now holds a username or email the plan writes"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.rows("SELECT username FROM employees ORDER BY username"),
        [["sam0"]],
        "nothing of the plan was written"
    );
}
