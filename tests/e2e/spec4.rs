//! SPEC section 4, one scenario per numbered point, asserting the rows a PSA user would see.

use crate::support::{TestEnv, tenant};

fn count(s: &serde_json::Value, tenant_name: &str, key: &str) -> i64 {
    tenant(s, tenant_name)[key].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn scope_4_1_only_enabled_members_with_an_email_are_synced_and_nested_members_count() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let nested = env.group("Staff / Nested", 2);
    let ada = env.user("ada");
    let bob = env.user("bob");
    let eve = env.user("eve");
    let nomail = env.user("nomail");
    env.sim().disable_user(&bob).unwrap();
    env.sim()
        .update_user(
            &nomail,
            graph_sim::UserPatch {
                mail: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
    env.add(&staff, &ada);
    env.add(&staff, &bob);
    env.add(&staff, &nested);
    env.add(&nested, &eve);
    env.add(&staff, &nomail);
    env.employee_rule(&staff, 10, None);
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT username FROM employees ORDER BY username"),
        vec![vec!["ada"], vec!["eve"]]
    );
    let reports = tenant(&s, "t0")["reports"].as_array().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["kind"], "no_email");
    assert!(reports[0]["user"].as_str().unwrap().starts_with("nomail@"));
}

#[tokio::test]
async fn precedence_4_2_lowest_order_then_oldest_group_decides_kind_and_access() {
    let mut env = TestEnv::new().await;
    let techs = env.group("Technicians", 5);
    let portal = env.group("Portal", 1);
    let old_equal = env.group("Old equal", 2);
    let ada = env.user("ada");
    let bob = env.user("bob");
    env.add(&techs, &ada);
    env.add(&portal, &ada);
    env.add(&portal, &bob);
    env.add(&old_equal, &bob);
    env.employee_rule(&techs, 10, Some("Admin"));
    env.contact_rule(&portal, 20, true);
    env.employee_rule(&old_equal, 20, Some("Old"));
    env.sync_ok(&[]).await;
    // ada: order 10 beats 20. bob: order 20 both; "Old equal" (day 2) is newer than Portal (day 1).
    assert_eq!(
        env.rows("SELECT username, security_role FROM employees"),
        vec![vec!["ada", "Admin"]]
    );
    assert_eq!(
        env.rows("SELECT email, portal_access, account, phone_type FROM contacts"),
        vec![vec!["bob@contoso.com", "1", "Account 0", "Work"]]
    );
}

#[tokio::test]
async fn matching_4_3_existing_employee_with_ticket_is_merged_and_survives_upn_change() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.init_store();
    env.exec(
        "INSERT INTO employees (id, username, email, first_name, active, is_root) VALUES (77, 'ada', 'ADA@contoso.com', 'Old name', 1, 0);
         INSERT INTO tickets (id, subject, employee_id) VALUES (500, 'Printer on fire', 77);",
    );
    let s = env.sync_ok(&[]).await;
    assert_eq!(count(&s, "t0", "updated"), 1);
    assert_eq!(count(&s, "t0", "created"), 0);
    assert_eq!(
        env.rows("SELECT id, username, email, first_name, security_role FROM employees"),
        vec![vec!["77", "ada", "ada@contoso.com", "ada", "Tech"]]
    );
    assert_eq!(
        env.rows("SELECT id, employee_id FROM tickets"),
        vec![vec!["500", "77"]]
    );
    // A renamed user (new UPN and mail) stays the same record: matched by link, not email.
    env.sim()
        .update_user(
            &ada,
            graph_sim::UserPatch {
                user_principal_name: Some("ada.lovelace@contoso.com".into()),
                mail: Some(Some("ada.lovelace@contoso.com".into())),
                ..Default::default()
            },
        )
        .unwrap();
    env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT id, username, email, active FROM employees"),
        vec![vec!["77", "ada.lovelace", "ada.lovelace@contoso.com", "1"]]
    );
}

#[tokio::test]
async fn kind_change_4_4_user_moved_from_employee_to_contact_group_keeps_one_live_record() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let customers = env.group("Customers", 2);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.contact_rule(&customers, 20, true);
    env.sync_ok(&[]).await;
    env.remove(&staff, &ada);
    env.add(&customers, &ada);
    let s = env.sync_ok(&[]).await;
    assert_eq!(count(&s, "t0", "archived"), 1);
    assert_eq!(count(&s, "t0", "created"), 1);
    assert_eq!(
        env.rows("SELECT username, email, active, security_role, deactivated_at IS NOT NULL FROM employees"),
        vec![vec!["ada_Archived", "ada@contoso.com_Archived", "0", "NULL", "1"]]
    );
    assert_eq!(
        env.rows("SELECT email, active, portal_access FROM contacts"),
        vec![vec!["ada@contoso.com", "1", "1"]]
    );
    assert_eq!(
        env.rows("SELECT g.display_name, m.member_kind FROM group_members m JOIN groups g ON g.id = m.group_id"),
        vec![vec!["Customers", "contact"]]
    );
}

#[tokio::test]
async fn root_4_5_root_employee_is_never_changed_and_the_user_is_reported() {
    let mut env = TestEnv::new().await;
    let customers = env.group("Customers", 1);
    let ada = env.user("ada");
    env.add(&customers, &ada);
    env.contact_rule(&customers, 10, true);
    env.init_store();
    env.exec("INSERT INTO employees (id, username, email, security_role, active, is_root) VALUES (1, 'root', 'ada@contoso.com', 'Owner', 1, 1)");
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT username, email, security_role, active FROM employees"),
        vec![vec!["root", "ada@contoso.com", "Owner", "1"]]
    );
    assert_eq!(env.rows("SELECT COUNT(*) FROM contacts"), vec![vec!["0"]]);
    assert_eq!(tenant(&s, "t0")["reports"][0]["kind"], "root_conflict");
}

#[tokio::test]
async fn updates_4_6_local_edit_persists_until_the_entra_user_changes() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET phone = '+44 local', department = 'Local dept'");
    env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT phone, department FROM employees"),
        vec![vec!["+44 local", "Local dept"]]
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
    let s = env.sync_ok(&[]).await;
    assert_eq!(count(&s, "t0", "updated"), 1);
    assert_eq!(
        env.rows("SELECT job_title, phone, department FROM employees"),
        vec![vec!["Lead", "+1 555 0100", "General"]]
    );
    let log = env.rows("SELECT action, changes FROM change_log WHERE record_kind = 'employee' ORDER BY id DESC LIMIT 1");
    assert_eq!(log[0][0], "update");
    assert!(
        log[0][1].contains("\"job_title\":[\"Engineer\",\"Lead\"]"),
        "{}",
        log[0][1]
    );
}

#[tokio::test]
async fn deactivation_4_7_leaving_every_group_deactivates_and_returning_reactivates_the_same_record()
 {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let customers = env.group("Customers", 2);
    let ada = env.user("ada");
    let bob = env.user("bob");
    env.add(&staff, &ada);
    env.add(&customers, &bob);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.contact_rule(&customers, 20, true);
    env.sync_ok(&[]).await;
    env.remove(&staff, &ada);
    env.sim().delete_user(&bob).unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(count(&s, "t0", "deactivated"), 2);
    assert_eq!(
        env.rows("SELECT id, active, security_role, deactivated_at IS NOT NULL FROM employees"),
        vec![vec!["1", "0", "NULL", "1"]]
    );
    assert_eq!(
        env.rows("SELECT id, active, portal_access FROM contacts"),
        vec![vec!["1", "0", "0"]]
    );
    env.add(&staff, &ada);
    env.sim().restore_user(&bob).unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(count(&s, "t0", "reactivated"), 2);
    assert_eq!(
        env.rows("SELECT id, active, security_role, deactivated_at FROM employees"),
        vec![vec!["1", "1", "Tech", "NULL"]]
    );
    assert_eq!(
        env.rows("SELECT id, active, portal_access FROM contacts"),
        vec![vec!["1", "1", "1"]]
    );
}

#[tokio::test]
async fn usernames_4_8_a_taken_username_is_reported_and_never_stolen() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.init_store();
    env.exec("INSERT INTO employees (id, username, email, active, is_root) VALUES (3, 'Ada', 'another.ada@elsewhere.com', 0, 0)");
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["reports"][0]["kind"], "username_collision");
    assert_eq!(
        env.rows("SELECT id, username, email FROM employees"),
        vec![vec!["3", "Ada", "another.ada@elsewhere.com"]]
    );
}

#[tokio::test]
async fn groups_4_9_and_idempotence_4_10_groups_mirror_members_and_a_second_run_changes_nothing() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let customers = env.group("Customers", 2);
    let ada = env.user("ada");
    let bob = env.user("bob");
    env.add(&staff, &ada);
    env.add(&customers, &ada);
    env.add(&customers, &bob);
    env.employee_rule(&staff, 10, None);
    env.contact_rule(&customers, 20, false);
    env.sync_ok(&[]).await;
    // ada is an employee (order 10) and appears as such in both read-only groups.
    assert_eq!(
        env.rows(
            "SELECT g.display_name, g.read_only, m.member_kind, COUNT(*) FROM groups g
             JOIN group_members m ON m.group_id = g.id GROUP BY 1, 2, 3 ORDER BY 1, 3"
        ),
        vec![
            vec!["Customers", "1", "contact", "1"],
            vec!["Customers", "1", "employee", "1"],
            vec!["Staff", "1", "employee", "1"],
        ]
    );
    let before = env.dump();
    let s = env.sync_ok(&[]).await;
    for key in [
        "created",
        "updated",
        "reactivated",
        "deactivated",
        "archived",
    ] {
        assert_eq!(count(&s, "t0", key), 0, "{key}");
    }
    assert_eq!(env.dump(), before);
}

#[tokio::test]
async fn tenants_4_11_an_email_claimed_by_two_tenants_goes_to_the_first_listed() {
    let mut env = TestEnv::with_tenants(2).await;
    let g0 = env.group_in(0, "Staff A", 1);
    let g1 = env.group_in(1, "Staff B", 1);
    let a0 = env.user_in(0, "ada");
    let a1 = env.user_in(1, "ada");
    env.sims[0].control().add_member(&g0, &a0).unwrap();
    env.sims[1].control().add_member(&g1, &a1).unwrap();
    env.rule(0, &g0, 10, "employee", String::new());
    env.rule(1, &g1, 10, "contact", String::new());
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT username FROM employees"),
        vec![vec!["ada"]]
    );
    assert_eq!(env.rows("SELECT COUNT(*) FROM contacts"), vec![vec!["0"]]);
    assert_eq!(tenant(&s, "t1")["reports"][0]["kind"], "email_claimed");
    assert_eq!(
        env.rows("SELECT directory FROM sync_links"),
        vec![vec![env.sims[0].control().tenant_guid()]],
        "links belong to the first tenant's directory"
    );
}

/// Tenants read Graph at the same time, but write in config order: the first-listed tenant
/// wins the email even when its reads finish last.
#[tokio::test]
async fn tenants_4_11_the_first_listed_wins_even_when_its_reads_are_the_slowest() {
    let mut env = TestEnv::with_tenants(3).await;
    let mut groups = Vec::new();
    for i in 0..3 {
        let g = env.group_in(i, "Staff", 1);
        let ada = env.user_in(i, "ada");
        env.sims[i].control().add_member(&g, &ada).unwrap();
        groups.push(g);
    }
    env.rule(0, &groups[0], 10, "contact", String::new());
    env.rule(1, &groups[1], 10, "employee", String::new());
    env.rule(2, &groups[2], 10, "employee", String::new());
    // t0 answers its member pages 1.5 s late; t1 and t2 at once.
    env.sims[0].control().inject_fault(graph_sim::Fault::new(
        "/members",
        graph_sim::FaultKind::Delay(std::time::Duration::from_millis(1500)),
        10,
    ));
    let s = env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT email FROM contacts"),
        vec![vec!["ada@contoso.com"]]
    );
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'ada'"),
        vec![vec!["0"]]
    );
    for late in ["t1", "t2"] {
        assert_eq!(
            tenant(&s, late)["reports"][0]["kind"],
            "email_claimed",
            "{s}"
        );
    }
    let order: Vec<String> = s["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["t0", "t1", "t2"], "the summary keeps config order");
    assert_eq!(
        env.rows("SELECT tenant FROM sync_runs ORDER BY id"),
        vec![vec!["t0"], vec!["t1"], vec!["t2"]],
        "runs are recorded in config order"
    );
}

#[tokio::test]
async fn tenants_4_11_one_failing_tenant_does_not_block_the_other() {
    let mut env = TestEnv::with_tenants(2).await;
    let g0 = env.group_in(0, "Staff A", 1);
    let g1 = env.group_in(1, "Staff B", 1);
    let a1 = env.user_in(1, "bob");
    env.sims[1].control().add_member(&g1, &a1).unwrap();
    env.rule(0, &g0, 10, "employee", String::new());
    env.rule(1, &g1, 10, "employee", String::new());
    env.sims[0]
        .control()
        .inject_fault(graph_sim::Fault::status("/$batch", 403, None, 100));
    let out = env.run(&["sync", "--json"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let s = out.json();
    assert_eq!(tenant(&s, "t0")["status"], "failed");
    assert_eq!(tenant(&s, "t1")["status"], "success");
    assert_eq!(
        env.rows("SELECT username FROM employees"),
        vec![vec!["bob"]]
    );
    assert_eq!(
        env.rows("SELECT tenant, status FROM sync_runs ORDER BY tenant"),
        vec![vec!["t0", "failed"], vec!["t1", "success"]]
    );
}

#[tokio::test]
async fn retention_purges_old_deactivated_records_but_never_one_with_a_ticket() {
    let mut env = TestEnv::new().await;
    env.extra_config
        .push_str("\n[retention]\npurge_deactivated_after_days = 30\n");
    let staff = env.group("Staff", 1);
    let users: Vec<String> = ["old", "ticketed", "recent", "stays"]
        .iter()
        .map(|u| env.user(u))
        .collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    for u in &users[..3] {
        env.remove(&staff, u);
    }
    env.sync_ok(&[]).await;
    // Years pass: the records were deactivated long ago, and so was the purge the store
    // watches for (what the sync noted when it deactivated them).
    env.exec(
        "UPDATE employees SET deactivated_at = '2020-01-01T00:00:00Z' WHERE username IN ('old', 'ticketed');
         UPDATE tenant_state SET purge_watch = '2020-01-01T00:00:00Z';
         INSERT INTO tickets (subject, employee_id) SELECT 'Keep me', id FROM employees WHERE username = 'ticketed';",
    );
    // Any run purges what is due, incremental ones too (SPEC 4.13: an incremental run leaves
    // the store a full run would leave), and Entra brought nothing new here.
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert_eq!(tenant(&s, "t0")["purged"], 1);
    let again = env.sync_ok(&["--full"]).await;
    assert_eq!(tenant(&again, "t0")["purged"], 0, "nothing more is due");
    assert_eq!(
        env.rows("SELECT username, active FROM employees ORDER BY username"),
        vec![
            vec!["recent", "0"],
            vec!["stays", "1"],
            vec!["ticketed", "0"]
        ]
    );
    assert_eq!(
        env.rows("SELECT action, changes LIKE '%\"username\":[\"old\",null]%' FROM change_log WHERE action = 'purge'"),
        vec![vec!["purge", "1"]]
    );
    // The purged user coming back gets a new record.
    env.add(&staff, &users[0]);
    env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'old' AND active = 1"),
        vec![vec!["1"]]
    );
}
