//! The `/_sim/` control API: the [`SimControl`] methods over HTTP (JSON in, JSON out).
//!
//! Not part of Graph: no authentication, no faults, not counted in the stats.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::model::{GroupPatch, NewUser, SimError, UserPatch};
use super::{Fault, Shared, SimControl};

type AppState = Arc<Shared>;

fn ctl(sh: AppState) -> SimControl {
    SimControl { shared: sh }
}

fn err(e: SimError) -> Response {
    let status = match e {
        SimError::NotFound { .. } => StatusCode::NOT_FOUND,
        SimError::MalformedId { .. } | SimError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

fn result<T: serde::Serialize>(r: Result<T, SimError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => err(e),
    }
}

fn done(r: Result<(), SimError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/info", get(info))
        .route("/users", get(list_users).post(add_user))
        .route("/users/deleted", get(deleted_users))
        .route(
            "/users/{id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/users/{id}/disable", post(disable_user))
        .route("/users/{id}/restore", post(restore_user))
        .route("/users/{id}/hard-delete", post(hard_delete_user))
        .route("/groups", get(list_groups).post(create_group))
        .route(
            "/groups/{id}",
            get(get_group).patch(patch_group).delete(delete_group),
        )
        .route("/groups/{id}/members", post(add_member))
        .route(
            "/groups/{id}/members/{member}",
            axum::routing::delete(remove_member),
        )
        .route(
            "/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/expire-delta-tokens", post(expire_delta))
        .route("/expire-access-tokens", post(expire_access))
        .route("/stats", get(stats).delete(reset_stats))
        .route("/config", get(config))
        .fallback(not_found)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such control endpoint; see crates/graph-sim/README.md"})),
    )
        .into_response()
}

async fn info(State(sh): State<AppState>) -> Response {
    Json(json!({
        "base_url": sh.base_url,
        "tenant": sh.opts.tenant,
        "tenant_guid": sh.tenant_guid,
        "client_id": sh.opts.client_id,
        "authority": sh.base_url,
        "graph_url": sh.base_url,
        "token_endpoint": format!("{}/{}/oauth2/v2.0/token", sh.base_url, sh.opts.tenant),
        "users": sh.opts.users,
        "groups": sh.opts.groups,
        "seed": sh.opts.seed,
        "page_size": sh.opts.page_size,
        "delta_page_size": sh.opts.delta_page_size,
        "token_lifetime_seconds": sh.opts.token_lifetime.as_secs_f64(),
    }))
    .into_response()
}

async fn list_users(State(sh): State<AppState>) -> Response {
    Json(ctl(sh).users()).into_response()
}

async fn deleted_users(State(sh): State<AppState>) -> Response {
    Json(ctl(sh).deleted_users()).into_response()
}

async fn add_user(State(sh): State<AppState>, Json(new): Json<NewUser>) -> Response {
    if new.user_principal_name.is_empty() || new.display_name.is_empty() {
        return err(SimError::Invalid(
            "userPrincipalName and displayName are required".to_owned(),
        ));
    }
    (StatusCode::CREATED, Json(ctl(sh).add_user(new))).into_response()
}

async fn get_user(State(sh): State<AppState>, Path(id): Path<String>) -> Response {
    match ctl(sh).user(&id) {
        Some(u) => Json(u).into_response(),
        None => err(SimError::NotFound { id }),
    }
}

async fn patch_user(
    State(sh): State<AppState>,
    Path(id): Path<String>,
    Json(p): Json<UserPatch>,
) -> Response {
    result(ctl(sh).update_user(&id, p))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    hard: bool,
}

async fn delete_user(
    State(sh): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let c = ctl(sh);
    done(if q.hard {
        c.hard_delete_user(&id)
    } else {
        c.delete_user(&id)
    })
}

async fn disable_user(State(sh): State<AppState>, Path(id): Path<String>) -> Response {
    result(ctl(sh).disable_user(&id))
}

async fn restore_user(State(sh): State<AppState>, Path(id): Path<String>) -> Response {
    result(ctl(sh).restore_user(&id))
}

async fn hard_delete_user(State(sh): State<AppState>, Path(id): Path<String>) -> Response {
    done(ctl(sh).hard_delete_user(&id))
}

async fn list_groups(State(sh): State<AppState>) -> Response {
    Json(ctl(sh).groups()).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewGroup {
    display_name: String,
    created_date_time: Option<DateTime<Utc>>,
}

async fn create_group(State(sh): State<AppState>, Json(g): Json<NewGroup>) -> Response {
    if g.display_name.trim().is_empty() {
        return err(SimError::Invalid("displayName is required".to_owned()));
    }
    let created = g.created_date_time.unwrap_or_else(|| sh.read().clock());
    (
        StatusCode::CREATED,
        Json(ctl(sh).create_group(&g.display_name, created)),
    )
        .into_response()
}

async fn get_group(State(sh): State<AppState>, Path(id): Path<String>) -> Response {
    match ctl(sh).group(&id) {
        Some(g) => Json(g).into_response(),
        None => err(SimError::NotFound { id }),
    }
}

async fn patch_group(
    State(sh): State<AppState>,
    Path(id): Path<String>,
    Json(p): Json<GroupPatch>,
) -> Response {
    result(ctl(sh).update_group(&id, p))
}

async fn delete_group(State(sh): State<AppState>, Path(id): Path<String>) -> Response {
    done(ctl(sh).delete_group(&id))
}

#[derive(Deserialize)]
struct MemberRef {
    id: String,
}

async fn add_member(
    State(sh): State<AppState>,
    Path(id): Path<String>,
    Json(m): Json<MemberRef>,
) -> Response {
    done(ctl(sh).add_member(&id, &m.id))
}

async fn remove_member(
    State(sh): State<AppState>,
    Path((id, member)): Path<(String, String)>,
) -> Response {
    done(ctl(sh).remove_member(&id, &member))
}

async fn list_faults(State(sh): State<AppState>) -> Response {
    Json(ctl(sh).faults()).into_response()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Fault),
    Many(Vec<Fault>),
}

async fn add_faults(State(sh): State<AppState>, Json(f): Json<OneOrMany>) -> Response {
    let c = ctl(sh);
    let list = match f {
        OneOrMany::One(f) => vec![f],
        OneOrMany::Many(v) => v,
    };
    for f in list {
        c.inject_fault(f);
    }
    (StatusCode::CREATED, Json(c.faults())).into_response()
}

async fn clear_faults(State(sh): State<AppState>) -> Response {
    ctl(sh).clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn expire_delta(
    State(sh): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let status = match q.get("status").map(String::as_str) {
        None | Some("400") => 400,
        Some("410") => 410,
        Some(other) => {
            return err(SimError::Invalid(format!(
                "status must be 400 or 410, not {other}"
            )));
        }
    };
    ctl(sh).expire_delta_tokens_with(status);
    StatusCode::NO_CONTENT.into_response()
}

async fn expire_access(State(sh): State<AppState>) -> Response {
    ctl(sh).expire_access_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(sh): State<AppState>) -> Response {
    Json(ctl(sh).stats()).into_response()
}

async fn reset_stats(State(sh): State<AppState>) -> Response {
    ctl(sh).reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

async fn config(State(sh): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let store = q.get("store").map_or("psa.db", String::as_str);
    let secret = q.get("secret_file").map_or("sim.secret", String::as_str);
    let text = super::config::config_toml(
        &sh,
        std::path::Path::new(store),
        std::path::Path::new(secret),
    );
    ([("content-type", "application/toml; charset=utf-8")], text).into_response()
}
