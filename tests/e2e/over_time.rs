//! SPEC 4.13, history independence: the same Entra state gives the same store whatever path led
//! there — how the work was split into runs, whether a failed or `--user` run came between,
//! whether a full run saw a user while they were soft-deleted. One scenario per case found in
//! issue 12, each run as an operator would run it.

use graph_sim::{Fault, NewUser, UserPatch};

use crate::support::{TestEnv, tenant};

fn held(summary: &serde_json::Value) -> i64 {
    tenant(summary, "t0")["held"].as_i64().unwrap_or(-1)
}

fn reports(summary: &serde_json::Value) -> Vec<(String, String)> {
    tenant(summary, "t0")["reports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["kind"].as_str().unwrap_or_default().to_string(),
                        r["user"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A user whose UPN and mail differ.
fn person(env: &TestEnv, upn: &str, mail: &str) -> String {
    let local = upn.split('@').next().unwrap_or(upn);
    env.sim()
        .add_user(NewUser {
            user_principal_name: upn.into(),
            display_name: local.into(),
            given_name: Some(local.into()),
            surname: Some("Test".into()),
            mail: Some(mail.into()),
            ..NewUser::default()
        })
        .id
}

async fn sync_code(env: &TestEnv, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["sync", "--json"];
    all.extend_from_slice(args);
    let out = env.run(&all).await;
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|_| serde_json::json!({"stderr": out.stderr, "stdout": out.stdout}));
    (out.code, json)
}

/// Six employees under the default safety limits (20 %: three leaving is held).
async fn six_staff() -> (TestEnv, String, Vec<String>) {
    let mut env = TestEnv::new().await;
    env.extra_config = String::new();
    let staff = env.group("Staff", 1);
    let users: Vec<String> = (0..6).map(|i| env.user(&format!("u{i}"))).collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    (env, staff, users)
}

#[tokio::test]
async fn held_deactivations_outlive_a_failed_run_a_user_run_and_an_idle_run() {
    let (env, staff, users) = six_staff().await;
    for u in &users[..3] {
        env.remove(&staff, u);
    }
    let (code, s) = sync_code(&env, &[]).await;
    assert_eq!((code, held(&s)), (3, 3), "{s}");

    // A failed run in between.
    env.sim()
        .inject_fault(Fault::status("/users/delta", 403, None, 1));
    let (code, _) = sync_code(&env, &[]).await;
    assert_eq!(code, 1);
    let (code, s) = sync_code(&env, &[]).await;
    assert_eq!(
        (code, held(&s)),
        (3, 3),
        "still held after a failed run: {s}"
    );

    // A one-user run in between: it shows the holds too, and they stay.
    let (code, s) = sync_code(&env, &["--user", "u4@contoso.com"]).await;
    assert_eq!((code, held(&s)), (3, 3), "{s}");
    let (code, s) = sync_code(&env, &[]).await;
    assert_eq!(
        (code, held(&s)),
        (3, 3),
        "still held after a --user run: {s}"
    );
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["6"]]
    );
    let status = env.run(&["status", "--json"]).await.json();
    assert_eq!(
        status["tenants"]["t0"]["held"].as_i64(),
        Some(3),
        "{status}"
    );

    let (code, s) = sync_code(&env, &["--allow-mass-deactivation"]).await;
    assert_eq!(code, 0, "{s}");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["3"]]
    );
    let (code, s) = sync_code(&env, &[]).await;
    assert_eq!((code, held(&s)), (0, 0), "{s}");
}

#[tokio::test]
async fn a_held_kind_change_keeps_its_username_taken() {
    let mut env = TestEnv::new().await;
    env.extra_config = "[safety]\nmax_deactivations = 1\nmax_deactivation_percent = 0\n".into();
    let staff = env.group("Staff", 1);
    let customers = env.group("Customers", 2);
    let alex = person(
        &env,
        "alexandros.wang@contoso.com",
        "alexandros.wang@contoso.com",
    );
    let leaver = env.user("leaver");
    for u in [&alex, &leaver] {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, None);
    env.contact_rule(&customers, 20, true);
    env.sync_ok(&[]).await;

    // Two removals (the archive and a leaver) is over the limit of 1: both held, while a new
    // user whose UPN has the same local part joins the employee group.
    env.remove(&staff, &alex);
    env.add(&customers, &alex);
    env.remove(&staff, &leaver);
    let newcomer = person(&env, "alexandros.wang@fabrikam.com", "a.wang@fabrikam.com");
    env.add(&staff, &newcomer);
    for _ in 0..2 {
        let (code, s) = sync_code(&env, &[]).await;
        assert_eq!(code, 3, "{s}");
        assert!(
            reports(&s).contains(&(
                "username_collision".into(),
                "alexandros.wang@fabrikam.com".into()
            )),
            "{s}"
        );
    }
    assert_eq!(
        env.rows("SELECT username, active FROM employees ORDER BY username"),
        vec![vec!["alexandros.wang", "1"], vec!["leaver", "1"]]
    );
    assert_eq!(env.rows("SELECT COUNT(*) FROM contacts"), vec![vec!["0"]]);
}

#[tokio::test]
async fn a_user_run_that_needs_another_users_pending_rename_is_reported_not_a_store_error() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let kwame = person(&env, "kwame.holloway@contoso.com", "kwame@contoso.com");
    env.add(&staff, &kwame);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.sim()
        .update_user(
            &kwame,
            UserPatch {
                user_principal_name: Some("kwame.holloway.old@contoso.com".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let newcomer = person(&env, "kwame.holloway@fabrikam.com", "kh@fabrikam.com");
    env.add(&staff, &newcomer);

    let (code, s) = sync_code(&env, &["--user", "kwame.holloway@fabrikam.com"]).await;
    assert_eq!(code, 0, "{s}");
    let r = reports(&s);
    assert_eq!(r.len(), 1, "{s}");
    assert!(
        tenant(&s, "t0")["reports"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("run a full sync"),
        "{s}"
    );
    assert_eq!(
        env.rows("SELECT username FROM employees"),
        vec![vec!["kwame.holloway"]],
        "nothing written"
    );
    env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT username FROM employees ORDER BY id"),
        vec![vec!["kwame.holloway.old"], vec!["kwame.holloway"]]
    );
}

#[tokio::test]
async fn retention_never_purges_a_user_who_comes_back_in_the_same_run() {
    let mut env = TestEnv::new().await;
    env.extra_config = format!(
        "{}\n[retention]\npurge_deactivated_after_days = 30\n",
        env.extra_config
    );
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.remove(&staff, &ada);
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET deactivated_at = '2020-01-01T00:00:00Z', department = 'Kept'");
    // Back in scope, and the first run to see it is a full one.
    env.add(&staff, &ada);
    let s = env.sync_ok(&["--full"]).await;
    assert_eq!(tenant(&s, "t0")["purged"], 0, "{s}");
    assert_eq!(
        env.rows("SELECT id, username, active FROM employees"),
        vec![vec!["1", "ada", "1"]]
    );
    assert_eq!(
        env.rows(
            "SELECT COUNT(*) FROM group_members m LEFT JOIN employees e ON e.id = m.member_id
             WHERE e.id IS NULL"
        ),
        vec![vec!["0"]],
        "no member points at nothing"
    );
    let again = env.sync_ok(&["--full"]).await;
    assert_eq!(tenant(&again, "t0")["created"], 0, "{again}");
}

#[tokio::test]
async fn a_user_restored_after_a_full_run_is_reactivated_by_an_incremental_run() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.sim().delete_user(&ada).unwrap();
    env.sync_ok(&["--full"]).await;
    assert_eq!(env.rows("SELECT active FROM employees"), vec![vec!["0"]]);
    env.sim().restore_user(&ada).unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental", "{s}");
    assert_eq!(env.rows("SELECT active FROM employees"), vec![vec!["1"]]);
}

#[tokio::test]
async fn a_user_no_run_saw_join_restored_after_a_full_run_is_created_by_an_incremental_run() {
    // Found by the random histories: added to a group and deleted before any run saw either,
    // the user was in no listing, no mirror and no delta round, so a restore went unseen
    // until the next full run. A full run now notes the tenant's deleted users.
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.add(&staff, &ada);
    env.sim().delete_user(&ada).unwrap();
    env.sync_ok(&["--full"]).await;
    assert!(
        env.rows("SELECT id FROM employees WHERE is_root = 0")
            .is_empty()
    );
    env.sim().restore_user(&ada).unwrap();
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental", "{s}");
    assert_eq!(
        env.rows("SELECT username, active FROM employees WHERE is_root = 0"),
        vec![vec!["ada", "1"]]
    );
}

#[tokio::test]
async fn a_local_deactivation_stays_when_another_user_changes() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let other = env.group("Elsewhere", 2);
    let ada = env.user("ada");
    let bob = env.user("bob");
    let out_of_scope = env.user("zed");
    env.add(&staff, &ada);
    env.add(&staff, &bob);
    env.add(&other, &out_of_scope);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET active = 0 WHERE username = 'ada'");
    for (who, title) in [(&bob, "Lead"), (&out_of_scope, "Anything")] {
        env.sim()
            .update_user(
                who,
                UserPatch {
                    job_title: Some(Some(title.into())),
                    ..Default::default()
                },
            )
            .unwrap();
        env.sync_ok(&[]).await;
        assert_eq!(
            env.rows("SELECT active, security_role FROM employees WHERE username = 'ada'"),
            vec![vec!["0", "Tech"]],
            "after {title}"
        );
    }
    // Her own change in Entra is what brings the record back (Entra wins).
    env.sim()
        .update_user(
            &ada,
            UserPatch {
                job_title: Some(Some("Chief".into())),
                ..Default::default()
            },
        )
        .unwrap();
    env.sync_ok(&[]).await;
    assert_eq!(
        env.rows("SELECT active, job_title FROM employees WHERE username = 'ada'"),
        vec![vec!["1", "Chief"]]
    );
}

#[tokio::test]
async fn a_leaver_loses_the_role_of_a_record_an_admin_had_deactivated_and_gets_it_back_on_return() {
    // Found in review: a record an admin had deactivated kept its security role when its user
    // left, so reactivating it by hand gave a leaver their access back.
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, Some("Tech"));
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET active = 0, job_title = 'Local' WHERE username = 'ada'");
    env.remove(&staff, &ada);
    env.sync_ok(&[]).await;
    let row = "SELECT active, security_role, job_title FROM employees WHERE username = 'ada'";
    assert_eq!(env.rows(row), vec![vec!["0", "NULL", "Local"]]);
    // Back: the access she had, and the record as the admin left it (as if no run saw her go).
    env.add(&staff, &ada);
    env.sync_ok(&[]).await;
    assert_eq!(env.rows(row), vec![vec!["0", "Tech", "Local"]]);
}

#[tokio::test]
async fn a_rehired_account_takes_over_the_old_record_whether_seen_in_one_round_or_two() {
    for one_round in [false, true] {
        let mut env = TestEnv::new().await;
        let staff = env.group("Staff", 1);
        let ada = env.user("ada");
        env.add(&staff, &ada);
        env.employee_rule(&staff, 10, None);
        env.sync_ok(&[]).await;
        env.exec("INSERT INTO tickets (id, subject, employee_id) VALUES (7, 'Laptop', 1)");
        env.sim().hard_delete_user(&ada).unwrap();
        if !one_round {
            env.sync_ok(&[]).await;
            assert_eq!(env.rows("SELECT active FROM employees"), vec![vec!["0"]]);
        }
        let rehired = env.user("ada");
        assert_ne!(rehired, ada);
        env.add(&staff, &rehired);
        let s = env.sync_ok(&[]).await;
        assert!(reports(&s).is_empty(), "one round: {one_round}: {s}");
        assert_eq!(
            env.rows("SELECT id, username, active FROM employees"),
            vec![vec!["1", "ada", "1"]],
            "one round: {one_round}"
        );
    }
}

#[tokio::test]
async fn a_user_run_finds_a_leaver_by_the_upn_they_were_synced_from() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = person(
        &env,
        "ada@contoso.onmicrosoft.com",
        "ada.lovelace@contoso.com",
    );
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.remove(&staff, &ada);
    let s = env
        .sync_ok(&["--user", "ADA@contoso.onmicrosoft.com"])
        .await;
    assert_eq!(tenant(&s, "t0")["deactivated"], 1, "{s}");
    assert_eq!(env.rows("SELECT active FROM employees"), vec![vec!["0"]]);
}

#[tokio::test]
async fn a_kind_change_seen_over_two_rounds_archives_like_one_seen_in_one() {
    for two_rounds in [false, true] {
        let mut env = TestEnv::new().await;
        let staff = env.group("Staff", 1);
        let customers = env.group("Customers", 2);
        let ada = env.user("ada");
        env.add(&staff, &ada);
        env.employee_rule(&staff, 10, None);
        env.contact_rule(&customers, 20, true);
        env.sync_ok(&[]).await;
        env.remove(&staff, &ada);
        if two_rounds {
            env.sync_ok(&[]).await;
        }
        env.add(&customers, &ada);
        env.sync_ok(&[]).await;
        assert_eq!(
            env.rows("SELECT username, email, active FROM employees"),
            vec![vec!["ada_Archived", "ada@contoso.com_Archived", "0"]],
            "two rounds: {two_rounds}"
        );
        assert_eq!(
            env.rows("SELECT email, active FROM contacts"),
            vec![vec!["ada@contoso.com", "1"]]
        );
    }
}

#[tokio::test]
async fn an_idle_run_still_shows_the_open_reports() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let nomail = env.user("nomail");
    env.sim()
        .update_user(
            &nomail,
            UserPatch {
                mail: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
    env.add(&staff, &nomail);
    env.employee_rule(&staff, 10, None);
    let first = env.sync_ok(&[]).await;
    assert_eq!(reports(&first).len(), 1, "{first}");
    let idle = env.sync_ok(&[]).await;
    assert_eq!(tenant(&idle, "t0")["mode"], "incremental");
    assert_eq!(reports(&idle), reports(&first), "{idle}");
    let status = env.run(&["status", "--json"]).await.json();
    assert_eq!(
        status["tenants"]["t0"]["reports"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
}

#[tokio::test]
async fn purges_are_counted_in_the_summary() {
    let mut env = TestEnv::new().await;
    env.extra_config = format!(
        "{}\n[retention]\npurge_deactivated_after_days = 30\n",
        env.extra_config
    );
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.remove(&staff, &ada);
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET deactivated_at = '2020-01-01T00:00:00Z'");
    let out = env.run(&["sync", "--full"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("1 purged"), "{}", out.stdout);
    assert_eq!(env.rows("SELECT COUNT(*) FROM employees"), vec![vec!["0"]]);
}

#[tokio::test]
async fn renaming_a_tenant_in_the_config_keeps_every_link_and_claim() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.rename_tenant(0, "msp-renamed");
    let s = env.sync_ok(&["--full"]).await;
    let t = tenant(&s, "msp-renamed");
    assert_eq!(t["reports"].as_array().map(Vec::len), Some(0), "{s}");
    assert_eq!(t["created"], 0, "{s}");
    assert_eq!(
        env.rows("SELECT id, active FROM employees"),
        vec![vec!["1", "1"]]
    );
    assert_eq!(
        env.rows("SELECT tenant FROM groups"),
        vec![vec!["msp-renamed"]]
    );
}

#[tokio::test]
async fn two_users_who_swap_their_usernames_in_one_round_swap_their_records_usernames() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let a = person(&env, "amy@contoso.com", "amy.mail@contoso.com");
    let b = person(&env, "ben@contoso.com", "ben.mail@contoso.com");
    env.add(&staff, &a);
    env.add(&staff, &b);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    let rename = |id: &str, upn: &str| {
        env.sim()
            .update_user(
                id,
                UserPatch {
                    user_principal_name: Some(upn.into()),
                    ..Default::default()
                },
            )
            .unwrap();
    };
    rename(&a, "swap@contoso.com");
    rename(&b, "amy@contoso.com");
    rename(&a, "ben@contoso.com");
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["updated"], 2, "{s}");
    assert_eq!(
        env.rows("SELECT username, email FROM employees ORDER BY email"),
        vec![
            vec!["ben", "amy.mail@contoso.com"],
            vec!["amy", "ben.mail@contoso.com"]
        ]
    );
}

#[tokio::test]
async fn a_user_run_holds_what_a_full_run_would_hold_and_releases_it_only_when_allowed() {
    // Found in review: `--user` skipped the mass-deactivation guard and cleared the person's
    // hold even when it wrote nothing.
    let (env, staff, users) = six_staff().await;
    for u in &users[..3] {
        env.remove(&staff, u);
    }
    let (code, s) = sync_code(&env, &[]).await;
    assert_eq!((code, held(&s)), (3, 3), "{s}");

    let (code, s) = sync_code(&env, &["--user", "u0@contoso.com"]).await;
    assert_eq!(
        (code, held(&s)),
        (3, 3),
        "held like a full run holds it: {s}"
    );
    assert_eq!(
        env.rows("SELECT active FROM employees WHERE username = 'u0'"),
        vec![vec!["1"]]
    );
    let (code, s) = sync_code(&env, &[]).await;
    assert_eq!((code, held(&s)), (3, 3), "and still held: {s}");

    let (code, s) = sync_code(
        &env,
        &["--user", "u0@contoso.com", "--allow-mass-deactivation"],
    )
    .await;
    assert_eq!((code, held(&s)), (3, 2), "released for u0 only: {s}");
    assert_eq!(
        env.rows("SELECT active FROM employees WHERE username = 'u0'"),
        vec![vec!["0"]]
    );
}

#[tokio::test]
async fn a_user_run_resyncs_everyone_the_query_matches() {
    // One's UPN is the other's mail: `--user` names both, and SPEC 1 resyncs every match.
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let a = person(&env, "shared@contoso.com", "amy@contoso.com");
    let b = person(&env, "ben@contoso.com", "shared@contoso.com");
    env.add(&staff, &a);
    env.add(&staff, &b);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.exec("UPDATE employees SET job_title = 'Local'");
    let s = env.sync_ok(&["--user", "shared@contoso.com"]).await;
    assert_eq!(tenant(&s, "t0")["updated"], 2, "{s}");
    assert_eq!(
        env.rows("SELECT job_title FROM employees"),
        vec![vec!["NULL"], vec!["NULL"]]
    );
}

/// `sync --user` reads that person (and whoever holds a name they want), not the tenant: a
/// handful of Graph requests whatever its size (SPEC 8), the same outcome for them.
#[tokio::test]
async fn a_user_run_reads_that_person_not_the_tenant() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    for i in 0..40 {
        let u = env.user(&format!("user{i}"));
        env.add(&staff, &u);
    }
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    env.sync_ok(&[]).await;
    env.sim()
        .update_user(
            &ada,
            UserPatch {
                job_title: Some(Some("Lead".into())),
                ..Default::default()
            },
        )
        .unwrap();
    let bob = env.user("bob");
    env.add(&staff, &bob);

    let s = env.sync_ok(&["--user", "ada@contoso.com"]).await;
    let requests = tenant(&s, "t0")["graph_requests"].as_u64().unwrap();
    assert!(requests <= 5, "{requests} Graph requests: {s}");
    assert_eq!(
        env.rows("SELECT job_title FROM employees WHERE username = 'ada'"),
        vec![vec!["Lead"]]
    );
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'bob'"),
        vec![vec!["0"]],
        "only the person named"
    );
    // Someone no run has seen yet, named by UPN: found in Entra, created.
    let s = env.sync_ok(&["--user", "bob@contoso.com"]).await;
    let requests = tenant(&s, "t0")["graph_requests"].as_u64().unwrap();
    assert!(requests <= 5, "{requests} Graph requests: {s}");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'bob' AND active = 1"),
        vec![vec!["1"]]
    );
    // The next incremental run sees both changes as already applied: nothing to write.
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["updated"], 0, "{s}");
    assert_eq!(tenant(&s, "t0")["created"], 0, "{s}");
}

/// `--user` finds someone no run has seen by mail in a handful of requests; a membership the
/// mirror cannot place (a group nested since the last run) sends it to a full read; a tenant
/// the person is not in is not read in full.
#[tokio::test]
async fn a_user_run_finds_a_new_hire_by_mail_and_reads_in_full_only_when_it_must() {
    let mut env = TestEnv::with_tenants(2).await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    let other = env.group_in(1, "Other", 1);
    env.rule(1, &other, 10, "employee", String::new());
    env.sync_ok(&[]).await;

    let carol = person(&env, "carol.x@contoso.com", "carol@mail.contoso.com");
    env.add(&staff, &carol);
    env.sims[1].control().reset_stats();
    let s = env.sync_ok(&["--user", "carol@mail.contoso.com"]).await;
    let requests = tenant(&s, "t0")["graph_requests"].as_u64().unwrap();
    assert!(requests <= 5, "{requests} Graph requests: {s}");
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE email = 'carol@mail.contoso.com'"),
        vec![vec!["1"]]
    );
    let other_tenant = env.sims[1].control().stats();
    assert!(
        other_tenant.matching("/members") == 0,
        "the tenant she is not in was read in full: {other_tenant:?}"
    );

    // Dan is only in a group nested into Staff after the last run.
    let nested = env.group("Nested later", 2);
    let dan = env.user("dan");
    env.add(&nested, &dan);
    env.add(&staff, &nested);
    env.sync_ok(&["--user", "dan@contoso.com"]).await;
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE username = 'dan' AND active = 1"),
        vec![vec!["1"]],
        "the same outcome a full run gives him"
    );
}
