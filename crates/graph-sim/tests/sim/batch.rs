//! JSON batching: limits, per-item answers, relative urls, dependsOn, counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::Env;
use serde_json::{Value, json};

fn item<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn twenty_user_reads_in_one_batch() {
    let env = Env::start(graph_sim::SimOptions {
        users: 30,
        ..Default::default()
    })
    .await;
    let users = env.ctl().users();
    let requests: Vec<Value> = users
        .iter()
        .take(20)
        .enumerate()
        .map(|(i, u)| {
            json!({"id": i.to_string(), "method": "GET",
                   "url": format!("/users/{}?$select=id,mail,accountEnabled", u.id)})
        })
        .collect();
    let r = env
        .post_json("/$batch", &json!({ "requests": requests }))
        .await;
    assert_eq!(r.status, 200);
    for (i, u) in users.iter().take(20).enumerate() {
        let it = item(&r.body, &i.to_string());
        assert_eq!(it["status"], 200);
        assert_eq!(it["body"]["id"], u.id.as_str());
        assert_eq!(it["body"]["accountEnabled"], u.account_enabled);
        assert!(
            it["headers"]["Content-Type"]
                .as_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert!(it["headers"]["x-ms-resource-unit"].is_string());
    }
    let stats = env.ctl().stats();
    assert_eq!(stats.get("POST /v1.0/$batch 200"), 1);
    assert_eq!(stats.batch_items.get("GET /v1.0/users/{id} 200"), Some(&20));
}

#[tokio::test]
async fn more_than_twenty_requests_or_duplicate_ids_fail_the_batch() {
    let env = Env::small().await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users?$top=1"}))
        .collect();
    let r = env.post_json("/$batch", &json!({ "requests": many })).await;
    assert_eq!(r.status, 400);
    let dup = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/users?$top=1"},
        {"id": "1", "method": "GET", "url": "/groups?$top=1"},
    ]});
    let r = env.post_json("/$batch", &dup).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "Request_BadRequest");
    let r = env.post_json("/$batch", &json!({"nope": true})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn items_fail_individually_inside_a_200_batch() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let r = env
        .post_json(
            "/$batch",
            &json!({"requests": [
                {"id": "ok", "method": "GET", "url": format!("groups/{g}?$select=id,displayName")},
                {"id": "missing", "method": "GET", "url": "/users/6b2a3c1d-0000-4000-8000-000000000000"},
                {"id": "malformed", "method": "GET", "url": "/groups/xyz"},
                {"id": "absolute", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"},
                {"id": "nested", "method": "POST", "url": "/$batch", "body": {"requests": []},
                 "headers": {"Content-Type": "application/json"}},
                {"id": "after-missing", "method": "GET", "url": "/users?$top=1", "dependsOn": ["missing"]},
                {"id": "after-ok", "method": "GET", "url": "/users?$top=1", "dependsOn": ["ok"]},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(item(&r.body, "ok")["status"], 200);
    assert_eq!(item(&r.body, "ok")["body"]["id"], g.as_str());
    assert_eq!(item(&r.body, "missing")["status"], 404);
    assert_eq!(
        item(&r.body, "missing")["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
    assert_eq!(item(&r.body, "malformed")["status"], 400);
    assert_eq!(item(&r.body, "absolute")["status"], 400);
    assert_eq!(item(&r.body, "nested")["status"], 400);
    assert_eq!(item(&r.body, "after-missing")["status"], 424);
    assert_eq!(item(&r.body, "after-ok")["status"], 200);
}

#[tokio::test]
async fn batch_items_page_with_absolute_next_links() {
    let env = Env::small().await;
    let g = env.ctl().security_groups()[0].id.clone();
    let r = env
        .post_json(
            "/$batch",
            &json!({"requests": [
                {"id": "1", "method": "GET", "url": format!("/groups/{g}/members?$select=id&$top=2")},
            ]}),
        )
        .await;
    let next = item(&r.body, "1")["body"]["@odata.nextLink"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(next.starts_with(&env.sim.base_url()));
    assert_eq!(env.get(&next).await.status, 200);
}

#[tokio::test]
async fn the_batch_needs_a_valid_token() {
    let env = Env::small().await;
    let r = env
        .http
        .post(env.url("/$batch"))
        .json(&json!({"requests": [{"id": "1", "method": "GET", "url": "/users"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
