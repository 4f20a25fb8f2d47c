//! Fault injection: each kind, matching by path substring, consumption, and the HTTP form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::{Env, into_resp};
use graph_sim::{Fault, FaultKind};
use serde_json::json;

fn members_path(env: &Env) -> String {
    format!("/groups/{}/members", env.ctl().security_groups()[0].id)
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_n_times_then_recovers() {
    let env = Env::small().await;
    let path = members_path(&env);
    env.ctl()
        .inject_fault(Fault::throttle("/members", "0.2", 2));
    for _ in 0..2 {
        let r = env.get(&path).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after").as_deref(), Some("0.2"));
        assert_eq!(r.body["error"]["code"], "TooManyRequests");
        assert_eq!(r.body["error"]["innerError"]["status"], "429");
    }
    assert_eq!(env.get(&path).await.status, 200);
    let stats = env.ctl().stats();
    assert_eq!(stats.get("GET /v1.0/groups/{id}/members 429"), 2);
    assert_eq!(stats.get("GET /v1.0/groups/{id}/members 200"), 1);
    assert!(env.ctl().faults().is_empty(), "used-up faults are gone");
}

#[tokio::test]
async fn status_faults_answer_graph_error_bodies() {
    let env = Env::small().await;
    let path = members_path(&env);
    let cases = [
        (503, Some("3"), "serviceNotAvailable"),
        (500, None, "generalException"),
        (403, None, "Authorization_RequestDenied"),
        (404, None, "Request_ResourceNotFound"),
        (504, None, "gatewayTimeout"),
    ];
    for (status, retry_after, code) in cases {
        env.ctl()
            .inject_fault(Fault::status("/members", status, retry_after, 1));
        let r = env.get(&path).await;
        assert_eq!(r.status, status);
        assert_eq!(r.body["error"]["code"], code);
        assert!(r.body["error"]["innerError"]["request-id"].is_string());
        assert_eq!(r.header("retry-after").as_deref(), retry_after);
    }
    assert_eq!(env.get(&path).await.status, 200);
}

#[tokio::test]
async fn faults_match_only_requests_whose_path_or_query_contains_the_text() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[1].id.clone();
    env.ctl()
        .inject_fault(Fault::status(g.clone(), 500, None, 1));
    env.ctl()
        .inject_fault(Fault::status("$top=7", 503, None, 1));
    assert_eq!(env.get("/users?$top=3").await.status, 200);
    assert_eq!(env.get("/users?$top=7").await.status, 503);
    assert_eq!(env.get(&format!("/groups/{g}/members")).await.status, 500);
    assert_eq!(env.get(&format!("/groups/{g}/members")).await.status, 200);
    // Percent-encoded requests match the decoded text too.
    env.ctl()
        .inject_fault(Fault::status("id eq '", 400, None, 1));
    let r = env
        .get(&format!("/groups/delta?$filter=id%20eq%20'{g}'"))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_delay_fault_answers_normally_after_the_delay() {
    let env = Env::small().await;
    env.ctl().inject_fault(Fault::new(
        "/users",
        FaultKind::Delay(Duration::from_millis(300)),
        1,
    ));
    let t = Instant::now();
    let r = env.get("/users?$top=2").await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_reset_fault_drops_the_connection_without_an_answer() {
    let env = Env::small().await;
    env.ctl()
        .inject_fault(Fault::new("/users", FaultKind::Reset, 1));
    let err = env
        .http
        .get(env.url("/users"))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect_err("no HTTP answer");
    assert!(err.status().is_none());
    assert_eq!(
        env.get("/users?$top=1").await.status,
        200,
        "later requests are served"
    );
    assert_eq!(env.ctl().stats().get("GET /v1.0/users reset"), 1);
}

#[tokio::test]
async fn a_truncated_body_fails_while_reading() {
    let env = Env::small().await;
    env.ctl()
        .inject_fault(Fault::new("/users", FaultKind::TruncatedBody, 1));
    let resp = env
        .http
        .get(env.url("/users"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let announced = resp.content_length().unwrap();
    match resp.bytes().await {
        Err(_) => {}
        Ok(b) => assert!((b.len() as u64) < announced, "body must be cut short"),
    }
    assert_eq!(env.get("/users?$top=1").await.status, 200);
}

#[tokio::test]
async fn an_invalid_json_fault_answers_200_with_a_broken_body() {
    let env = Env::small().await;
    env.ctl()
        .inject_fault(Fault::new("/users", FaultKind::InvalidJson, 1));
    let r = env.get("/users").await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&r.text).is_err());
}

#[tokio::test]
async fn null_properties_leave_only_id_and_type_on_users() {
    let env = Env::small().await;
    let path = members_path(&env);
    env.ctl()
        .inject_fault(Fault::new("/members", FaultKind::NullProperties, 1));
    let r = env
        .get(&format!(
            "{path}?$select=id,mail,accountEnabled,displayName"
        ))
        .await;
    let users: Vec<&serde_json::Value> = r.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["@odata.type"] == "#microsoft.graph.user")
        .collect();
    assert!(!users.is_empty());
    for u in users {
        assert!(u["id"].is_string());
        assert!(u["mail"].is_null() && u["accountEnabled"].is_null() && u["displayName"].is_null());
    }
    let r = env.get(&format!("{path}?$select=id,displayName")).await;
    assert!(
        r.body["value"][0]["displayName"].is_string(),
        "one request only"
    );
}

#[tokio::test]
async fn faults_can_be_injected_listed_and_cleared_over_http() {
    let env = Env::small().await;
    let base = env.sim.base_url();
    let r = env
        .http
        .post(format!("{base}/_sim/faults"))
        .json(&json!([
            {"path_contains": "/users", "kind": "status", "status": 429, "retry_after": "1.5", "times": 1},
            {"path_contains": "/groups", "kind": "delay", "seconds": 0.05},
            {"path_contains": "/nothing", "kind": "reset", "times": 3}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let listed = into_resp(
        env.http
            .get(format!("{base}/_sim/faults"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 3);
    let r = env.get("/users").await;
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("1.5"))
    );
    env.http
        .delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert!(env.ctl().faults().is_empty());
    let bad = env
        .http
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"path_contains": "/x", "kind": "explode"}))
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error());
}

#[tokio::test]
async fn batch_items_meet_faults_one_by_one() {
    let env = Env::small().await;
    let users = env.ctl().users();
    env.ctl()
        .inject_fault(Fault::throttle(users[1].id.clone(), "0.5", 1));
    let r = env
        .post_json(
            "/$batch",
            &json!({"requests": [
                {"id": "a", "method": "GET", "url": format!("/users/{}", users[0].id)},
                {"id": "b", "method": "GET", "url": format!("/users/{}", users[1].id)},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "the batch itself succeeds");
    let items = r.body["responses"].as_array().unwrap();
    let b = items.iter().find(|i| i["id"] == "b").unwrap();
    assert_eq!(b["status"], 429);
    assert_eq!(b["headers"]["Retry-After"], "0.5");
    assert_eq!(b["body"]["error"]["code"], "TooManyRequests");
    let a = items.iter().find(|i| i["id"] == "a").unwrap();
    assert_eq!(a["status"], 200);
}

/// `latency`: every Graph and token request waits it out; the control API does not. The work
/// of answering (here a slow server, a delay fault shorter than the latency) is done within
/// the latency, as Graph's is, not after it.
#[tokio::test(start_paused = true)]
async fn latency_delays_every_graph_and_token_request() {
    let env = crate::support::Env::start(graph_sim::SimOptions {
        latency: std::time::Duration::from_millis(100),
        ..graph_sim::SimOptions::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let r = env.get("/groups?$top=1").await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(100),
        "answered after {:?}",
        started.elapsed()
    );
    env.ctl().inject_fault(Fault::new(
        "/groups",
        FaultKind::Delay(Duration::from_millis(30)),
        1,
    ));
    let started = tokio::time::Instant::now();
    let r = env.get("/groups?$top=1").await;
    assert_eq!(r.status, 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(130),
        "answered after {took:?}: 100 ms from arrival, not 100 + the 30 ms of work"
    );
}

/// Resource units as Graph charges them, and its per-app-and-tenant budget: a 429 with
/// `Retry-After` and `x-ms-throttle-scope` once spent, charged all the same.
#[tokio::test]
async fn resource_units_are_charged_and_a_spent_budget_answers_429() {
    let env = crate::support::Env::start(graph_sim::SimOptions {
        users: 20,
        groups: 2,
        // 3,500 RU per 10 s for a small tenant, scaled to 7.
        ru_budget_scale: Some(0.002),
        ..graph_sim::SimOptions::default()
    })
    .await;
    let g = env.ctl().security_groups()[0].id.clone();
    let path = format!("/groups/{g}/members?$select=id,mail&$top=999");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = env.get(&path).await;
        if r.status == 200 {
            assert_eq!(r.header("x-ms-resource-unit").as_deref(), Some("2"));
        } else {
            assert_eq!(r.status, 429, "{}", r.text);
            assert!(r.header("retry-after").is_some());
            let scope = r.header("x-ms-throttle-scope").unwrap_or_default();
            assert!(scope.starts_with("Tenant_Application/"), "{scope}");
            assert_eq!(
                r.header("x-ms-throttle-information").as_deref(),
                Some("ResourceUnitLimitExceeded")
            );
            assert_eq!(r.body["error"]["code"], "TooManyRequests");
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "7 RU: three pages of 2"
    );
    let stats = env.ctl().stats();
    assert_eq!(
        stats.resource_units, 10,
        "throttled requests are charged too"
    );
    assert_eq!(stats.throttled.get("Tenant_Application"), Some(&2));
}

/// Graph's per-app budget across tenants (150,000 RU per 20 s): the simulators of one app's
/// tenants share it, so tenants that each stay within their own budget are throttled
/// together, with the `Application` scope.
#[tokio::test]
async fn the_per_app_budget_is_shared_by_an_apps_tenants() {
    // 150,000 × 0.00004 = 6 RU per 20 s for the app; each tenant's own budget is far larger.
    let app = graph_sim::AppBudget::new(0.00004);
    let tenant = |seed: u64| graph_sim::SimOptions {
        users: 20,
        groups: 2,
        seed,
        tenant: format!("t{seed}.onmicrosoft.com"),
        ru_budget_scale: Some(1.0),
        app_budget: Some(app.clone()),
        ..graph_sim::SimOptions::default()
    };
    let a = crate::support::Env::start(tenant(1)).await;
    let b = crate::support::Env::start(tenant(2)).await;
    let members = |env: &crate::support::Env| {
        let g = env.ctl().security_groups()[0].id.clone();
        format!("/groups/{g}/members?$select=id,mail&$top=999")
    };
    let mut statuses = Vec::new();
    for env in [&a, &b, &a, &b] {
        let r = env.get(&members(env)).await;
        if r.status == 429 {
            let scope = r.header("x-ms-throttle-scope").unwrap_or_default();
            assert!(scope.starts_with("Application/ReadWrite/"), "{scope}");
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "6 RU for the app: three pages of 2"
    );
    assert_eq!(a.ctl().stats().throttled.get("Application"), None);
    assert_eq!(b.ctl().stats().throttled.get("Application"), Some(&1));
}
