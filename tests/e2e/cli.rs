//! The command line as an operator meets it: exit codes, dry-run, one-user resync, errors.

use crate::support::TestEnv;

#[tokio::test]
async fn dry_run_prints_the_plan_and_never_creates_the_store() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    let out = env.run(&["sync", "--dry-run"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("create new employee ada@contoso.com"),
        "{}",
        out.stdout
    );
    assert!(!env.store_path().exists());
}

#[tokio::test]
async fn wrong_secret_fails_with_one_line_naming_aadsts_and_the_fix() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    env.employee_rule(&staff, 10, None);
    env.write_config();
    std::fs::write(env.dir.path().join("sim.secret"), "not-the-secret").unwrap();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("AADSTS7000215"), "{}", out.stdout);
    assert!(out.stdout.contains("secret"), "{}", out.stdout);
    assert!(!out.stdout.contains("not-the-secret") && !out.stderr.contains("not-the-secret"));
}

#[tokio::test]
async fn config_errors_exit_2_with_the_key_path() {
    let mut env = TestEnv::new().await;
    env.rule(0, "not-a-guid", 10, "employee", String::new());
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("rules[0].group_id"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

#[tokio::test]
async fn user_resync_touches_only_that_person_and_unknown_user_exits_1() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    let bob = env.user("bob");
    env.add(&staff, &ada);
    env.add(&staff, &bob);
    env.employee_rule(&staff, 10, None);
    let s = env.sync_ok(&["--user", "ADA@contoso.com"]).await;
    assert_eq!(s["tenants"][0]["created"], 1);
    assert_eq!(
        env.rows("SELECT username FROM employees"),
        vec![vec!["ada"]]
    );
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM group_members"),
        vec![vec!["1"]]
    );
    let out = env.run(&["sync", "--user", "nobody@contoso.com"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nobody@contoso.com"), "{}", out.stderr);
}

#[tokio::test]
async fn status_reports_the_last_run_and_totals() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    // From a shell, the secret the service gets from systemd is not there: status only
    // reads the store and must not need it.
    std::fs::remove_file(env.dir.path().join("sim.secret")).unwrap();
    let out = env.run(&["status", "--json"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["totals"]["employees_active"], 1);
    assert_eq!(v["runs"][0]["status"], "success");
    assert_eq!(v["runs"][0]["created"], 1);
    let age = v["cursor_age_seconds"]["t0"].as_i64().unwrap();
    assert!((0..60).contains(&age), "{v}");
}

#[tokio::test]
async fn check_says_ok_for_each_group_and_fail_for_a_missing_one() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    env.employee_rule(&staff, 10, None);
    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("OK   tenant \"t0\" sign-in"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"Staff\" readable"), "{}", out.stdout);
    env.employee_rule("99999999-9999-9999-9999-999999999999", 20, None);
    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 1);
    // One line per group: the missing one fails, the readable one still says OK.
    let line = |group: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!("group {group}")))
            .unwrap_or_default()
            .to_string()
    };
    let missing = line("99999999-9999-9999-9999-999999999999");
    assert!(
        missing.starts_with("FAIL") && missing.contains("not found"),
        "{}",
        out.stdout
    );
    assert!(
        line(&staff).starts_with("OK") && line(&staff).contains("\"Staff\" readable"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn every_kind_of_bad_config_exits_2_with_one_line_naming_the_key() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    env.employee_rule(&staff, 10, None);
    env.write_config();
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    let secret_line = format!(
        "client_secret_file = \"{}\"",
        env.dir.path().join("sim.secret").display()
    );
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("[store]", "[store]\ncolour = \"blue\""),
            "colour",
        ),
        (
            good.replace("order = 10", "order = \"first\""),
            "rules[0].order",
        ),
        (good.replace(&staff, "not-a-guid"), "rules[0].group_id"),
        (
            good.replace("tenant = \"t0\"", "tenant = \"nope\""),
            "rules[0].tenant",
        ),
        (
            format!(
                "{good}\n[[tenants]]\nname = \"t0\"\ntenant_id = \"x.com\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret_env = \"X\"\n"
            ),
            "tenants[1].name",
        ),
        (
            good.replace(&secret_line, "client_secret_file = \"/nonexistent/secret\""),
            "tenants[0].client_secret_file",
        ),
        (
            good.replacen(
                "authority = \"http://127.0.0.1",
                "authority = \"http://192.0.2.1",
                1,
            ),
            "tenants[0].authority",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(env.config_path(), &text).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .arg("--config")
            .arg(env.config_path())
            .arg("sync")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert_eq!(errors.len(), 1, "{key}: {stderr}");
        assert!(errors[0].contains(key), "{key}: {stderr}");
    }
}

/// `changes`: the change log newest first, each field old → new, filtered by person, run,
/// time and tenant — what support reads to answer "what changed for Ada, and when?".
#[tokio::test]
async fn changes_lists_what_each_run_did_to_a_person_newest_first() {
    let mut env = TestEnv::new().await;
    let g = env.group("Staff", 1);
    let ada = env.user("ada");
    let bob = env.user("bob");
    env.add(&g, &ada);
    env.add(&g, &bob);
    env.employee_rule(&g, 10, None);
    env.sync_ok(&[]).await;
    env.sim()
        .update_user(
            &ada,
            graph_sim::UserPatch {
                job_title: Some(Some("Lead".into())),
                ..Default::default()
            },
        )
        .unwrap();
    env.sync_ok(&[]).await;

    let out = env
        .run(&["changes", "--user", "ADA@contoso.com", "--json"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let list = out.json();
    let actions: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["update", "create"],
        "newest first, only Ada: {list}"
    );
    assert_eq!(
        list[0]["changes"]["job_title"],
        serde_json::json!(["Engineer", "Lead"])
    );
    assert_eq!(list[0]["email"], "ada@contoso.com");
    assert_eq!(list[0]["object_id"], ada.as_str());

    let human = env.run(&["changes", "--user", &ada]).await;
    assert!(
        human.stdout.contains("job_title: \"Engineer\" → \"Lead\""),
        "{}",
        human.stdout
    );
    let first_run = list[1]["run"].as_i64().unwrap().to_string();
    let out = env.run(&["changes", "--run", &first_run, "--json"]).await;
    let created: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "create" && c["record_kind"] == "employee")
        .map(|c| c["email"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        created,
        ["bob@contoso.com", "ada@contoso.com"],
        "run {first_run}"
    );
    let out = env.run(&["changes", "--limit", "1", "--json"]).await;
    assert_eq!(out.json().as_array().unwrap().len(), 1);
    let out = env
        .run(&["changes", "--since", "2999-01-01T00:00:00Z", "--json"])
        .await;
    assert_eq!(out.json(), serde_json::json!([]));
    let out = env.run(&["changes", "--since", "yesterday"]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--since yesterday"), "{}", out.stderr);
    let out = env.run(&["changes", "--tenant", "nope"]).await;
    assert_eq!(out.code, 2);
}
