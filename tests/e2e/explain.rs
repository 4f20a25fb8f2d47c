//! SPEC 1, `explain USER`: one command answers a support ticket about one person — scope and
//! why, the groups and rules that decide, the record and how it was reached or what blocks it,
//! what the next run would change — from a few Graph requests and the store, writing nothing.

use crate::support::TestEnv;

/// Staff (order 10, employees) and Customers (order 20, contacts), synced once with ada in
/// Staff.
async fn staff_and_customers() -> (TestEnv, String, String, String) {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let customers = env.group("Customers", 2);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.contact_rule(&customers, 20, true);
    env.sync_ok(&[]).await;
    (env, staff, customers, ada)
}

async fn explain_json(env: &TestEnv, user: &str) -> serde_json::Value {
    let out = env.run(&["explain", user, "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    json["tenants"][0]["explanations"][0].clone()
}

async fn explain_text(env: &TestEnv, user: &str) -> String {
    let out = env.run(&["explain", user]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    out.stdout
}

/// Everything in the store, bookkeeping included: `explain` writes nothing.
fn everything(env: &TestEnv) -> Vec<Vec<String>> {
    let mut rows = env.dump();
    for table in [
        "sync_runs",
        "change_log",
        "sync_links",
        "delta_cursors",
        "entra_users",
    ] {
        rows.extend(env.rows(&format!("SELECT * FROM {table} ORDER BY 1, 2")));
    }
    rows
}

#[tokio::test]
async fn a_synced_user_is_explained_in_sentences_from_a_few_requests_without_a_write() {
    let (env, _staff, _customers, ada) = staff_and_customers().await;
    let before = everything(&env);
    env.sim().reset_stats();
    let text = explain_text(&env, "ADA@contoso.com").await;
    for line in [
        "ada@contoso.com (Entra object id",
        "In scope: enabled, has an email, and in a rule's group.",
        "Member of rule group \"Staff\"",
        "directly.",
        "Wins: rule order 10 on group \"Staff\"",
        "(created 2020-01-01T00:00:00Z): employee, role Tech.",
        "Decided by: the only matching rule.",
        "Record: employee #1, linked to this user.",
        "Next run: no change.",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let requests = env.sim().stats().matching("/v1.0/");
    assert!(requests <= 5, "{requests} Graph requests");
    assert_eq!(everything(&env), before, "explain writes nothing");
    let json = explain_json(&env, &ada).await;
    assert_eq!(json["scope"], "in_scope");
    assert_eq!(json["mapping"]["how"], "linked");
    assert_eq!(json["mapping"]["record"], 1);
}

#[tokio::test]
async fn the_winning_rule_and_its_criterion_lower_order_older_group_smaller_id() {
    let (mut env, staff, customers, ada) = staff_and_customers().await;
    env.add(&customers, &ada);
    let e = explain_json(&env, &ada).await;
    assert_eq!(e["decided_by"], "lower_order", "{e}");
    assert_eq!(e["rules"][0]["group_id"], staff.as_str());
    assert_eq!(e["rules"][1]["winner"], false);

    // Equal order: the older group (Staff, day 1) wins over Customers (day 2).
    env.rules.clear();
    env.employee_rule(&staff, 10, Some("Tech"));
    env.contact_rule(&customers, 10, true);
    let e = explain_json(&env, &ada).await;
    assert_eq!(e["decided_by"], "older_group", "{e}");
    assert_eq!(e["rules"][0]["group_id"], staff.as_str());

    // Equal order and age: the smaller id.
    let a = env.group("Alpha", 5);
    let b = env.group("Beta", 5);
    env.add(&a, &ada);
    env.add(&b, &ada);
    env.rules.clear();
    env.employee_rule(&a, 1, None);
    env.contact_rule(&b, 1, false);
    let e = explain_json(&env, &ada).await;
    assert_eq!(e["decided_by"], "smaller_group_id", "{e}");
    let smaller = if a.to_lowercase() < b.to_lowercase() {
        &a
    } else {
        &b
    };
    assert_eq!(e["rules"][0]["group_id"], smaller.as_str(), "{e}");
    // What the next run would do about it, field by field.
    let text = explain_text(&env, &ada).await;
    assert!(
        text.contains("Decided by: equal order and creation date, the smaller group id."),
        "{text}"
    );
}

#[tokio::test]
async fn a_member_through_a_nested_group_is_shown_with_the_path() {
    let (env, staff, _customers, _ada) = staff_and_customers().await;
    let nested = env.group("Night shift", 3);
    env.add(&staff, &nested);
    let bob = env.user("bob");
    env.add(&nested, &bob);
    env.sync_ok(&[]).await;
    let text = explain_text(&env, "bob@contoso.com").await;
    assert!(
        text.contains("Member of rule group \"Staff\"")
            && text.contains(&format!("through {nested}.")),
        "{text}"
    );
}

#[tokio::test]
async fn what_the_next_run_changes_and_the_local_edits_it_will_overwrite() {
    let (env, _staff, _customers, ada) = staff_and_customers().await;
    env.exec("UPDATE employees SET phone = '+1 555 0199' WHERE username = 'ada'");
    let text = explain_text(&env, &ada).await;
    assert!(
        text.contains(
            "Local edit on employee #1: phone is \"+1 555 0199\" (Entra gave \"+1 555 0100\")"
        ),
        "{text}"
    );
    assert!(text.contains("Next run: no change."), "{text}");
    let local_edits = async || {
        let status = env.run(&["status", "--json"]).await.json();
        status["tenants"]["t0"]["local_edits"].as_i64()
    };
    assert_eq!(
        local_edits().await,
        Some(1),
        "status counts the edited record"
    );
    let human = env.run(&["status"]).await.stdout;
    assert!(
        human.contains("1 synced records carry local edits"),
        "{human}"
    );
    env.sim()
        .update_user(
            &ada,
            graph_sim::UserPatch {
                job_title: Some(Some("Lead".into())),
                ..Default::default()
            },
        )
        .unwrap();
    let e = explain_json(&env, &ada).await;
    let fields: Vec<(String, serde_json::Value, serde_json::Value)> = e["next_run"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["old"].clone(),
                f["new"].clone(),
            )
        })
        .collect();
    assert_eq!(e["next_run"][0]["action"], "update", "{e}");
    assert!(
        fields.contains(&("job_title".into(), "Engineer".into(), "Lead".into())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("phone".into(), "+1 555 0199".into(), "+1 555 0100".into())),
        "the local edit goes with the rewrite: {fields:?}"
    );
    // Still nothing written: the next real run is what changes it.
    assert_eq!(
        env.rows("SELECT job_title, phone FROM employees WHERE id = 1"),
        vec![vec!["Engineer", "+1 555 0199"]]
    );
    env.sync_ok(&[]).await;
    assert_eq!(
        local_edits().await,
        Some(0),
        "overwritten by the Entra change"
    );
    env.exec("UPDATE employees SET active = 0 WHERE id = 1");
    assert_eq!(
        local_edits().await,
        Some(1),
        "a local deactivation is a local edit"
    );
}

#[tokio::test]
async fn blocked_by_a_username_another_record_holds_and_by_the_root() {
    let (env, staff, _customers, _ada) = staff_and_customers().await;
    env.exec(
        "INSERT INTO employees (id, username, email, active, is_root) VALUES (50, 'carol', 'c.old@elsewhere.com', 1, 0);
         INSERT INTO employees (id, username, email, active, is_root) VALUES (60, 'root', 'dave@contoso.com', 1, 1);",
    );
    let carol = env.user("carol");
    env.add(&staff, &carol);
    let e = explain_json(&env, &carol).await;
    assert_eq!(e["mapping"]["how"], "blocked", "{e}");
    assert_eq!(e["mapping"]["reason"], "username_collision");
    assert!(
        e["mapping"]["message"].as_str().unwrap().contains("#50"),
        "{e}"
    );
    let dave = env.user("dave");
    env.add(&staff, &dave);
    let e = explain_json(&env, &dave).await;
    assert_eq!(e["mapping"]["reason"], "root_conflict", "{e}");
}

#[tokio::test]
async fn an_email_claimed_by_another_tenant_names_that_tenant() {
    let mut env = TestEnv::with_tenants(2).await;
    let g0 = env.group_in(0, "Staff", 1);
    let g1 = env.group_in(1, "Staff", 1);
    let a0 = env.user_in(0, "ada");
    let a1 = env.user_in(1, "ada");
    env.sims[0].control().add_member(&g0, &a0).unwrap();
    env.rule(0, &g0, 10, "employee", String::new());
    env.rule(1, &g1, 10, "employee", String::new());
    env.sync_ok(&[]).await;
    env.sims[1].control().add_member(&g1, &a1).unwrap();
    let out = env.run(&["explain", &a1, "--tenant", "t1", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let e = &out.json()["tenants"][0]["explanations"][0];
    assert_eq!(e["mapping"]["reason"], "email_claimed", "{e}");
    assert!(
        e["mapping"]["message"].as_str().unwrap().contains("\"t0\""),
        "{e}"
    );
}

#[tokio::test]
async fn out_of_scope_says_why_and_shows_a_pending_deactivation() {
    let (mut env, staff, _customers, ada) = staff_and_customers().await;
    env.extra_config = "[safety]\ndeactivate_after_minutes = 60\n".into();
    env.sim().disable_user(&ada).unwrap();
    env.sync_ok(&[]).await;
    let text = explain_text(&env, &ada).await;
    assert!(
        text.contains("Out of scope: the account is disabled in Entra."),
        "{text}"
    );
    assert!(
        text.contains("Pending deactivation: out of scope since"),
        "{text}"
    );
    assert!(
        text.contains("Record: employee #1, linked to this user."),
        "{text}"
    );
    env.remove(&staff, &ada);
    // Removed from every group: known to the store by the UPN it was synced from.
    let text = explain_text(&env, "ada@contoso.com").await;
    assert!(
        text.contains("Out of scope: Entra lists them in no rule's group"),
        "{text}"
    );
}

#[tokio::test]
async fn nobody_by_that_name_exits_1() {
    let (env, _staff, _customers, _ada) = staff_and_customers().await;
    let out = env.run(&["explain", "nobody@contoso.com"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("no user matches \"nobody@contoso.com\""),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_duplicate_email_in_entra_names_the_user_who_keeps_it() {
    let (env, staff, _customers, ada) = staff_and_customers().await;
    let copy = env.sim().add_user(graph_sim::NewUser {
        user_principal_name: "ada.copy@contoso.com".into(),
        display_name: "Ada Copy".into(),
        mail: Some("ada@contoso.com".into()),
        ..graph_sim::NewUser::default()
    });
    env.add(&staff, &copy.id);
    let e = explain_json(&env, "ada.copy@contoso.com").await;
    assert_eq!(e["mapping"]["reason"], "duplicate_email", "{e}");
    assert!(
        e["mapping"]["message"].as_str().unwrap().contains(&ada),
        "names the holder {ada}: {e}"
    );
}
