//! The generated tenant (deterministic, realistic variety), the entra-sync config it writes,
//! the `/_sim/` control API over HTTP, and the `graph-sim` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::{Env, SCOPE, client, ids, into_resp, token_request};
use graph_sim::{Sim, SimOptions};
use serde::Deserialize;
use serde_json::json;

#[tokio::test]
async fn the_same_seed_gives_the_same_tenant_and_another_seed_another() {
    let a = Sim::start(SimOptions::default()).await.unwrap();
    let b = Sim::start(SimOptions::default()).await.unwrap();
    assert_eq!(a.control().users(), b.control().users());
    assert_eq!(a.control().groups(), b.control().groups());
    assert_eq!(a.control().deleted_users(), b.control().deleted_users());
    assert_eq!(a.control().tenant_guid(), b.control().tenant_guid());
    let c = Sim::start(SimOptions {
        seed: 2,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert_ne!(a.control().users(), c.control().users());
}

#[tokio::test]
async fn the_generated_tenant_has_the_variety_a_sync_must_handle() {
    let sim = Sim::start(SimOptions {
        users: 500,
        groups: 8,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let ctl = sim.control();
    let users = ctl.users();
    assert_eq!(users.len(), 500);
    let guests: Vec<_> = users.iter().filter(|u| u.user_type == "Guest").collect();
    assert!(!guests.is_empty());
    assert!(
        guests
            .iter()
            .all(|u| u.user_principal_name.contains("#EXT#@"))
    );
    assert!(users.iter().any(|u| !u.account_enabled));
    assert!(users.iter().any(|u| u.mail.is_none()));
    assert!(users.iter().any(|u| u.business_phones.is_empty()));
    assert!(users.iter().any(|u| !u.business_phones.is_empty()));
    assert!(
        users.iter().any(|u| u.job_title.is_some()) && users.iter().any(|u| u.job_title.is_none())
    );
    assert!(users.iter().any(|u| u.department.is_some()));
    assert!(
        users
            .iter()
            .any(|u| u.display_name.as_deref().is_some_and(|n| !n.is_ascii())),
        "unicode names"
    );
    let upns: HashSet<String> = users
        .iter()
        .map(|u| u.user_principal_name.to_lowercase())
        .collect();
    assert_eq!(upns.len(), users.len(), "UPNs are unique");
    for u in &users {
        assert_eq!(u.id, u.id.to_lowercase());
        assert!(uuid::Uuid::parse_str(&u.id).is_ok());
    }
    let groups = ctl.security_groups();
    assert_eq!(groups.len(), 8);
    let created: BTreeSet<_> = groups.iter().map(|g| g.created_date_time).collect();
    assert_eq!(created.len(), 8, "distinct createdDateTime");
    assert!(
        groups
            .iter()
            .all(|g| g.security_enabled && !g.members.is_empty())
    );
    let group_ids: HashSet<&String> = groups.iter().map(|g| &g.id).collect();
    assert!(
        groups
            .iter()
            .any(|g| g.members.iter().any(|m| group_ids.contains(m))),
        "a nested group"
    );
    let in_two = users
        .iter()
        .filter(|u| groups.iter().filter(|g| g.members.contains(&u.id)).count() >= 2)
        .count();
    assert!(in_two > 0, "groups overlap");
    let in_none = users
        .iter()
        .filter(|u| !groups.iter().any(|g| g.members.contains(&u.id)))
        .count();
    assert!(in_none > 0, "some users are out of scope");
    assert!(!ctl.deleted_users().is_empty(), "deletedItems is not empty");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cfg {
    store: Store,
    sync: SyncCfg,
    tenants: Vec<Tenant>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Store {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncCfg {
    nested_groups: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Tenant {
    name: String,
    tenant_id: String,
    client_id: String,
    client_secret_file: String,
    authority: String,
    graph_url: String,
    account: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Rule {
    tenant: String,
    group_id: String,
    order: i64,
    target: String,
    role: Option<String>,
    portal_access: Option<bool>,
}

fn parse_config(text: &str) -> Cfg {
    toml::from_str(text).unwrap()
}

#[tokio::test]
async fn config_toml_names_the_tenant_and_one_rule_per_security_group() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = sim.config_toml(&dir.path().join("psa.db"), &dir.path().join("sim.secret"));
    let cfg = parse_config(&text);
    assert!(cfg.store.path.ends_with("psa.db"));
    assert!(cfg.sync.nested_groups);
    assert_eq!(cfg.tenants.len(), 1);
    let t = &cfg.tenants[0];
    assert_eq!(t.authority, sim.base_url());
    assert_eq!(t.graph_url, sim.base_url());
    assert_eq!(t.tenant_id, "contoso.onmicrosoft.com");
    let groups = sim.control().security_groups();
    assert_eq!(cfg.rules.len(), groups.len());
    let orders: BTreeSet<i64> = cfg.rules.iter().map(|r| r.order).collect();
    assert_eq!(orders.len(), cfg.rules.len(), "distinct orders");
    assert!(cfg.rules.iter().any(|r| r.target == "employee"));
    assert!(cfg.rules.iter().any(|r| r.target == "contact"));
    for r in &cfg.rules {
        assert_eq!(r.tenant, t.name);
        assert!(groups.iter().any(|g| g.id == r.group_id));
        match r.target.as_str() {
            "employee" => assert!(r.portal_access.is_none()),
            "contact" => assert!(r.role.is_none() && r.portal_access.is_some()),
            other => panic!("target {other}"),
        }
    }
}

#[tokio::test]
async fn the_control_api_changes_the_tenant_over_http() {
    let env = Env::small().await;
    let base = env.sim.base_url();
    let http = &env.http;
    let r = into_resp(
        http.post(format!("{base}/_sim/users"))
            .json(
                &json!({"userPrincipalName": "ola.nordmann@contoso.onmicrosoft.com",
                          "displayName": "Ola Nordmann", "mail": "Ola.Nordmann@contoso.com",
                          "businessPhones": ["+47 22 00 00 00"]}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let uid = r.body["id"].as_str().unwrap().to_owned();
    let r = into_resp(
        http.patch(format!("{base}/_sim/users/{uid}"))
            .json(&json!({"jobTitle": "Fjellfører", "mail": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["mail"].is_null());
    let r = env
        .get(&format!("/users/{uid}?$select=jobTitle,mail"))
        .await;
    assert_eq!(r.body["jobTitle"], "Fjellfører");

    let g = into_resp(
        http.post(format!("{base}/_sim/groups"))
            .json(&json!({"displayName": "SG-Fjell", "createdDateTime": "2024-02-03T04:05:06Z"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(g.status, 201);
    let gid = g.body["id"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{base}/_sim/groups/{gid}/members"))
        .json(&json!({"id": uid}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        ids(&env.all(&format!("/groups/{gid}/members")).await),
        vec![uid.clone()]
    );

    let r = http
        .post(format!("{base}/_sim/users/{uid}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!env.ctl().user(&uid).unwrap().account_enabled);
    let r = http
        .delete(format!("{base}/_sim/users/{uid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(env.get(&format!("/users/{uid}")).await.status, 404);
    let r = http
        .post(format!("{base}/_sim/users/{uid}/restore"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(format!("{base}/_sim/groups/{gid}/members/{uid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .delete(format!("{base}/_sim/users/{uid}?hard=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(env.ctl().user(&uid).is_none());
    let r = http
        .delete(format!("{base}/_sim/users/{uid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .patch(format!("{base}/_sim/users/nope"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = http
        .post(format!("{base}/_sim/expire-access-tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(env.get("/users?$top=1").await.status, 401);

    let stats = into_resp(http.get(format!("{base}/_sim/stats")).send().await.unwrap()).await;
    assert!(stats.body["total"].as_u64().unwrap() >= 4);
    assert!(
        stats.body["by_endpoint"]["GET /v1.0/users/{id} 404"]
            .as_u64()
            .unwrap()
            >= 1
    );
    http.delete(format!("{base}/_sim/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(env.ctl().stats().total, 0);
    let info = into_resp(http.get(format!("{base}/_sim/info")).send().await.unwrap()).await;
    assert_eq!(info.body["tenant_guid"], env.ctl().tenant_guid());
    let r = http
        .post(format!("{base}/_sim/expire-delta-tokens?status=410"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_its_base_url_first_and_writes_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("entra-sync.toml");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_graph-sim"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--users",
                "30",
                "--groups",
                "3",
                "--seed",
                "9",
            ])
            .arg("--write-config")
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let base = first.trim().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let cfg = parse_config(&std::fs::read_to_string(&config_path).unwrap());
    assert_eq!(cfg.tenants[0].authority, base);
    assert_eq!(cfg.rules.len(), 3);
    let secret_file = dir.path().join("sim.secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let r = token_request(
        &client(),
        &base,
        &cfg.tenants[0].tenant_id,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &cfg.tenants[0].client_id),
            ("client_secret", &secret),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap();
    let g = &cfg.rules[0].group_id;
    let r = into_resp(
        client()
            .get(format!("{base}/v1.0/groups/{g}/members?$select=id"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Same seed in-process: same tenant as the binary serves.
    let sim = Sim::start(SimOptions {
        users: 30,
        groups: 3,
        seed: 9,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(sim.control().security_groups()[0].id, *g);
}
