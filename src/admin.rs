//! The daemon's admin endpoint (axum, loopback by default): `GET /healthz`, `GET /status`,
//! `GET /metrics` (Prometheus text from the `metrics` recorder) and `POST /resync`.
//!
//! Owns what it serves ([`AdminState`]) and the resync requests it hands to the daemon's worker
//! ([`ResyncRequest`]); it never runs a sync itself and never returns a secret. `POST /resync`
//! is refused without the bearer token when `admin.token_file` is set.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

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

/// The endpoint's routes, for [`serve`] or for a test to call directly.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/resync", post(resync))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("admin endpoint stopped: {e}");
    }
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
                    open.insert(tenant.name.clone(), state.as_json());
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
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(expected) = state.token() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given, expected.expose()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "POST /resync needs `Authorization: Bearer <token from admin.token_file>`\n",
            )
                .into_response();
        }
    }
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
    };
    let (reply, answer) = oneshot::channel();
    if state
        .resync
        .send(ResyncRequest { opts, reply })
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response();
    }
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
