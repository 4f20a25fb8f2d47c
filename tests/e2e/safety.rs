//! SPEC section 5: never lose or wrongly deactivate a record — under faults, throttling,
//! token trouble, crashes and mass departures.

use std::time::Duration;

use graph_sim::{Fault, FaultKind};

use crate::support::{TestEnv, tenant};

/// Ten employees synced; then eight leave the group in Entra.
async fn ten_then_eight_leave() -> (TestEnv, String, Vec<String>) {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let users: Vec<String> = (0..10).map(|i| env.user(&format!("u{i}"))).collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, Some("Tech"));
    env.sync_ok(&[]).await;
    for u in &users[2..] {
        env.remove(&staff, u);
    }
    (env, staff, users)
}

fn active(env: &TestEnv) -> String {
    env.rows("SELECT COUNT(*) FROM employees WHERE active = 1")[0][0].clone()
}

#[tokio::test]
async fn an_unreadable_group_fails_the_run_and_deactivates_nobody() {
    let faults: Vec<(&str, FaultKind)> = vec![
        (
            "403",
            FaultKind::Status {
                status: 403,
                retry_after: None,
            },
        ),
        (
            "404",
            FaultKind::Status {
                status: 404,
                retry_after: None,
            },
        ),
        (
            "500",
            FaultKind::Status {
                status: 500,
                retry_after: None,
            },
        ),
        (
            "503",
            FaultKind::Status {
                status: 503,
                retry_after: None,
            },
        ),
        ("timeout", FaultKind::Delay(Duration::from_secs(3))),
        ("reset", FaultKind::Reset),
        ("truncated", FaultKind::TruncatedBody),
        ("invalid json", FaultKind::InvalidJson),
    ];
    for (name, kind) in faults {
        let (mut env, _, _) = ten_then_eight_leave().await;
        env.sync_extra = "max_attempts = 2\nrequest_timeout_seconds = 1\n".into();
        env.sim()
            .inject_fault(Fault::new("/members", kind.clone(), 1000));
        env.sim()
            .inject_fault(Fault::new("/groups/delta", kind, 1000));
        for mode in [&[][..], &["--full"][..]] {
            let mut args = vec!["sync", "--json"];
            args.extend_from_slice(mode);
            let out = env.run(&args).await;
            assert_eq!(
                out.code, 1,
                "{name} {mode:?}: {}\n{}",
                out.stdout, out.stderr
            );
            let s = out.json();
            assert_eq!(tenant(&s, "t0")["status"], "failed", "{name}");
            let error = tenant(&s, "t0")["error"].as_str().unwrap();
            // The error names what could not be read: a group's members, or the delta round.
            assert!(
                error.contains("tenant \"t0\"")
                    && (error.contains("members of group") || error.contains("groups delta")),
                "{name}: {s}"
            );
            assert_eq!(
                active(&env),
                "10",
                "{name} {mode:?}: nobody may be deactivated"
            );
        }
        env.sim().clear_faults();
        env.extra_config = "[safety]\nmax_deactivations = 0\nmax_deactivation_percent = 0\n".into();
        env.sync_ok(&[]).await;
        assert_eq!(active(&env), "2", "{name}: the next good run converges");
    }
}

#[tokio::test]
async fn members_without_properties_fail_the_run_naming_the_permission() {
    let (env, _, _) = ten_then_eight_leave().await;
    env.sim()
        .inject_fault(Fault::new("/members", FaultKind::NullProperties, 1000));
    let out = env.run(&["sync", "--full", "--json"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("User.Read.All"), "{}", out.stdout);
    assert_eq!(active(&env), "10");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE email IS NULL OR first_name IS NULL"),
        vec![vec!["0"]]
    );
}

#[tokio::test]
async fn mass_deactivation_is_held_with_exit_3_until_allowed() {
    let (mut env, _, _) = ten_then_eight_leave().await;
    env.extra_config = "[safety]\nmax_deactivations = 5\nmax_deactivation_percent = 0\n".into();
    let new = env.user("newbie");
    env.add(
        &env.rows("SELECT object_id FROM groups")[0][0].clone(),
        &new,
    );
    for args in [
        &["sync", "--json"][..],
        &["sync", "--json", "--dry-run"][..],
    ] {
        let out = env.run(args).await;
        assert_eq!(out.code, 3, "{args:?}: {}\n{}", out.stdout, out.stderr);
        let s = out.json();
        assert_eq!(tenant(&s, "t0")["held"], 8);
        assert!(
            tenant(&s, "t0")["hold_reason"]
                .as_str()
                .unwrap()
                .contains("max_deactivations")
        );
    }
    // Creates still applied; nobody deactivated; the run is recorded as held.
    assert_eq!(active(&env), "11");
    assert_eq!(
        env.rows("SELECT status, held FROM sync_runs ORDER BY id DESC LIMIT 1"),
        vec![vec!["held", "8"]]
    );
    // Still held on the next run, incremental or full.
    assert_eq!(env.run(&["sync"]).await.code, 3);
    assert_eq!(env.run(&["sync", "--full"]).await.code, 3);
    assert_eq!(active(&env), "11");
    let s = env.sync_ok(&["--allow-mass-deactivation"]).await;
    assert_eq!(tenant(&s, "t0")["deactivated"], 8);
    assert_eq!(active(&env), "3");
}

#[tokio::test]
async fn retry_after_is_waited_out_and_counted() {
    let (mut env, _, _) = ten_then_eight_leave().await;
    env.extra_config = "[safety]\nmax_deactivation_percent = 0\nmax_deactivations = 0\n".into();
    env.sim()
        .inject_fault(Fault::throttle("/members", "0.2", 2));
    env.sim()
        .inject_fault(Fault::status("/users/delta", 503, Some("0.1"), 1));
    let s = env.sync_ok(&["--full"]).await;
    let t = tenant(&s, "t0");
    assert_eq!(t["throttle_waits"], 3, "{t}");
    assert!(t["throttle_wait_ms"].as_u64().unwrap() >= 500, "{t}");
    assert_eq!(active(&env), "2");
}

#[tokio::test]
async fn a_batch_item_failing_once_with_500_or_502_is_retried() {
    let (mut env, staff, _) = ten_then_eight_leave().await;
    env.extra_config = "[safety]\nmax_deactivation_percent = 0\nmax_deactivations = 0\n".into();
    // The rule group's metadata is read in a $batch; its item fails, the $batch itself is 200.
    for status in [500, 502] {
        env.sim()
            .inject_fault(Fault::status(format!("/groups/{staff}?"), status, None, 1));
        let s = env.sync_ok(&["--full"]).await;
        assert_eq!(tenant(&s, "t0")["status"], "success", "{status}: {s}");
        assert!(env.sim().faults().is_empty(), "the item was asked for");
    }
    assert_eq!(active(&env), "2");
}

#[tokio::test]
async fn still_throttled_after_max_attempts_fails_cleanly_and_resumes_next_time() {
    let (mut env, _, _) = ten_then_eight_leave().await;
    env.sync_extra = "max_attempts = 3\n".into();
    env.sim()
        .inject_fault(Fault::throttle("/members", "0.01", 1000));
    let out = env.run(&["sync", "--full", "--json"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("gave up after 3 attempts"),
        "{}",
        out.stdout
    );
    assert_eq!(
        env.sim().stats().matching("/members 429"),
        3,
        "exactly max_attempts tries, no storm"
    );
    env.sim().clear_faults();
    env.extra_config = "[safety]\nmax_deactivation_percent = 0\nmax_deactivations = 0\n".into();
    env.sync_ok(&["--full"]).await;
    assert_eq!(active(&env), "2");
}

#[tokio::test]
async fn a_rejected_token_is_renewed_once_and_a_wrong_secret_causes_no_retry_storm() {
    let (env, _, _) = ten_then_eight_leave().await;
    env.sim().reset_stats();
    env.sim()
        .inject_fault(Fault::status("/users/delta", 401, None, 1));
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["status"], "success");
    assert_eq!(
        env.sim().stats().matching("/oauth2/v2.0/token"),
        2,
        "{:?}",
        env.sim().stats().by_endpoint
    );

    std::fs::write(env.dir.path().join("sim.secret"), "wrong").unwrap();
    env.sim().reset_stats();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        env.sim().stats().matching("/oauth2/v2.0/token"),
        1,
        "one try, no storm"
    );
    assert_eq!(env.sim().stats().matching("/v1.0/"), 0);
}

#[tokio::test]
async fn killing_the_process_at_any_point_loses_nothing_and_the_next_run_converges() {
    let mut reference = TestEnv::new().await;
    let build = |env: &mut TestEnv| {
        let staff = env.group("Staff", 1);
        let customers = env.group("Customers", 2);
        for i in 0..1500 {
            let u = env.user(&format!("user{i}"));
            env.add(if i % 3 == 0 { &customers } else { &staff }, &u);
        }
        env.employee_rule(&staff, 10, Some("Tech"));
        env.contact_rule(&customers, 20, true);
    };
    build(&mut reference);
    reference.sync_ok(&["--full"]).await;
    let expected = records(&reference);

    for delay_ms in [20u64, 60, 120, 250, 400] {
        let mut env = TestEnv::new().await;
        build(&mut env);
        env.write_config();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .arg("--config")
            .arg(env.config_path())
            .args(["sync", "--full"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill(); // SIGKILL
        let _ = child.wait().await;
        if env.store_path().exists() {
            let conn = rusqlite::Connection::open(env.store_path()).unwrap();
            let ok: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok", "killed after {delay_ms} ms");
            // All of a run or nothing: records exist only together with their run row.
            let (runs, records): (i64, i64) = conn
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM sync_runs), (SELECT COUNT(*) FROM employees) + (SELECT COUNT(*) FROM contacts)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap_or((0, 0));
            assert!(
                records == 0 || runs > 0,
                "killed after {delay_ms} ms: records without a run"
            );
        }
        env.sync_ok(&[]).await;
        assert_eq!(records(&env), expected, "killed after {delay_ms} ms");
    }
}

fn records(env: &TestEnv) -> Vec<Vec<String>> {
    env.rows(
        "SELECT 'e', id, username, email, active FROM employees UNION ALL
         SELECT 'c', id, email, portal_access, active FROM contacts ORDER BY 1, 2",
    )
}

/// Six employees under a grace period of `minutes` and the default safety limits (20 %: three
/// leaving at once is held).
async fn six_with_grace(minutes: u64) -> (TestEnv, String, Vec<String>) {
    let mut env = TestEnv::new().await;
    env.extra_config = format!("[safety]\ndeactivate_after_minutes = {minutes}\n");
    let staff = env.group("Staff", 1);
    let users: Vec<String> = (0..6).map(|i| env.user(&format!("u{i}"))).collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, Some("Tech"));
    env.sync_ok(&[]).await;
    (env, staff, users)
}

/// The store's people and groups, as a PSA user sees them.
fn store_dump(env: &TestEnv) -> Vec<Vec<String>> {
    let mut rows = env.rows(
        "SELECT id, username, email, security_role, active, deactivated_at, updated_at FROM employees ORDER BY id",
    );
    rows.extend(
        env.rows("SELECT group_id, member_kind, member_id FROM group_members ORDER BY 1, 2, 3"),
    );
    rows
}

/// Moves the start of every pending grace period back by `minutes`, as time passing would.
fn age_pending(env: &TestEnv, minutes: u64) {
    env.exec(&format!(
        "UPDATE pending_deactivations SET since = strftime('%Y-%m-%dT%H:%M:%SZ', since, '-{minutes} minutes')"
    ));
}

#[tokio::test]
async fn a_user_removed_and_added_back_within_the_grace_period_changes_nothing() {
    let (env, staff, users) = six_with_grace(60).await;
    let before = store_dump(&env);
    env.remove(&staff, &users[0]);
    env.sim().disable_user(&users[1]).unwrap();
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["deactivated"].as_i64(), t["updated"].as_i64()),
        (Some(0), Some(0)),
        "{s}"
    );
    let pending: Vec<&str> = t["pending"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["user"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(pending, ["u0@contoso.com", "u1@contoso.com"], "{s}");
    assert_eq!(store_dump(&env), before, "nothing moved yet");
    let human = env.run(&["status"]).await;
    assert!(
        human
            .stdout
            .contains("pending deactivation: u0@contoso.com out of scope since"),
        "{}",
        human.stdout
    );

    // Back within the grace period (40 minutes later): nothing changes, nothing is pending.
    age_pending(&env, 40);
    env.add(&staff, &users[0]);
    env.sim()
        .update_user(
            &users[1],
            graph_sim::UserPatch {
                account_enabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["pending"], serde_json::json!([]), "{s}");
    assert_eq!(store_dump(&env), before, "as if they had never left");
    let status = env.run(&["status", "--json"]).await.json();
    assert_eq!(
        status["tenants"]["t0"]["pending_deactivations"],
        serde_json::json!([]),
        "{status}"
    );
}

#[tokio::test]
async fn a_user_out_of_scope_past_the_grace_period_is_deactivated_by_a_no_change_run() {
    let (env, staff, users) = six_with_grace(30).await;
    env.remove(&staff, &users[0]);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["deactivated"], 0, "{s}");
    age_pending(&env, 29);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["deactivated"], 0, "29 minutes out: {s}");
    age_pending(&env, 1);
    // Nothing changed in Entra since: the idle incremental run applies what fell due.
    env.sim().reset_stats();
    let s = env.sync_ok(&[]).await;
    assert_eq!(env.sim().stats().matching("/v1.0/"), 2, "an idle round");
    assert_eq!(tenant(&s, "t0")["deactivated"], 1, "30 minutes out: {s}");
    assert_eq!(tenant(&s, "t0")["pending"], serde_json::json!([]), "{s}");
    assert_eq!(
        env.rows("SELECT username, active, security_role FROM employees WHERE username = 'u0'"),
        vec![vec!["u0", "0", "NULL"]]
    );
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["deactivated"], 0, "once: {s}");
}

#[tokio::test]
async fn deactivations_falling_due_together_are_held_and_applied_only_when_allowed() {
    let (env, staff, users) = six_with_grace(10).await;
    for u in &users[..3] {
        env.remove(&staff, u);
    }
    let (code, s) = {
        let out = env.run(&["sync", "--json"]).await;
        (out.code, out.json())
    };
    assert_eq!(code, 0, "not due: nothing to hold yet: {s}");
    assert_eq!(
        tenant(&s, "t0")["pending"].as_array().map(Vec::len),
        Some(3)
    );
    age_pending(&env, 10);
    let out = env.run(&["sync", "--json"]).await;
    let s = out.json();
    assert_eq!(out.code, 3, "three fall due together, above 20 %: {s}");
    assert_eq!(tenant(&s, "t0")["held"], 3, "{s}");
    assert_eq!(active(&env), "6");
    // Held, not pending; still held by the next idle run.
    let out = env.run(&["sync", "--json"]).await;
    assert_eq!(
        (out.code, tenant(&out.json(), "t0")["held"].as_i64()),
        (3, Some(3))
    );
    let status = env.run(&["status", "--json"]).await.json();
    assert_eq!(status["tenants"]["t0"]["held"], 3, "{status}");
    assert_eq!(
        status["tenants"]["t0"]["pending_deactivations"],
        serde_json::json!([]),
        "{status}"
    );
    let s = env.sync_ok(&["--allow-mass-deactivation"]).await;
    assert_eq!(tenant(&s, "t0")["deactivated"], 3, "{s}");
    assert_eq!(active(&env), "3");
}
