//! The daemon's admin endpoint (axum, loopback by default): `GET /healthz`, `GET /status`,
//! `GET /metrics` (Prometheus text from the `metrics` recorder) and `POST /resync`.
//!
//! `POST /resync` only queues work for the daemon's worker and waits for its summary; it is
//! refused without the bearer token when `admin.token_file` is set. Never returns secrets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::daemon::{Shared, Trigger, health_verdict};
use crate::store::Store;
use crate::sync::SyncOptions;

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/resync", post(resync))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("admin endpoint stopped: {e}");
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let (ok, problems) = health_verdict(&shared);
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let config = shared.config();
    let tenants = shared.health.read().map(|h| h.clone()).unwrap_or_default();
    let path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        match Store::open_read_only(&path).map_err(|e| e.to_string())? {
            Some(store) => Ok(json!({
                "runs": store.last_runs(5).map_err(|e| e.to_string())?,
                "totals": store.totals().map_err(|e| e.to_string())?,
            })),
            None => Ok(json!({ "runs": [], "totals": null })),
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

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
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
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let expected = shared
        .admin_token
        .read()
        .map(|t| t.clone())
        .unwrap_or_default();
    if let Some(expected) = expected {
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
    if shared
        .triggers
        .send(Trigger::Resync { opts, reply })
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
        Ok(Err(e)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before the resync ran\n",
        )
            .into_response(),
    }
}
