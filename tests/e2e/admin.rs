//! The admin endpoint as an attacker on the same machine or a web page in the operator's
//! browser would meet it (SPEC 5.8): `Host` names, other origins, the token, idle and slow
//! connections, and random requests. Over real sockets where the transport matters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use entra_sync::admin::Limits;
use entra_sync::daemon::Daemon;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::{
    Script, Scripted, call, listener, rounds, scripted, scripted_on, send, with_daemon,
};
use crate::support::TestEnv;

const TOKEN: &str = "s3cret-admin-token-0123456789";

/// `env` with `admin.token_file` set to [`TOKEN`] and `extra` more `[admin]` keys.
fn with_token(env: &mut TestEnv, extra: &str) {
    let file = env.dir.path().join("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    env.extra_config = format!(
        "{}\n[admin]\ntoken_file = \"{}\"\n{extra}\n",
        env.extra_config,
        file.display()
    );
}

#[tokio::test(start_paused = true)]
async fn only_names_of_the_endpoint_are_answered_so_dns_rebinding_reaches_nothing() {
    let mut env = TestEnv::new().await;
    env.extra_config = format!(
        "{}\n[admin]\nallowed_hosts = [\"Sync.Example.Internal\"]\n",
        env.extra_config
    );
    let script = Script::new([]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        for host in [
            "localhost:8650",
            "127.0.0.1:8650",
            "127.0.0.2",
            "[::1]:8650",
            "sync.example.internal:8650",
            "SYNC.EXAMPLE.INTERNAL.",
        ] {
            let (code, body) = send(&d, "GET", "/status", &[("host", host)]).await;
            assert_eq!(code, 200, "{host}: {body}");
        }
        // A page on evil.example whose name now resolves to 127.0.0.1.
        for host in [
            "evil.example:8650",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "sync.example.internal.evil.example",
            "10.0.0.1:8650",
        ] {
            let (code, body) = send(&d, "GET", "/status", &[("host", host)]).await;
            assert_eq!(code, 421, "{host}: {body}");
            assert!(body.contains("admin.allowed_hosts"), "{body}");
            let (code, _) = send(&d, "POST", "/resync?full=true", &[("host", host)]).await;
            assert_eq!(code, 421, "{host}");
        }
        assert_eq!(send(&d, "GET", "/healthz", &[]).await.0, 400, "no Host");
        assert_eq!(script.calls().len(), 1, "only the start-up run ran");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_post_from_a_web_page_of_another_origin_runs_nothing() {
    let env = TestEnv::new().await;
    let script = Script::new([]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let url = "/resync?full=true&allow_mass_deactivation=true";
        let host = ("host", "127.0.0.1:8650");
        for refused in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://127.0.0.1.evil.example:8650")],
            // Another local web application (a dev server) on another port.
            vec![host, ("origin", "http://127.0.0.1:3000")],
            vec![
                ("host", "localhost:8650"),
                ("origin", "http://localhost:3000"),
            ],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![
                host,
                ("sec-fetch-site", "same-site"),
                ("origin", "http://localhost:8650"),
            ],
        ] {
            let (code, body) = send(&d, "POST", url, &refused).await;
            assert_eq!(code, 403, "{refused:?}: {body}");
        }
        assert_eq!(script.calls().len(), 1, "no refused request ran a sync");
        // curl (no Origin) and a page of the endpoint itself are fine.
        assert_eq!(send(&d, "POST", url, &[host]).await.0, 200);
        let own = [
            host,
            ("origin", "http://127.0.0.1:8650"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(send(&d, "POST", url, &own).await.0, 200);
        assert_eq!(script.calls().len(), 3);
        // `GET /explain` makes the daemon read Graph: an <img> on another site may not.
        let explain = "/explain?user=ada@contoso.com";
        for refused in [
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("origin", "http://evil.example")],
        ] {
            let (code, body) = send(&d, "GET", explain, &refused).await;
            assert_eq!(code, 403, "{refused:?}: {body}");
        }
        assert_eq!(script.calls().len(), 3, "no refused explain ran");
        assert_eq!(
            send(
                &d,
                "GET",
                "/status",
                &[host, ("sec-fetch-site", "cross-site")]
            )
            .await
            .0,
            200,
            "reading state stays open to the same rules as before"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn with_a_token_set_status_and_resync_need_it_and_probes_do_not() {
    let mut env = TestEnv::new().await;
    with_token(&mut env, "");
    let script = Script::new([]);
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        for (method, path) in [
            ("GET", "/status"),
            ("POST", "/resync"),
            ("GET", "/explain?user=ada"),
            ("GET", "/changes"),
        ] {
            let (code, body) = call(&d, method, path, None).await;
            assert_eq!(code, 401, "{path}: {body}");
            assert!(
                !body.contains("t0"),
                "no tenant names without the token: {body}"
            );
            assert_eq!(call(&d, method, path, Some("wrong")).await.0, 401);
        }
        let (code, body) = call(&d, "GET", "/status", Some(TOKEN)).await;
        assert_eq!(code, 200);
        assert!(body.contains("t0"), "{body}");
        assert_eq!(call(&d, "GET", "/healthz", None).await.0, 200);
        assert_eq!(call(&d, "GET", "/metrics", None).await.0, 200);
        assert_eq!(script.calls().len(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_run_that_fails_before_its_summary_makes_the_tenant_unhealthy() {
    let env = TestEnv::new().await;
    let script = Script::new([]);
    *script.errors.lock().unwrap() = 1;
    let daemon = scripted(&env, &script).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let (code, body) = call(&d, "GET", "/healthz", None).await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("tenant t0") && body.contains("vanished"),
            "{body}"
        );
        d.tick(false);
        rounds(&d, 2).await;
        assert_eq!(call(&d, "GET", "/healthz", None).await.0, 200);
    })
    .await;
}

/// The daemon serving on a real socket within `limits`; its address.
async fn on_socket(
    env: &TestEnv,
    script: &Arc<Script>,
    limits: Limits,
) -> (Daemon<Scripted>, SocketAddr) {
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    (
        scripted_on(env, script, listener).with_admin_limits(limits),
        addr,
    )
}

/// Whether the server closed `stream` within `wait` (EOF or reset, after any answer).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `request` on a new connection; the status of the answer (0 for none).
async fn raw(addr: SocketAddr, request: &[u8]) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    if stream.write_all(request).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The socket stays bound until a restart: a reload may not drop the token it needs there.
#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_an_endpoint_off_loopback() {
    let mut env = TestEnv::new().await;
    with_token(&mut env, "listen = \"0.0.0.0:0\"");
    let script = Script::new([]);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let daemon = scripted_on(&env, &script, listener);
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        // The operator moves listen to loopback and drops the token in the same edit.
        let text = std::fs::read_to_string(env.config_path()).unwrap();
        let text = text
            .lines()
            .filter(|l| !l.starts_with("token_file") && !l.starts_with("listen"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(env.config_path(), text).unwrap();
        d.reload();
        rounds(&d, 2).await;
        assert_eq!(*script.reloads.lock().unwrap(), 0, "the reload was refused");
        assert_eq!(
            call(&d, "GET", "/status", None).await.0,
            401,
            "the token still holds"
        );
        assert_eq!(call(&d, "GET", "/status", Some(TOKEN)).await.0, 200);
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout_and_their_number_is_bounded() {
    let env = TestEnv::new().await;
    let script = Script::new([]);
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        max_connections: 4,
    };
    let (daemon, addr) = on_socket(&env, &script, limits).await;
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut closed_at_once = 0;
        for stream in &mut idle {
            if closed_within(stream, Duration::from_millis(200)).await {
                closed_at_once += 1;
            }
        }
        assert!(
            closed_at_once >= 16,
            "at most 4 held, the others closed at once: {closed_at_once} closed"
        );
        for (i, stream) in idle.iter_mut().enumerate() {
            assert!(
                closed_within(stream, Duration::from_secs(5)).await,
                "idle connection {i} still open after the header timeout"
            );
        }
        assert_eq!(raw(addr, &get("/healthz")).await, 200, "serves again");
    })
    .await;
}

#[tokio::test]
async fn random_requests_never_panic_and_never_run_a_sync_without_the_token() {
    let mut env = TestEnv::new().await;
    with_token(&mut env, "");
    let script = Script::new([]);
    let limits = Limits {
        header_timeout: Duration::from_millis(800),
        max_connections: 16,
    };
    let (daemon, addr) = on_socket(&env, &script, limits).await;
    let seed: u64 = std::env::var("ENTRA_SYNC_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("admin fuzz seed {seed} (ENTRA_SYNC_FUZZ_SEED={seed} to replay)");
    with_daemon(daemon, async |d| {
        rounds(&d, 1).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FOO", "", "GET GET"];
        let paths = [
            "/resync", "/status", "/healthz", "/metrics", "/", "/resync/", "//resync", "/resync/../status",
            "/%2e%2e/resync", "/RESYNC", "/resync%00", "*", "http://localhost/resync", "/explain", "/changes",
        ];
        let queries = [
            "", "?full=true", "?allow_mass_deactivation=true&full=1", "?tenant=t0&user=%00",
            "?full=maybe", "?user=x&user=y", "?%zz", "?tenant=../../etc/passwd",
        ];
        let auths = [
            None, Some("Bearer wrong".to_string()), Some(format!("bearer {TOKEN}")),
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])), Some(format!("Bearer {TOKEN}x")),
            Some(format!("Basic {TOKEN}")), Some("Bearer ".to_string()), Some(format!("Bearer  {TOKEN}")),
        ];
        let hosts = ["localhost", "127.0.0.1:1", "evil.example", "", "[::1]", "localhost:99999999"];
        let mut tasks = Vec::new();
        for i in 0..300 {
            let method = methods[rng.gen_range(0..methods.len())];
            let mut path = paths[rng.gen_range(0..paths.len())].to_string();
            path.push_str(queries[rng.gen_range(0..queries.len())]);
            if rng.gen_bool(0.05) {
                path.push_str(&"a".repeat(rng.gen_range(1..200_000)));
            }
            let mut head = format!("{method} {path} HTTP/1.{}\r\n", rng.gen_range(0..2));
            if rng.gen_bool(0.9) {
                head.push_str(&format!("Host: {}\r\n", hosts[rng.gen_range(0..hosts.len())]));
            }
            if let Some(auth) = &auths[rng.gen_range(0..auths.len())] {
                head.push_str(&format!("Authorization: {auth}\r\n"));
            }
            if rng.gen_bool(0.2) {
                head.push_str("Origin: http://evil.example\r\n");
            }
            if rng.gen_bool(0.05) {
                head.push_str(&format!("X-Big: {}\r\n", "b".repeat(rng.gen_range(1..300_000))));
            }
            let body_len = if rng.gen_bool(0.2) { rng.gen_range(0..5000) } else { 0 };
            if rng.gen_bool(0.5) {
                head.push_str(&format!("Content-Length: {}\r\n", body_len + rng.gen_range(0..3)));
            }
            head.push_str("Connection: close\r\n\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend((0..body_len).map(|_| rng.r#gen::<u8>()));
            if rng.gen_bool(0.05) {
                bytes = (0..rng.gen_range(1..2000)).map(|_| rng.r#gen::<u8>()).collect();
            }
            let slow = rng.gen_bool(0.05);
            let cut = rng.gen_bool(0.05).then(|| rng.gen_range(0..bytes.len().max(1)));
            tasks.push(tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    return;
                };
                let bytes = match cut {
                    Some(n) => &bytes[..n.min(bytes.len())],
                    None => &bytes[..],
                };
                if slow {
                    // A byte at a time, slower than the header timeout allows.
                    for b in bytes.iter().take(50) {
                        if stream.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } else {
                    let _ = stream.write_all(bytes).await;
                }
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
            }));
            if i % 16 == 15 {
                for t in tasks.drain(..) {
                    t.await.unwrap();
                }
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(script.calls().len(), 1, "no request without the token ran a sync");
        assert_eq!(raw(addr, &get("/healthz")).await, 200, "still serving");
        let authorized = format!(
            "POST /resync HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(raw(addr, authorized.as_bytes()).await, 200);
        assert_eq!(script.calls().len(), 2, "the token still works");
    })
    .await;
}
