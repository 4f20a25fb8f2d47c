//! The daemon in-process (`Daemon::build` + `run_until_stopped`), driven through its handle:
//! ticks, reloads and the admin routes. With a scripted runner and paused time for the
//! schedule, back-off and health; with the real sync against graph-sim for what reaches the
//! store. Nothing here waits on the wall clock: a test waits for the daemon's rounds, and
//! under paused time a daemon that never finishes one fails the test instead of hanging it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use entra_sync::clock::{Clock, SystemClock};
use entra_sync::config::Config;
use entra_sync::daemon::{Daemon, DaemonHandle, Runner, Schedule};
use entra_sync::sync::{SyncError, SyncOptions, SyncSummary, Syncer, TenantOutcome};
use entra_sync_core::run::{RunMode, RunStatus};
use graph_sim::UserPatch;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

use crate::support::TestEnv;

/// How long a test waits for the daemon under paused time; it only passes when the runtime is
/// idle, which means the daemon is stuck.
const STUCK: Duration = Duration::from_secs(24 * 3600);

/// Runs `daemon` while `test` drives it through its handle, then stops it.
pub async fn with_daemon<R: Runner>(daemon: Daemon<R>, test: impl AsyncFnOnce(DaemonHandle)) {
    let handle = daemon.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    let run = daemon.run_until_stopped(async move {
        let _ = stopped.await;
    });
    let body = async move {
        test(handle).await;
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(run, body);
    result.unwrap();
}

/// Waits until the daemon has finished `n` rounds in all.
pub async fn rounds(handle: &DaemonHandle, n: u64) {
    let mut rounds = handle.rounds();
    tokio::time::timeout(STUCK, rounds.wait_for(|r| *r >= n))
        .await
        .unwrap_or_else(|_| panic!("the daemon never finished round {n}"))
        .unwrap();
}

/// A request through the admin routes as a local tool sends it (`Host: localhost:8650`, the
/// token if given); the status and body.
pub async fn call(
    handle: &DaemonHandle,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", "localhost:8650")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    send(handle, method, uri, &headers).await
}

/// A request through the admin routes with exactly these headers; the status and body.
pub async fn send(
    handle: &DaemonHandle,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = handle
        .admin()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle()
}

pub async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A runner that answers from a script: what each run returns, and a gate that holds runs.
pub struct Script {
    /// The statuses of the next runs, in order; success once it is empty.
    answers: Mutex<VecDeque<RunStatus>>,
    /// Scheduled runs to come that fail before they have a summary (an `Err`).
    pub errors: Mutex<usize>,
    calls: Mutex<Vec<SyncOptions>>,
    reconnects: Mutex<Vec<String>>,
    pub reloads: Mutex<usize>,
    started: watch::Sender<usize>,
    gate: watch::Sender<bool>,
}

impl Script {
    pub fn new(answers: impl IntoIterator<Item = RunStatus>) -> Arc<Script> {
        Arc::new(Script {
            answers: Mutex::new(answers.into_iter().collect()),
            errors: Mutex::new(0),
            calls: Mutex::default(),
            reconnects: Mutex::default(),
            reloads: Mutex::default(),
            started: watch::Sender::new(0),
            gate: watch::Sender::new(true),
        })
    }

    pub fn calls(&self) -> Vec<SyncOptions> {
        self.calls.lock().unwrap().clone()
    }

    fn reconnects(&self) -> Vec<String> {
        self.reconnects.lock().unwrap().clone()
    }

    /// Waits until `n` runs have begun.
    async fn started(&self, n: usize) {
        let mut started = self.started.subscribe();
        tokio::time::timeout(STUCK, started.wait_for(|s| *s >= n))
            .await
            .unwrap()
            .unwrap();
    }
}

pub struct Scripted(pub Arc<Script>);

impl Runner for Scripted {
    async fn run(&self, config: &Config, opts: &SyncOptions) -> Result<SyncSummary, SyncError> {
        let script = &self.0;
        script.calls.lock().unwrap().push(opts.clone());
        script.started.send_modify(|n| *n += 1);
        let mut gate = script.gate.subscribe();
        gate.wait_for(|open| *open).await.unwrap();
        {
            let mut errors = script.errors.lock().unwrap();
            if *errors > 0 && opts.user.is_none() {
                *errors -= 1;
                return Err(SyncError::UnknownTenant("vanished".into()));
            }
        }
        if opts.user.as_deref() == Some("nobody@contoso.com") {
            return Err(SyncError::UnknownUser(
                "nobody@contoso.com".into(),
                "any tenant".into(),
            ));
        }
        let status = script
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(RunStatus::Success);
        let mode = match (&opts.user, opts.full) {
            (Some(_), _) => RunMode::User,
            (None, true) => RunMode::Full,
            (None, false) => RunMode::Incremental,
        };
        let tenants = config
            .tenants
            .iter()
            .filter(|t| opts.tenant.as_ref().is_none_or(|name| *name == t.name))
            .filter(|t| {
                opts.tenants
                    .as_ref()
                    .is_none_or(|names| names.contains(&t.name))
            });
        let mut summary = SyncSummary::default();
        for t in tenants {
            let mut outcome = TenantOutcome::new(&t.name, mode, status);
            if status == RunStatus::Failed {
                outcome.error = Some(format!("tenant \"{}\": Graph answered 503", t.name));
            }
            if status == RunStatus::Held {
                outcome.counts.held = 3;
                outcome.hold_reason = Some("3 deactivations exceed the limit".into());
            }
            summary.tenants.push(outcome);
        }
        Ok(summary)
    }

    fn reconnect(&self, tenant: &str) {
        self.0.reconnects.lock().unwrap().push(tenant.to_string());
    }

    fn reload(&self) {
        *self.0.reloads.lock().unwrap() += 1;
    }

    fn clock(&self) -> &dyn Clock {
        &SystemClock
    }
}

/// The daemon with the real sync, ticked by hand.
async fn real(env: &TestEnv) -> Daemon<Syncer> {
    env.write_config();
    let config = Config::load(&env.config_path()).unwrap();
    Daemon::build(
        config,
        env.config_path(),
        listener().await,
        metrics(),
        Syncer::default(),
        Schedule::Manual,
    )
    .unwrap()
}

pub async fn scripted(env: &TestEnv, script: &Arc<Script>) -> Daemon<Scripted> {
    scripted_on(env, script, listener().await)
}

/// [`scripted`] serving the admin endpoint on `listener`.
pub fn scripted_on(
    env: &TestEnv,
    script: &Arc<Script>,
    listener: tokio::net::TcpListener,
) -> Daemon<Scripted> {
    env.write_config();
    let config = Config::load(&env.config_path()).unwrap();
    Daemon::build(
        config,
        env.config_path(),
        listener,
        metrics(),
        Scripted(Arc::clone(script)),
        Schedule::Manual,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn ticks_arriving_during_a_run_become_one_run_after_it_full_if_any_asked() {
    let env = TestEnv::new().await;
    let script = Script::new([]);
    script.gate.send_replace(false);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        // The first run starts at once and is held at the gate; three ticks arrive meanwhile.
        script.started(1).await;
        for full in [false, true, false] {
            d.tick(full);
        }
        script.gate.send_replace(true);
        rounds(&d, 2).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let fulls: Vec<bool> = script.calls().iter().map(|o| o.full).collect();
        assert_eq!(fulls, [false, true], "one run for three ticks, a full one");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn three_failures_in_a_row_pause_a_tenant_for_the_reconnect_delay_then_it_reconnects() {
    let mut env = TestEnv::new().await;
    env.sync_extra = "reconnect_after_seconds = 120\n".into();
    let script = Script::new([RunStatus::Failed; 3]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        d.tick(false);
        rounds(&d, 2).await;
        assert!(script.reconnects().is_empty(), "two failures: no pause yet");
        d.tick(false);
        rounds(&d, 3).await;
        assert_eq!(
            script.reconnects(),
            ["t0"],
            "the third failure drops the connection"
        );
        assert_eq!(script.calls().len(), 3);

        // Paused: ticks within 120 s run nothing.
        tokio::time::advance(Duration::from_secs(119)).await;
        d.tick(false);
        rounds(&d, 4).await;
        assert_eq!(script.calls().len(), 3, "still waiting out the pause");

        tokio::time::advance(Duration::from_secs(2)).await;
        d.tick(false);
        rounds(&d, 5).await;
        assert_eq!(script.calls().len(), 4, "the pause is over: it runs again");
        assert_eq!(script.reconnects(), ["t0", "t0"], "with a new connection");
        let (code, _) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 200, "recovered");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_tenant_stays_healthy_while_its_last_success_is_recent() {
    let mut env = TestEnv::new().await;
    env.sync_extra = "reconnect_after_seconds = 60\n".into();
    // Success first, then failures: healthy for three reconnect delays (180 s) after it.
    let script = Script::new([RunStatus::Success, RunStatus::Failed, RunStatus::Failed]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        d.tick(false);
        rounds(&d, 2).await;
        let (code, _) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 200, "one failure right after a success");
        tokio::time::advance(Duration::from_secs(181)).await;
        d.tick(false);
        rounds(&d, 3).await;
        let (code, body) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 503);
        assert!(
            body.contains("tenant t0: 2 failed runs in a row") && body.contains("503"),
            "{body}"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_held_run_is_unhealthy_until_a_resync_allows_the_deactivations() {
    let env = TestEnv::new().await;
    let script = Script::new([RunStatus::Held]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let (code, body) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 503);
        assert!(body.contains("3 deactivations held"), "{body}");
        let (code, body) = call(&d, "POST", "/resync?allow_mass_deactivation=true", None).await;
        assert_eq!(code, 200, "{body}");
        assert!(script.calls()[1].allow_mass_deactivation);
        let (code, _) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 200);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn held_deactivations_stay_unhealthy_through_a_failed_run() {
    let env = TestEnv::new().await;
    let script = Script::new([RunStatus::Held, RunStatus::Failed]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        d.tick(false);
        rounds(&d, 2).await;
        let (code, body) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 503);
        assert!(body.contains("3 deactivations held"), "{body}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn post_resync_passes_its_options_and_needs_the_token_when_one_is_set() {
    let mut env = TestEnv::new().await;
    let token_file = env.dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-admin-token\n").unwrap();
    env.extra_config = format!(
        "{}\n[admin]\ntoken_file = \"{}\"\n",
        env.extra_config,
        token_file.display()
    );
    let script = Script::new([]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let url = "/resync?full=true&tenant=t0";
        assert_eq!(call(&d, "POST", url, None).await.0, 401);
        assert_eq!(call(&d, "POST", url, Some("nope")).await.0, 401);
        assert_eq!(script.calls().len(), 1, "refused requests run nothing");
        let (code, body) = call(&d, "POST", url, Some("s3cret-admin-token")).await;
        assert_eq!(code, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["exit_code"], 0);
        assert_eq!(body["summary"]["tenants"][0]["mode"], "full");
        let opts = &script.calls()[1];
        assert!(opts.full && opts.tenant.as_deref() == Some("t0"));

        let (code, body) = call(&d, "POST", "/resync?full=maybe", Some("s3cret-admin-token")).await;
        assert_eq!(code, 400);
        assert!(body.contains("full=maybe"), "{body}");
        let (code, body) = call(
            &d,
            "POST",
            "/resync?user=nobody@contoso.com",
            Some("s3cret-admin-token"),
        )
        .await;
        assert_eq!(code, 404);
        assert!(body.contains("no user matches"), "{body}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_takes_the_new_config_and_a_broken_one_is_rejected() {
    let env = TestEnv::with_tenants(2).await;
    // Only t0 at first.
    let script = Script::new([]);
    let path = env.config_path();
    env.write_config();
    let two = std::fs::read_to_string(&path).unwrap();
    let one = two
        .split("[[tenants]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[tenants]]");
    std::fs::write(&path, &one).unwrap();
    let config = Config::load(&path).unwrap();
    let daemon = Daemon::build(
        config,
        path.clone(),
        listener().await,
        metrics(),
        Scripted(Arc::clone(&script)),
        Schedule::Manual,
    )
    .unwrap();
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        std::fs::write(&path, "this is not toml = = =").unwrap();
        d.reload();
        rounds(&d, 2).await;
        assert_eq!(
            *script.reloads.lock().unwrap(),
            0,
            "rejected: nothing reconnects"
        );
        d.tick(false);
        rounds(&d, 3).await;
        let tenants: Vec<_> = script.calls().iter().map(|o| o.tenants.clone()).collect();
        assert_eq!(
            tenants,
            [Some(vec!["t0".to_string()]), Some(vec!["t0".to_string()])],
            "the old config runs on"
        );

        std::fs::write(&path, &two).unwrap();
        d.reload();
        rounds(&d, 4).await;
        assert_eq!(*script.reloads.lock().unwrap(), 1);
        d.tick(false);
        rounds(&d, 5).await;
        let last: Vec<_> = script.calls()[2..]
            .iter()
            .map(|o| o.tenants.clone())
            .collect();
        assert_eq!(
            last,
            [Some(vec!["t0".to_string(), "t1".to_string()])],
            "one run of both tenants"
        );
        let (_, status) = call(&d, "GET", "/status", None).await;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(
            status["tenants"]["t1"]["last_status"], "success",
            "{status}"
        );
    })
    .await;
}

/// The real sync in the daemon, against graph-sim: what reaches the store, and what an idle
/// round costs. Real time (Graph and SQLite are real), but no waiting for a schedule.
#[tokio::test]
async fn a_change_reaches_the_store_with_the_next_tick_and_an_idle_tick_costs_two_requests() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let users: Vec<String> = ["ada", "bob"].iter().map(|u| env.user(u)).collect();
    env.add(&staff, &users[0]);
    env.employee_rule(&staff, 10, Some("Tech"));
    let daemon = real(&env).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
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
        d.tick(false);
        rounds(&d, 2).await;
        assert_eq!(
            env.rows("SELECT username, job_title FROM employees ORDER BY 1"),
            vec![vec!["ada", "Lead"], vec!["bob", "Engineer"]]
        );

        env.sim().reset_stats();
        d.tick(false);
        rounds(&d, 3).await;
        assert_eq!(
            env.sim().stats().matching("/v1.0/"),
            2,
            "an idle round: users delta and groups delta, {:?}",
            env.sim().stats().by_endpoint
        );
        assert_eq!(
            env.rows("SELECT mode, status FROM sync_runs ORDER BY id DESC LIMIT 1"),
            vec![vec!["incremental", "success"]]
        );
        let (code, body) = call(&d, "GET", "/healthz", None).await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));

        // Support resyncs one person through the endpoint.
        let (code, body) = call(&d, "POST", "/resync?user=ada@contoso.com", None).await;
        assert_eq!(code, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["summary"]["tenants"][0]["mode"], "user", "{body}");
        let (code, body) = call(&d, "POST", "/resync?user=nobody@contoso.com", None).await;
        assert_eq!(code, 404, "{body}");
    })
    .await;
}

#[tokio::test]
async fn a_held_real_run_keeps_every_record_until_a_resync_allows_it() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let users: Vec<String> = (0..6).map(|i| env.user(&format!("u{i}"))).collect();
    for u in &users {
        env.add(&staff, u);
    }
    env.employee_rule(&staff, 10, None);
    // The default 20 % limit: 3 of 6 leaving is held.
    env.extra_config = String::new();
    let daemon = real(&env).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        for u in &users[..3] {
            env.remove(&staff, u);
        }
        d.tick(false);
        rounds(&d, 2).await;
        let (code, body) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 503);
        assert!(body.contains("held"), "{body}");
        assert_eq!(
            env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
            vec![vec!["6"]]
        );
        let (code, _) = call(&d, "POST", "/resync?allow_mass_deactivation=true", None).await;
        assert_eq!(code, 200);
        assert_eq!(
            env.rows("SELECT COUNT(*) FROM employees WHERE active = 1"),
            vec![vec!["3"]]
        );
        assert_eq!(call(&d, "GET", "/healthz", None).await.0, 200);
    })
    .await;
}

/// `GET /explain` answers what `entra-sync explain --json` does, through the daemon's worker.
#[tokio::test]
async fn get_explain_answers_why_a_person_is_what_the_store_says() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&staff, &ada);
    env.employee_rule(&staff, 10, None);
    let daemon = real(&env).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let (code, body) = call(&d, "GET", "/explain?user=ada@contoso.com", None).await;
        assert_eq!(code, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let e = &answer["tenants"][0]["explanations"][0];
        assert_eq!(e["scope"], "in_scope", "{body}");
        assert_eq!(e["mapping"]["how"], "linked", "{body}");
        assert_eq!(e["rules"][0]["winner"], true, "{body}");
        let (code, body) = call(&d, "GET", "/explain?user=nobody@contoso.com", None).await;
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("no user matches"), "{body}");
        let (code, _) = call(&d, "GET", "/explain", None).await;
        assert_eq!(code, 400);
        assert_eq!(call(&d, "GET", "/healthz", None).await.0, 200);
    })
    .await;
}

/// `GET /changes` answers what `entra-sync changes --json` does, with the same filters.
#[tokio::test]
async fn get_changes_answers_the_change_log_as_json() {
    let mut env = TestEnv::new().await;
    let staff = env.group("Staff", 1);
    let ada = env.user("ada");
    let bob = env.user("bob");
    env.add(&staff, &ada);
    env.add(&staff, &bob);
    env.employee_rule(&staff, 10, None);
    let daemon = real(&env).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let (code, body) = call(&d, "GET", "/changes?user=ada@contoso.com", None).await;
        assert_eq!(code, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        assert_eq!(list[0]["action"], "create");
        assert_eq!(list[0]["email"], "ada@contoso.com");
        let (code, body) = call(&d, "GET", "/changes?limit=1", None).await;
        assert_eq!(code, 200);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let (code, body) = call(&d, "GET", "/changes?since=yesterday", None).await;
        assert_eq!(code, 400);
        assert!(body.contains("since=yesterday"), "{body}");
    })
    .await;
}
