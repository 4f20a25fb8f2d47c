//! The daemon's admin endpoint (axum, loopback by default): `GET /healthz`, `GET /status`,
//! `GET /metrics` (Prometheus text from the `metrics` recorder), `GET /changes`, `GET /explain`
//! and `POST /resync`.
//!
//! Owns what it serves ([`AdminState`]), the resync requests it hands to the daemon's worker
//! ([`ResyncRequest`]) and its trust boundary (SPEC 5.8): only `Host` names it is known by (no
//! DNS rebinding), no `POST` from a browser page of another origin, the bearer token from
//! `admin.token_file` on everything but `/healthz` and `/metrics`, a 30 s limit to send a
//! request and a cap on the connections it holds ([`Limits`]). It never runs a sync itself and
//! never returns a secret.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::clock::Instant;
use crate::config::Config;
use crate::health::Health;
use crate::secret::Secret;
use crate::store::Store;
use crate::sync::{SyncError, SyncOptions, SyncSummary};

/// A resync the endpoint asks the worker for; the caller waits for its summary.
pub struct ResyncRequest {
    pub opts: SyncOptions,
    pub reply: oneshot::Sender<Result<SyncSummary, SyncError>>,
}

/// What the endpoint reads (and the daemon keeps current).
pub struct AdminState {
    config: RwLock<Arc<Config>>,
    token: RwLock<Option<Secret>>,
    pub health: Arc<Health>,
    pub resync: mpsc::Sender<ResyncRequest>,
    pub metrics: PrometheusHandle,
}

impl AdminState {
    pub fn new(
        config: Arc<Config>,
        token: Option<Secret>,
        health: Arc<Health>,
        resync: mpsc::Sender<ResyncRequest>,
        metrics: PrometheusHandle,
    ) -> AdminState {
        AdminState {
            config: RwLock::new(config),
            token: RwLock::new(token),
            health,
            resync,
            metrics,
        }
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// After a reload: the new config and admin token.
    pub fn replace(&self, config: Arc<Config>, token: Option<Secret>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    fn token(&self) -> Option<Secret> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The health verdict now: a failed tenant stays healthy while its last success is more
    /// recent than three reconnect delays (at least three minutes).
    pub fn verdict(&self) -> Result<(), Vec<String>> {
        let config = self.config();
        let grace = Duration::from_secs(config.sync.reconnect_after_seconds.max(60) * 3);
        self.health.verdict(Instant::now(), grace)
    }
}

/// The endpoint's routes behind its guard, for [`serve`] or for a test to call directly.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/resync", post(resync))
        .route("/changes", get(changes))
        .route("/explain", get(explain))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
        .with_state(state)
}

/// Routes anyone who can reach the port may read (probes and scrapers); everything else needs
/// the token when one is set.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/metrics"];

fn refuse(status: StatusCode, text: String) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// The host part of a `Host` header or an `Origin`'s authority, lower-case, without port.
fn host_name(authority: &str) -> &str {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

impl AdminState {
    /// Whether `host` (no port) is a name this endpoint is known by: its listen address, a
    /// loopback address, `localhost`, or a name in `admin.allowed_hosts`.
    fn known_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let config = self.config();
        if host == "localhost" || config.admin.allowed_hosts.contains(&host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            // `0.0.0.0` is no name of anything (a browser may still send it).
            Ok(ip) => {
                ip.is_loopback()
                    || (!ip.is_unspecified()
                        && config.admin.listen_addr().is_some_and(|l| l.ip() == ip))
            }
            Err(_) => false,
        }
    }
}

/// The trust boundary in front of every route (SPEC 5.8).
async fn guard(State(state): State<Arc<AdminState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return refuse(StatusCode::BAD_REQUEST, "a Host header is required".into());
    };
    if !state.known_host(host_name(host)) {
        // DNS rebinding: a web page whose name resolves to this machine.
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {:?} is not a name of this endpoint; add it to admin.allowed_hosts",
                host.chars().take(100).collect::<String>()
            ),
        );
    }
    // `GET /explain` makes the daemon read Graph and plan a tenant: an action, like a POST.
    let acts = !matches!(*request.method(), Method::GET | Method::HEAD)
        || request.uri().path() == "/explain";
    if acts {
        // A browser says where a request comes from; another origin's page may not act here.
        let cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.eq_ignore_ascii_case("cross-site") || v.eq_ignore_ascii_case("same-site")
            });
        // The endpoint serves no pages: a browser's `Origin` can only be another page's,
        // unless it is this very endpoint (scheme, host and port).
        let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
            let origin = origin.to_str().unwrap_or("null");
            !origin.eq_ignore_ascii_case(&format!("http://{host}"))
        });
        if cross_site || foreign_origin {
            return refuse(
                StatusCode::FORBIDDEN,
                "requests from web pages of other origins are refused".into(),
            );
        }
    }
    if !OPEN_PATHS.contains(&request.uri().path())
        && let Some(expected) = state.token()
    {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given, expected.expose()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!(
                    "{} needs `Authorization: Bearer <token from admin.token_file>`\n",
                    request.uri().path().chars().take(100).collect::<String>()
                ),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// What the endpoint's accept loop allows a client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent a whole request head within this long is closed (an idle
    /// keep-alive connection too).
    pub header_timeout: Duration,
    /// Connections held at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; connections then
/// finish the request they are in.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("admin endpoint cannot accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    "admin endpoint holds {} connections already; closing new ones",
                    limits.max_connections
                );
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // The only change is to stopping (or the loop is gone).
                _ = stop_rx.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    let _ = stopping.send(true);
}

async fn healthz(State(state): State<Arc<AdminState>>) -> Response {
    match state.verdict() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response(),
    }
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let config = state.config();
    let tenants = state.health.snapshot();
    let path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        match Store::open_read_only(&path).map_err(|e| e.to_string())? {
            Some(store) => {
                let mut open = serde_json::Map::new();
                for tenant in &config.tenants {
                    let state = store.open_state(&tenant.name).map_err(|e| e.to_string())?;
                    let edits = store.local_edits(&tenant.name).map_err(|e| e.to_string())?;
                    open.insert(tenant.name.clone(), state.as_json(edits));
                }
                Ok(json!({
                    "runs": store.last_runs(5).map_err(|e| e.to_string())?,
                    "totals": store.totals().map_err(|e| e.to_string())?,
                    "open": open,
                }))
            }
            None => Ok(json!({ "runs": [], "totals": null, "open": {} })),
        }
    })
    .await;
    match store {
        Ok(Ok(mut body)) => {
            body["tenants"] = json!(tenants);
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /changes?tenant=&user=&run=&since=&limit=`: `entra-sync changes --json`.
async fn changes(
    State(state): State<Arc<AdminState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let bad = |e: String| (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
    let number = |name: &str| -> Result<Option<i64>, String> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{name}={v}: expected a number"))
            })
            .transpose()
    };
    let (run, limit) = match (number("run"), number("limit")) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    let since = match params.get("since") {
        None => None,
        Some(v) => match chrono::DateTime::parse_from_rfc3339(v) {
            Ok(t) => Some(crate::clock::rfc3339(t.with_timezone(&chrono::Utc))),
            Err(_) => return bad(format!("since={v}: expected an RFC 3339 time")),
        },
    };
    let query = crate::store::ChangeQuery {
        tenant: params.get("tenant").cloned(),
        user: params.get("user").cloned(),
        run,
        since,
        limit: limit.map_or(50, |l| l.clamp(1, 10_000) as usize),
    };
    let path = state.config().store.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        match Store::open_read_only(&path).map_err(|e| e.to_string())? {
            Some(store) => store.changes(&query).map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        }
    })
    .await;
    match read {
        Ok(Ok(entries)) => (StatusCode::OK, axum::Json(entries)).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Hands `opts` to the daemon's worker; the answer arrives on the receiver. `Err`: the
/// daemon is stopping (503).
async fn to_worker(
    state: &AdminState,
    opts: SyncOptions,
) -> Result<oneshot::Receiver<Result<SyncSummary, SyncError>>, Response> {
    let (reply, answer) = oneshot::channel();
    match state.resync.send(ResyncRequest { opts, reply }).await {
        Ok(()) => Ok(answer),
        Err(_) => {
            Err((StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response())
        }
    }
}

/// `GET /explain?user=…&tenant=…`: `entra-sync explain --json`, run by the daemon's worker
/// (its clients and tokens) as a dry run: it writes nothing and waits for a running sync.
async fn explain(
    State(state): State<Arc<AdminState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(user) = params.get("user").filter(|u| !u.trim().is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "user=: an object id, UPN or email is required\n",
        )
            .into_response();
    };
    let opts = SyncOptions {
        tenant: params.get("tenant").cloned(),
        user: Some(user.clone()),
        dry_run: true,
        explain: true,
        ..SyncOptions::default()
    };
    let answer = match to_worker(&state, opts).await {
        Ok(answer) => answer,
        Err(stopping) => return stopping,
    };
    match answer.await {
        Ok(Ok(summary)) => {
            (StatusCode::OK, axum::Json(summary.explanations_json())).into_response()
        }
        Ok(Err(e)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before the explanation ran\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Compares without leaking the token's length or prefix through timing.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn flag(params: &HashMap<String, String>, name: &str) -> Result<bool, String> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(format!("{name}={other}: expected true or false")),
    }
}

async fn resync(
    State(state): State<Arc<AdminState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (full, allow) = match (
        flag(&params, "full"),
        flag(&params, "allow_mass_deactivation"),
    ) {
        (Ok(f), Ok(a)) => (f, a),
        (Err(e), _) | (_, Err(e)) => {
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let opts = SyncOptions {
        tenant: params.get("tenant").cloned(),
        user: params.get("user").cloned(),
        full,
        dry_run: false,
        allow_mass_deactivation: allow,
        ..SyncOptions::default()
    };
    let answer = match to_worker(&state, opts).await {
        Ok(answer) => answer,
        Err(stopping) => return stopping,
    };
    match answer.await {
        Ok(Ok(mut summary)) => {
            for t in &mut summary.tenants {
                t.plan = None;
            }
            let code = summary.exit_code();
            (
                StatusCode::OK,
                axum::Json(json!({ "exit_code": code, "summary": summary })),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            let status = match e {
                SyncError::UnknownTenant(_) | SyncError::UnknownUser(..) => StatusCode::NOT_FOUND,
            };
            (status, format!("{e}\n")).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before the resync ran\n",
        )
            .into_response(),
    }
}
