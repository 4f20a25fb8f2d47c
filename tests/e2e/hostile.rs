//! Odd and hostile directory data (SPEC 5.7): huge and control-character strings, unicode and
//! mixed-case emails, duplicates, a user in fifty groups, nesting cycles, non-user members.

use graph_sim::{NewUser, Sim, SimOptions};

use crate::support::{TestEnv, tenant};

#[tokio::test]
async fn odd_users_are_synced_or_reported_and_nothing_panics() {
    let mut env = TestEnv::new().await;
    let a = env.group("Cycle A", 1);
    let b = env.group("Cycle B", 2);
    env.add(&a, &b);
    env.add(&b, &a);
    let huge = "x".repeat(10_000);
    let odd = env.sim().add_user(NewUser {
        user_principal_name: "odd@contoso.com".into(),
        display_name: "Odd".into(),
        given_name: Some(huge.clone()),
        surname: Some("Tab\there\u{0007}bell\nnewline".into()),
        mail: Some("Zoë.Ünïcode@Exämple.com".into()),
        ..NewUser::default()
    });
    let mixed = env.sim().add_user(NewUser {
        user_principal_name: "mixed@contoso.com".into(),
        display_name: "Mixed".into(),
        mail: Some("Mixed.Case@Contoso.com".into()),
        ..NewUser::default()
    });
    let shouting = env.sim().add_user(NewUser {
        user_principal_name: "upper@contoso.com".into(),
        display_name: "Upper".into(),
        mail: Some("MIXED.case@contoso.COM".into()),
        ..NewUser::default()
    });
    let empty = env.sim().add_user(NewUser {
        user_principal_name: "empty@contoso.com".into(),
        display_name: "".into(),
        given_name: Some("".into()),
        surname: None,
        mail: Some("empty@contoso.com".into()),
        ..NewUser::default()
    });
    env.add(&a, &odd.id);
    env.add(&b, &shouting.id);
    env.add(&a, &mixed.id);
    env.add(&b, &empty.id);
    env.employee_rule(&a, 10, None);
    // A user in fifty groups, each with its own rule: the lowest order wins.
    let busy = env.user("busy");
    for i in 0..50 {
        let g = env.group(&format!("Many {i}"), 3 + (i % 20));
        env.add(&g, &busy);
        env.contact_rule(&g, 100 - i as i64, i % 2 == 0);
    }
    let s = env.sync_ok(&[]).await;
    let t = tenant(&s, "t0");
    assert_eq!(t["status"], "success");
    // mixed and upper share an email case-insensitively: one record, one report.
    let reports: Vec<String> = t["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reports, vec!["duplicate_email"], "{t}");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE lower(email) = 'mixed.case@contoso.com'"),
        vec![vec!["1"]]
    );
    assert_eq!(
        env.rows("SELECT email FROM employees WHERE username = 'odd'"),
        vec![vec!["Zoë.Ünïcode@Exämple.com"]]
    );
    let first: Vec<Vec<String>> =
        env.rows("SELECT length(first_name), last_name FROM employees WHERE username = 'odd'");
    assert_eq!(
        first,
        vec![vec![
            "10000".to_string(),
            "Tab\there\u{0007}bell\nnewline".to_string()
        ]]
    );
    assert_eq!(
        env.rows("SELECT first_name IS NULL, department FROM employees WHERE username = 'empty'"),
        vec![vec!["1", "General"]]
    );
    // busy: order 51 (i = 49) wins, a contact with portal access false (49 is odd).
    assert_eq!(
        env.rows("SELECT portal_access FROM contacts WHERE email = 'busy@contoso.com'"),
        vec![vec!["0"]]
    );
    assert_eq!(env.rows("SELECT COUNT(*) FROM group_members m JOIN contacts c ON c.id = m.member_id AND m.member_kind = 'contact' WHERE c.email = 'busy@contoso.com'"), vec![vec!["50"]]);
    // Idempotent on odd data too.
    let before = env.dump();
    env.sync_ok(&[]).await;
    assert_eq!(env.dump(), before);
}

#[tokio::test]
async fn a_generated_tenant_with_guests_devices_and_disabled_users_syncs_cleanly() {
    let sim = Sim::start(SimOptions {
        users: 400,
        groups: 6,
        seed: 99,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sim.secret");
    std::fs::write(&secret, crate::support::SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        sim.config_toml(&dir.path().join("psa.db"), &secret),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let run = |args: &'static [&'static str]| {
        let config = config.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&["sync", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(s["tenants"][0]["created"].as_i64().unwrap() > 50, "{s}");
    // Guests get the local part of their external address as username.
    let conn = rusqlite::Connection::open(dir.path().join("psa.db")).unwrap();
    let bad: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM employees WHERE username LIKE '%#EXT#%' OR username LIKE '%@%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0);
    let out = run(&["sync", "--full", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["tenants"][0]["status"], "success", "{s}");
    for key in [
        "created",
        "updated",
        "reactivated",
        "deactivated",
        "archived",
    ] {
        assert_eq!(s["tenants"][0][key], 0, "{key}: {s}");
    }
}

/// More rule groups than requests in flight: Graph is asked how many members each group has
/// (`/members/$count`, one `$batch`), so the read serves the longest chains of pages first.
/// The counts are a hint: refused, or so slow that the read ends first, they change nothing
/// of what is synced, and the read never waits for them.
#[tokio::test]
async fn member_counts_only_order_the_read_and_a_refused_or_slow_count_changes_nothing() {
    let mut env = TestEnv::with_options(1, |o| o.page_size = 2).await;
    env.sync_extra = "max_concurrency = 2\n".into();
    let mut users = Vec::new();
    for (i, size) in [1, 3, 7].into_iter().enumerate() {
        let group = env.group(&format!("Size {size}"), 1 + i as u32);
        for n in 0..size {
            let user = env.user(&format!("g{i}u{n}"));
            env.add(&group, &user);
            users.push((group.clone(), user));
        }
        env.employee_rule(&group, 10 + i as i64, None);
    }
    let s = env.sync_ok(&["--full"]).await;
    assert_eq!(tenant(&s, "t0")["created"], 11, "{s}");
    let counted = |env: &TestEnv| {
        env.sim()
            .stats()
            .batch_items
            .iter()
            .filter(|(k, _)| k.contains("/members/$count"))
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counted(&env),
        ["GET /v1.0/groups/{id}/members/$count 200 x3"]
    );
    let names =
        |env: &TestEnv| env.rows("SELECT username, active FROM employees ORDER BY username");

    // Refused: each count answers 403; the read goes on in arrival order.
    let (group, user) = users[10].clone();
    env.remove(&group, &user);
    env.sim()
        .inject_fault(graph_sim::Fault::status("/members/$count", 403, None, 3));
    let s = env.sync_ok(&["--full"]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["status"].as_str(), t["deactivated"].as_i64()),
        (Some("success"), Some(1)),
        "{s}"
    );
    let after_refused = names(&env);

    // Slow: the batch of counts is answered a minute late; the read ends without it.
    env.add(&group, &user);
    env.sim().inject_fault(graph_sim::Fault::new(
        "/members/$count",
        graph_sim::FaultKind::Delay(std::time::Duration::from_secs(60)),
        1,
    ));
    let s = env.sync_ok(&["--full"]).await;
    let t = tenant(&s, "t0");
    assert_eq!(
        (t["status"].as_str(), t["reactivated"].as_i64()),
        (Some("success"), Some(1)),
        "{s}"
    );
    assert!(
        t["duration_ms"].as_i64().unwrap_or(i64::MAX) < 30_000,
        "{s}"
    );
    let back = names(&env);
    assert_eq!(back.iter().filter(|r| r[1] == "1").count(), 11, "{back:?}");
    assert_eq!(
        after_refused.iter().filter(|r| r[1] == "1").count(),
        10,
        "{after_refused:?}"
    );
}

/// The nested groups a tenant's mirror knows are counted too: they share the slots.
#[tokio::test]
async fn nested_groups_the_mirror_knows_are_counted_with_the_rule_groups() {
    let mut env = TestEnv::new().await;
    env.sync_extra = "max_concurrency = 2\nnested_groups = true\n".into();
    let mut groups = Vec::new();
    for i in 0..3 {
        let group = env.group(&format!("Rule {i}"), 1 + i);
        let user = env.user(&format!("u{i}"));
        env.add(&group, &user);
        env.employee_rule(&group, 10 + i64::from(i), None);
        groups.push(group);
    }
    let nested = env.group("Nested", 9);
    env.add(&groups[0], &nested);
    let inner = env.user("inner");
    env.add(&nested, &inner);
    let counted = |env: &TestEnv| {
        env.sim()
            .stats()
            .batch_items
            .get("GET /v1.0/groups/{id}/members/$count 200")
            .copied()
    };
    env.sync_ok(&["--full"]).await;
    assert_eq!(counted(&env), Some(3), "the rule groups");
    env.sim().reset_stats();
    let s = env.sync_ok(&["--full"]).await;
    assert_eq!(counted(&env), Some(4), "and the nested one: {s}");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        [["4"]]
    );
}
