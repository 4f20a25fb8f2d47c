//! Trust boundaries against Graph (SPEC 5.8): hostile answers never send the token elsewhere,
//! never reach a URL with an id that is not a GUID, never make the process panic; certificate
//! credentials sign in for real against graph-sim's check of the assertion.

use std::sync::{Arc, Mutex};

use entra_sync::clock::Clock;
use graph_sim::{Fault, FaultKind, SimCertificate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{TestEnv, tenant};

/// A server that stands for another host: it records every request it gets (the bearer
/// token would be in them) and answers an empty delta page.
struct Elsewhere {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Elsewhere {
    async fn start() -> Elsewhere {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 16384];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let body = r#"{"value":[],"@odata.deltaLink":"http://127.0.0.1:9/x"}"#;
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        Elsewhere { base, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A "Graph" that answers every request with `307` to `location` (a hostile or hijacked
/// answer).
async fn redirector(location: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16384];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    base
}

/// One employee rule with one member.
fn scenario(env: &mut TestEnv) {
    let g = env.group("Staff", 1);
    let ada = env.user("ada");
    env.add(&g, &ada);
    env.employee_rule(&g, 10, None);
}

#[tokio::test]
async fn a_delta_link_to_another_host_fails_the_run_and_the_token_never_goes_there() {
    let mut env = TestEnv::new().await;
    scenario(&mut env);
    let elsewhere = Elsewhere::start().await;
    let sim = env.sims[0].base_url();
    let port = elsewhere.base.rsplit(':').next().unwrap().to_string();
    // `http://127.0.0.1:SIM@127.0.0.1:OTHER/…` starts with graph_url but is another host.
    let hostile = [
        format!("{sim}@127.0.0.1:{port}"),
        elsewhere.base.clone(),
        format!("http://localhost:{port}"),
    ];
    for link in hostile {
        env.sim().inject_fault(Fault::new(
            "/users/delta",
            FaultKind::Tamper {
                find: format!("{sim}/v1.0/users/delta"),
                replace: format!("{link}/v1.0/users/delta"),
            },
            1,
        ));
        let out = env.run(&["sync", "--full"]).await;
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("outside graph_url") && out.stderr.contains("sync --full"),
            "{}",
            out.stderr
        );
        env.sim().clear_faults();
        // Nothing of the refused round was stored: the next incremental run has no cursor
        // to follow there, and does a full read from graph_url instead.
        let s = env.sync_ok(&[]).await;
        assert_eq!(tenant(&s, "t0")["status"], "success");
    }
    assert!(
        elsewhere.requests().is_empty(),
        "the other host got requests: {:?}",
        elsewhere.requests()
    );
}

/// A redirect would skip the link check (and could carry a POST to the admin port).
#[tokio::test]
async fn a_redirect_from_graph_is_not_followed() {
    let mut env = TestEnv::new().await;
    scenario(&mut env);
    let elsewhere = Elsewhere::start().await;
    env.graph_url = Some(
        redirector(format!(
            "{}/resync?allow_mass_deactivation=true",
            elsewhere.base
        ))
        .await,
    );
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("307"), "{}", out.stderr);
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
}

/// A token endpoint that says its token lives for ever (`expires_in` = 2^64 - 1) is believed
/// for a day, not allowed to overflow the clock.
#[tokio::test]
async fn an_access_token_lifetime_past_any_clock_is_no_panic() {
    let mut env = TestEnv::with_options(1, |o| {
        o.token_lifetime = std::time::Duration::from_secs(u64::MAX);
    })
    .await;
    scenario(&mut env);
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["created"], 1);
}

#[tokio::test]
async fn a_stored_cursor_to_another_host_fails_incremental_runs_until_a_full_sync() {
    let mut env = TestEnv::new().await;
    scenario(&mut env);
    env.sync_ok(&[]).await;
    let elsewhere = Elsewhere::start().await;
    let sim = env.sims[0].base_url();
    env.exec(&format!(
        "UPDATE delta_cursors SET link = replace(link, '{sim}', '{sim}.evil.example')"
    ));
    env.exec(&format!(
        "UPDATE delta_cursors SET link = replace(link, '{sim}.evil.example/v1.0/users', '{}/v1.0/users')",
        elsewhere.base
    ));
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("outside graph_url"), "{}", out.stderr);
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    // `sync --full` starts over from graph_url and replaces the cursors.
    env.sync_ok(&["--full"]).await;
    let s = env.sync_ok(&[]).await;
    assert_eq!(tenant(&s, "t0")["mode"], "incremental");
    assert!(elsewhere.requests().is_empty());
}

#[tokio::test]
async fn a_member_id_that_is_not_a_guid_never_reaches_a_url() {
    let mut env = TestEnv::new().await;
    let outer = env.group("Outer", 1);
    let inner = env.group("Inner", 2);
    let ada = env.user("ada");
    env.add(&outer, &inner);
    env.add(&inner, &ada);
    env.employee_rule(&outer, 10, None);
    let hostile = "x/../../../users/someone?$select=signInActivity#";
    env.sim().inject_fault(Fault::new(
        &outer,
        FaultKind::Tamper {
            find: inner.clone(),
            replace: hostile.into(),
        },
        100,
    ));
    env.sim().reset_stats();
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("GUID"), "{}", out.stderr);
    let stats = env.sim().stats();
    let asked: Vec<&String> = stats
        .by_endpoint
        .keys()
        .chain(stats.batch_items.keys())
        .filter(|k| k.contains("/users/{id}") || k.contains("signInActivity"))
        .collect();
    assert!(asked.is_empty(), "a hostile id reached a URL: {asked:?}");
    assert_eq!(env.rows("SELECT COUNT(*) FROM employees"), vec![vec!["0"]]);
}

#[tokio::test]
async fn a_retry_after_too_long_for_any_clock_fails_the_run_cleanly() {
    let mut env = TestEnv::new().await;
    scenario(&mut env);
    // On a request, then on a `$batch` item (the rule groups are read in one batch).
    for path in ["/members", "createdDateTime"] {
        env.sim().inject_fault(Fault::throttle(path, "1e300", 1));
        let out = env.run(&["sync", "--full"]).await;
        assert_eq!(
            out.code, 1,
            "{path}: no panic (101), a failed run\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("max_retry_wait_seconds"),
            "{path}: {}",
            out.stderr
        );
        env.sim().clear_faults();
    }
    // A Retry-After within sync.max_retry_wait_seconds is waited for.
    env.sync_extra = "max_retry_wait_seconds = 1\n".into();
    env.sim()
        .inject_fault(Fault::throttle("/members", "0.2", 1));
    env.sync_ok(&["--full"]).await;
    env.sim().inject_fault(Fault::throttle("/members", "2", 1));
    let out = env.run(&["sync", "--full"]).await;
    assert_eq!(out.code, 1, "2 s is over the 1 s limit");
}

const APP_PEM: &str = include_str!("../../crates/graph-sim/test-certs/app.pem");
const APP_CRT: &str = include_str!("../../crates/graph-sim/test-certs/app.crt");
const OTHER_PEM: &str = include_str!("../../crates/graph-sim/test-certs/unregistered.pem");

/// A tenant whose app has `app.crt` registered until `end`, signing in with the PEM `pem`.
async fn certificate_env(end: Option<chrono::DateTime<chrono::Utc>>, pem: &str) -> TestEnv {
    let mut env = TestEnv::with_options(1, |o| {
        o.certificates = vec![SimCertificate {
            pem: APP_CRT.into(),
            end,
        }];
    })
    .await;
    let file = env.dir.path().join("app.pem");
    std::fs::write(&file, pem).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // A relative name is read beside the config.
    env.credential = Some("client_certificate_file = \"app.pem\"".into());
    scenario(&mut env);
    env
}

/// (`TestEnv::run` checks that no key, assertion or token reaches any output.)
#[tokio::test]
async fn a_certificate_signs_in_and_syncs() {
    let env = certificate_env(None, APP_PEM).await;
    let out = env.run(&["sync", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(tenant(&out.json(), "t0")["created"], 1);
    let out = env.run(&["check"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}

#[tokio::test]
async fn an_unregistered_or_expired_certificate_is_one_clear_error() {
    let env = certificate_env(None, OTHER_PEM).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("AADSTS700027")
            && out.stderr.contains("is not registered on app")
            && out.stderr.contains("Certificates & secrets"),
        "{}",
        out.stderr
    );
    let yesterday = entra_sync::clock::SystemClock.now() - chrono::Duration::days(1);
    let env = certificate_env(Some(yesterday), APP_PEM).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("AADSTS700027") && out.stderr.contains("expired"),
        "{}",
        out.stderr
    );
    assert_eq!(env.rows("SELECT COUNT(*) FROM employees"), vec![vec!["0"]]);
}

#[tokio::test]
async fn a_certificate_file_without_its_key_is_a_config_error() {
    let env = certificate_env(None, APP_CRT).await;
    let out = env.run(&["sync"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("tenants[0].client_certificate_file")
            && out.stderr.contains("no private key"),
        "{}",
        out.stderr
    );
}
