//! `entra-sync run` as systemd runs it: a child process with a notify socket, signalled, read
//! through its log, its admin endpoint and the store. Only what needs a process is here
//! (signals, systemd notify, the global metrics recorder, the cross-process writer lock); the
//! daemon's logic is tested in-process in `daemon.rs`. Each step waits for the event that
//! shows it happened (a notify message, a log line), never for a fixed time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use graph_sim::{Fault, FaultKind};
use rustix::process::{Pid, Signal, kill_process};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixDatagram;
use tokio::process::Child;
use tokio::sync::Notify;

use crate::support::{SECRET, TestEnv};

/// What a step waits for at most: only reached when the daemon is broken.
const PATIENCE: Duration = Duration::from_secs(30);

/// Lines or messages as they arrive, and a wake-up for whoever waits for one.
#[derive(Default)]
struct Feed {
    items: Mutex<Vec<String>>,
    arrived: Notify,
}

impl Feed {
    fn push(&self, item: String) {
        self.items.lock().unwrap().push(item);
        self.arrived.notify_waiters();
    }

    fn all(&self) -> Vec<String> {
        self.items.lock().unwrap().clone()
    }

    /// Waits for an item after the first `from` that matches, and returns its index.
    async fn wait(&self, from: usize, what: &str, matches: impl Fn(&str) -> bool) -> usize {
        let found = async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(i) = self.all().iter().skip(from).position(|l| matches(l)) {
                    return from + i;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(PATIENCE, found)
            .await
            .unwrap_or_else(|_| panic!("no {what}; got:\n{}", self.all().join("\n")))
    }
}

struct Service {
    child: Child,
    admin: String,
    log: Arc<Feed>,
    notes: Arc<Feed>,
    _socket_dir: tempfile::TempDir,
}

impl Service {
    async fn start(env: &mut TestEnv, extra: &str) -> Service {
        env.extra_config = format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            env.extra_config
        );
        env.write_config();
        let socket_dir = tempfile::tempdir().unwrap();
        let socket_path = socket_dir.path().join("notify");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .arg("--config")
            .arg(env.config_path())
            .arg("run")
            .env("RUST_LOG", "info,entra_sync=debug")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2000000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Feed::default());
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let feed = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                feed.push(line);
            }
        });
        let notes = Arc::new(Feed::default());
        let feed = Arc::clone(&notes);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                feed.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        let running = log
            .wait(0, "start-up line", |l| l.contains("entra-sync running"))
            .await;
        let line = &log.all()[running];
        let addr = line
            .split("admin=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no admin address in {line}"))
            .to_string();
        Service {
            child,
            admin: format!("http://{addr}"),
            log,
            notes,
            _socket_dir: socket_dir,
        }
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.child.id().unwrap() as i32).unwrap();
        kill_process(pid, sig).unwrap();
    }

    async fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or_default())
    }

    /// Waits for the log line of a finished tenant run after the first `from` lines.
    async fn run_finished(&self, from: usize) -> usize {
        self.log
            .wait(from, "finished run", |l| l.contains("sync finished"))
            .await
    }
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
async fn systemd_hears_ready_status_watchdog_and_the_metrics_are_served() {
    let (mut env, _, _) = staffed().await;
    // The cron schedule itself: a tick every second.
    env.extra_config = format!(
        "{}\n[schedule]\nsync = \"*/1 * * * * *\"\n",
        env.extra_config
    );
    let s = Service::start(&mut env, "").await;
    s.notes.wait(0, "READY=1", |m| m.contains("READY=1")).await;
    s.notes
        .wait(0, "STATUS after the first run", |m| {
            m.contains("STATUS=t0: success")
        })
        .await;
    s.notes
        .wait(0, "WATCHDOG=1", |m| m.contains("WATCHDOG=1"))
        .await;
    let body = reqwest::get(format!("{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "entra_sync_runs_total",
        "entra_sync_graph_requests_total",
        "entra_sync_last_success_timestamp_seconds",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    // The first run at start-up, then the schedule's.
    let first = s.run_finished(0).await;
    let second = s.run_finished(first + 1).await;
    s.run_finished(second + 1).await;
    assert!(!s.log.all().join("\n").contains(SECRET));
}

#[tokio::test]
async fn sighup_picks_up_a_new_rule_and_a_bad_config_is_rejected() {
    let (mut env, _, users) = staffed().await;
    let customers = env.group("Customers", 2);
    env.add(&customers, &users[1]);
    let s = Service::start(&mut env, "").await;
    let ready = s.notes.wait(0, "READY=1", |m| m.contains("READY=1")).await;
    let first = s.run_finished(0).await;

    // A broken config is refused and the old one keeps running.
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(env.config_path(), "this is not toml = = =").unwrap();
    s.signal(Signal::HUP);
    let reloading = s
        .notes
        .wait(ready + 1, "RELOADING=1", |m| m.contains("RELOADING=1"))
        .await;
    s.notes
        .wait(reloading + 1, "READY=1 after the reload", |m| {
            m.contains("READY=1")
        })
        .await;
    s.log
        .wait(first, "the rejection", |l| {
            l.contains("config reload rejected")
        })
        .await;
    let (code, body) = s.post("/resync").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["exit_code"], 0, "{body}");

    // A good one with a new rule is taken.
    std::fs::write(env.config_path(), good).unwrap();
    env.contact_rule(&customers, 20, true);
    env.write_config();
    let from = s.notes.all().len();
    s.signal(Signal::HUP);
    let reloading = s
        .notes
        .wait(from, "RELOADING=1", |m| m.contains("RELOADING=1"))
        .await;
    s.notes
        .wait(reloading + 1, "READY=1 after the reload", |m| {
            m.contains("READY=1")
        })
        .await;
    let (code, body) = s.post("/resync").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        env.rows("SELECT email FROM contacts WHERE active = 1"),
        vec![vec!["bob@contoso.com"]]
    );
}

#[tokio::test]
async fn sigterm_stops_promptly_with_exit_0_and_an_intact_store() {
    let (mut env, _, _) = staffed().await;
    let mut s = Service::start(&mut env, "").await;
    s.run_finished(0).await;
    s.signal(Signal::TERM);
    let status = tokio::time::timeout(PATIENCE, s.child.wait())
        .await
        .expect("exits promptly")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    s.notes
        .wait(0, "STOPPING=1", |m| m.contains("STOPPING=1"))
        .await;
    let check = rusqlite::Connection::open(env.store_path()).unwrap();
    let ok: String = check
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[tokio::test]
async fn a_one_off_sync_while_the_daemon_syncs_waits_its_turn_and_succeeds() {
    let (mut env, staff, users) = staffed().await;
    let s = Service::start(&mut env, "").await;
    let first = s.run_finished(0).await;
    // The daemon's next round is held up in Graph while the one-off sync starts.
    env.sim().inject_fault(Fault::new(
        "/users/delta",
        FaultKind::Delay(Duration::from_millis(1500)),
        1,
    ));
    env.add(&staff, &users[1]);
    let resync = tokio::spawn({
        let admin = s.admin.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{admin}/resync"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    s.log
        .wait(first, "the daemon's run under way", |l| {
            l.contains("writer lock taken")
        })
        .await;
    let out = env.run(&["sync", "--json"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(resync.await.unwrap().unwrap(), 200);
    s.run_finished(first + 1).await;
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
