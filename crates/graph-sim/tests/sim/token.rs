//! The token endpoint (client credentials, AADSTS errors) and Graph's answer to missing,
//! unknown and expired access tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::{Env, SCOPE, client, into_resp, token_request};
use base64::Engine;
use graph_sim::{DEFAULT_CLIENT_SECRET, Fault, Sim, SimOptions};

fn form<'a>(client_id: &'a str, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", SCOPE),
    ]
}

#[tokio::test]
async fn client_credentials_in_the_body_or_basic_auth_get_a_bearer_token() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let o = SimOptions::default();
    let http = client();
    let r = token_request(
        &http,
        &sim.base_url(),
        &o.tenant,
        &form(&o.client_id, &o.client_secret),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3599);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );

    // RFC 6749 Basic: form-urlencoded id and secret ('~' is kept, as oauth2 encodes it).
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        o.client_id,
        url::form_urlencoded::byte_serialize(o.client_secret.as_bytes()).collect::<String>()
    ));
    let r = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            sim.control().tenant_guid()
        ))
        .header("Authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials"), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    let r = into_resp(r).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn token_errors_carry_the_documented_aadsts_codes() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let o = SimOptions::default();
    let http = client();
    let base = sim.base_url();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case<'_>> = vec![
        (
            &o.tenant,
            form(&o.client_id, "wrong-secret"),
            401,
            "invalid_client",
            7000215,
        ),
        (
            "fabrikam.onmicrosoft.com",
            form(&o.client_id, &o.client_secret),
            400,
            "invalid_request",
            90002,
        ),
        (
            &o.tenant,
            form("00000000-1111-2222-3333-444444444444", &o.client_secret),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            "common",
            form(&o.client_id, &o.client_secret),
            400,
            "invalid_request",
            9001023,
        ),
        (
            &o.tenant,
            vec![("grant_type", "password"), ("client_id", &o.client_id)],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            &o.tenant,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &o.client_id),
                ("client_secret", &o.client_secret),
            ],
            400,
            "invalid_request",
            900144,
        ),
        (
            &o.tenant,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", &o.client_id),
                ("scope", SCOPE),
            ],
            401,
            "invalid_client",
            7000218,
        ),
    ];
    for (tenant, f, status, error, code) in cases {
        let r = token_request(&http, &base, tenant, &f).await;
        assert_eq!(r.status, status, "{error} {code}: {}", r.text);
        assert_eq!(r.body["error"], error);
        assert_eq!(r.body["error_codes"][0], code);
        assert!(
            r.body["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("AADSTS{code}:"))
        );
        assert!(r.body["trace_id"].is_string() && r.body["correlation_id"].is_string());
        assert!(
            !r.text.contains(DEFAULT_CLIENT_SECRET),
            "a secret is never echoed"
        );
    }
}

#[tokio::test]
async fn graph_answers_401_to_missing_unknown_and_expired_tokens() {
    let env = Env::start(SimOptions {
        token_lifetime: Duration::from_millis(400),
        ..SimOptions::default()
    })
    .await;
    let url = env.url("/users?$top=1");
    let r = into_resp(env.http.get(&url).send().await.unwrap()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "InvalidAuthenticationToken");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    let r = into_resp(
        env.http
            .get(&url)
            .bearer_auth("eyJ.forged.token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "InvalidAuthenticationToken");

    assert_eq!(env.get("/users?$top=1").await.status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = env.get("/users?$top=1").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "InvalidAuthenticationToken");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn expire_access_tokens_invalidates_issued_tokens_but_not_new_ones() {
    let env = Env::small().await;
    assert_eq!(env.get("/users?$top=1").await.status, 200);
    env.ctl().expire_access_tokens();
    assert_eq!(env.get("/users?$top=1").await.status, 401);
    let o = SimOptions::default();
    let r = token_request(
        &env.http,
        &env.sim.base_url(),
        &o.tenant,
        &form(&o.client_id, &o.client_secret),
    )
    .await;
    let fresh = r.body["access_token"].as_str().unwrap().to_owned();
    let r = into_resp(
        env.http
            .get(env.url("/users?$top=1"))
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn faults_apply_to_the_token_endpoint_too() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    sim.control()
        .inject_fault(Fault::throttle("oauth2/v2.0/token", "0.1", 1));
    let o = SimOptions::default();
    let http = client();
    let r = token_request(
        &http,
        &sim.base_url(),
        &o.tenant,
        &form(&o.client_id, &o.client_secret),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("0.1"));
    assert_eq!(r.body["error"], "temporarily_unavailable");
    assert!(r.body["error_codes"][0].is_number());
    let r = token_request(
        &http,
        &sim.base_url(),
        &o.tenant,
        &form(&o.client_id, &o.client_secret),
    )
    .await;
    assert_eq!(r.status, 200);
    let stats = sim.control().stats();
    assert_eq!(stats.get("POST /{tenant}/oauth2/v2.0/token 429"), 1);
    assert_eq!(stats.get("POST /{tenant}/oauth2/v2.0/token 200"), 1);
}

#[tokio::test]
async fn the_secret_never_appears_in_answers_config_or_debug_output() {
    let env = Env::small().await;
    let dir = tempfile::tempdir().unwrap();
    let config = env
        .sim
        .config_toml(&dir.path().join("psa.db"), &dir.path().join("sim.secret"));
    assert!(!config.contains(DEFAULT_CLIENT_SECRET));
    assert!(!format!("{:?}", SimOptions::default()).contains(DEFAULT_CLIENT_SECRET));
    let info = into_resp(
        env.http
            .get(format!("{}/_sim/info", env.sim.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!info.text.contains(DEFAULT_CLIENT_SECRET));
}

#[tokio::test]
async fn the_openid_configuration_names_the_tenant_by_guid_and_refuses_unknown_tenants() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let http = client();
    let guid = sim.control().tenant_guid();
    for tenant in [sim.control().tenant(), guid.clone()] {
        let r = into_resp(
            http.get(format!(
                "{}/{tenant}/v2.0/.well-known/openid-configuration",
                sim.base_url()
            ))
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let issuer = r.body["issuer"].as_str().unwrap();
        assert!(issuer.ends_with(&format!("/{guid}/v2.0")), "{issuer}");
        assert_eq!(
            r.body["token_endpoint"],
            format!("{}/{guid}/oauth2/v2.0/token", sim.base_url())
        );
        assert!(r.body["token_endpoint_auth_methods_supported"].is_array());
    }
    let r = into_resp(
        http.get(format!(
            "{}/nowhere.onmicrosoft.com/v2.0/.well-known/openid-configuration",
            sim.base_url()
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_tenant");
    assert_eq!(r.body["error_codes"][0], 90002);
}
