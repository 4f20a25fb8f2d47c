//! `entra-sync run` as operators run it: a child process against graph-sim with a schedule of
//! two seconds, watched through its admin endpoint, signals and the store.

use std::time::Duration;

use graph_sim::{Fault, FaultKind, UserPatch};
use rustix::process::{Pid, Signal, kill_process};
use tokio::process::Child;

use crate::support::{SECRET, TestEnv};

struct Daemon {
    child: Child,
    admin: String,
    log: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    async fn start(env: &mut TestEnv, extra: &str) -> Daemon {
        let port = free_port();
        env.extra_config = format!(
            "{}\n[schedule]\nsync = \"*/2 * * * * *\"\nfull_sync = \"0 0 3 * * *\"\n\n[admin]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n",
            env.extra_config
        );
        env.write_config();
        let log = env.dir.path().join("daemon.log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .arg("--config")
            .arg(env.config_path())
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(env.dir.path().join("daemon.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            admin: format!("http://127.0.0.1:{port}"),
            log,
        };
        d.wait_for(
            || async { d.get("/healthz").await.is_some() },
            "the admin endpoint",
        )
        .await;
        d
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("{}{path}", self.admin)).await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    async fn wait_for<F, Fut>(&self, mut check: F, what: &str)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..300 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.child.id().unwrap() as i32).unwrap();
        kill_process(pid, sig).unwrap();
    }
}

fn runs(env: &TestEnv) -> i64 {
    if !env.store_path().exists() {
        return 0;
    }
    env.rows("SELECT COUNT(*) FROM sync_runs")[0][0]
        .parse()
        .unwrap()
}

async fn staffed() -> (TestEnv, String, Vec<String>) {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let users: Vec<String> = ["ada", "bob"].iter().map(|u| env.user(u)).collect();
    env.add(&staff, &users[0]);
    env.employee_rule(&staff, 10, Some("Tech"));
    (env, staff, users)
}

#[tokio::test]
async fn a_change_reaches_the_store_within_one_interval_and_idle_rounds_cost_two_requests() {
    let (mut env, staff, users) = staffed().await;
    let d = Daemon::start(&mut env, "").await;
    d.wait_for(|| async { runs(&env) >= 1 }, "the first run")
        .await;
    assert_eq!(
        env.rows("SELECT username FROM employees"),
        vec![vec!["ada"]]
    );

    env.add(&staff, &users[1]);
    env.sim()
        .update_user(
            &users[0],
            UserPatch {
                job_title: Some(Some("Lead".into())),
                ..Default::default()
            },
        )
        .unwrap();
    d.wait_for(
        || async { env.rows("SELECT COUNT(*) FROM employees WHERE active = 1")[0][0] == "2" },
        "the new member to arrive",
    )
    .await;
    assert_eq!(
        env.rows("SELECT job_title FROM employees WHERE username = 'ada'"),
        vec![vec!["Lead"]]
    );

    // Idle rounds: at most 2 Graph requests each (a round under way at the reset counts in part).
    env.sim().reset_stats();
    let start = runs(&env);
    d.wait_for(|| async { runs(&env) >= start + 2 }, "two idle rounds")
        .await;
    let graph = env.sim().stats().matching("/v1.0/");
    assert!(
        graph <= 4,
        "idle rounds made {graph} Graph requests: {:?}",
        env.sim().stats().by_endpoint
    );
    assert_ne!(
        env.rows(
            "SELECT COUNT(*) FROM sync_runs WHERE mode = 'incremental' AND status = 'success'"
        )[0][0],
        "0"
    );
    let (code, body) = d.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("entra_sync_runs_total"), "{body}");
    assert!(body.contains("entra_sync_graph_requests_total"), "{body}");
    assert!(
        body.contains("entra_sync_last_success_timestamp_seconds"),
        "{body}"
    );
    assert!(!d.log_text().contains(SECRET));
}

#[tokio::test]
async fn sighup_picks_up_a_new_rule_and_a_bad_config_is_rejected() {
    let (mut env, _, users) = staffed().await;
    let customers = env.group("Customers", 2);
    env.add(&customers, &users[1]);
    let d = Daemon::start(&mut env, "").await;
    d.wait_for(|| async { runs(&env) >= 1 }, "the first run")
        .await;
    // A broken config is refused and the old one keeps running.
    std::fs::write(env.config_path(), "this is not toml = = =").unwrap();
    d.signal(Signal::HUP);
    d.wait_for(
        || async { d.log_text().contains("config reload rejected") },
        "the rejection",
    )
    .await;
    let before = runs(&env);
    d.wait_for(
        || async { runs(&env) > before },
        "a run with the old config",
    )
    .await;
    env.contact_rule(&customers, 20, true);
    env.write_config();
    d.signal(Signal::HUP);
    d.wait_for(
        || async { env.rows("SELECT COUNT(*) FROM contacts WHERE active = 1")[0][0] == "1" },
        "the new rule",
    )
    .await;
}

#[tokio::test]
async fn sigterm_stops_promptly_with_exit_0() {
    let (mut env, _, _) = staffed().await;
    let mut d = Daemon::start(&mut env, "").await;
    d.wait_for(|| async { runs(&env) >= 1 }, "the first run")
        .await;
    d.signal(Signal::TERM);
    let status = tokio::time::timeout(Duration::from_secs(10), d.child.wait())
        .await
        .expect("exits promptly")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let check = rusqlite::Connection::open(env.store_path()).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[tokio::test]
async fn post_resync_needs_the_token_when_one_is_configured() {
    let (mut env, _, _) = staffed().await;
    let token_file = env.dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-admin-token\n").unwrap();
    let d = Daemon::start(
        &mut env,
        &format!("token_file = \"{}\"\n", token_file.display()),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/resync?full=true", d.admin);
    let denied = client.post(&url).send().await.unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let wrong = client.post(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let ok = client
        .post(&url)
        .bearer_auth("s3cret-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["exit_code"], 0, "{body}");
    assert_eq!(body["summary"]["tenants"][0]["mode"], "full");
}

#[tokio::test]
async fn post_resync_without_a_token_file_resyncs_one_user() {
    let (mut env, _, _) = staffed().await;
    let d = Daemon::start(&mut env, "").await;
    let r = reqwest::Client::new()
        .post(format!("{}/resync?user=ada@contoso.com", d.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["summary"]["tenants"][0]["mode"], "user", "{body}");
    let missing = reqwest::Client::new()
        .post(format!("{}/resync?user=nobody@contoso.com", d.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test]
async fn a_one_off_sync_while_the_daemon_syncs_waits_its_turn_and_succeeds() {
    let (mut env, staff, users) = staffed().await;
    let d = Daemon::start(&mut env, "").await;
    d.wait_for(|| async { runs(&env) >= 1 }, "the first run")
        .await;
    // Slow the daemon's next round down so the one-off sync meets it mid-run.
    env.sim().inject_fault(Fault::new(
        "/users/delta",
        FaultKind::Delay(Duration::from_millis(1500)),
        1,
    ));
    env.add(&staff, &users[1]);
    let out = env.run(&["sync", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["2"]]
    );
    let check = rusqlite::Connection::open(env.store_path()).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[tokio::test]
async fn healthz_reports_a_failing_tenant() {
    let (mut env, _, _) = staffed().await;
    env.sim()
        .inject_fault(Fault::status("/$batch", 403, None, 1000));
    env.sim()
        .inject_fault(Fault::status("/users/delta", 403, None, 1000));
    env.sync_extra = "reconnect_after_seconds = 1\n".into();
    let d = Daemon::start(&mut env, "").await;
    d.wait_for(
        || async { d.get("/healthz").await.is_some_and(|(code, _)| code == 503) },
        "healthz to report the failure",
    )
    .await;
    let (_, body) = d.get("/healthz").await.unwrap();
    assert!(body.contains("tenant t0") && body.contains("403"), "{body}");
}

#[tokio::test]
async fn a_held_run_makes_healthz_unhealthy_until_resync_allows_it() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let users: Vec<String> = (0..6).map(|i| env.user(&format!("u{i}"))).collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, None);
    env.extra_config = String::new();
    let d = Daemon::start(&mut env, "").await;
    d.wait_for(|| async { runs(&env) >= 1 }, "the first run")
        .await;
    // The default 20 % limit: 3 of 6 leaving is held.
    for u in &users[..3] {
        env.remove(&staff, u);
    }
    d.wait_for(
        || async {
            d.get("/healthz")
                .await
                .is_some_and(|(code, body)| code == 503 && body.contains("held"))
        },
        "healthz to report the hold",
    )
    .await;
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["6"]]
    );
    let r = reqwest::Client::new()
        .post(format!("{}/resync?allow_mass_deactivation=true", d.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
        vec![vec!["3"]]
    );
    d.wait_for(
        || async { d.get("/healthz").await.is_some_and(|(code, _)| code == 200) },
        "healthz to recover",
    )
    .await;
}
