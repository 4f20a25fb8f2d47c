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

mod certificates {
    use super::*;
    use graph_sim::SimCertificate;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const APP_KEY: &str = include_str!("../../test-certs/app.key");
    const APP_CRT: &str = include_str!("../../test-certs/app.crt");
    const OTHER_KEY: &str = include_str!("../../test-certs/unregistered.key");
    const OTHER_CRT: &str = include_str!("../../test-certs/unregistered.crt");
    const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

    fn thumbprint(crt: &str) -> String {
        let der = pem::parse(crt).unwrap().into_contents();
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// An assertion as a client builds it, with `edit` applied to its claims.
    fn assertion(
        key: &str,
        crt: &str,
        alg: Algorithm,
        aud: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "aud": aud,
            "iss": SimOptions::default().client_id,
            "sub": SimOptions::default().client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now, "iat": now, "exp": now + 600,
        });
        edit(&mut claims);
        let mut header = Header::new(alg);
        header.x5t_s256 = Some(thumbprint(crt));
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    async fn sign_in(sim: &Sim, assertion: &str) -> crate::support::Resp {
        let o = SimOptions::default();
        token_request(
            &client(),
            &sim.base_url(),
            &o.tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &o.client_id),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
                ("scope", SCOPE),
            ],
        )
        .await
    }

    fn code(r: &crate::support::Resp) -> u64 {
        r.body["error_codes"][0].as_u64().unwrap_or(0)
    }

    #[tokio::test]
    async fn a_signed_assertion_is_checked_like_the_identity_platform_does() {
        let sim = Sim::start(SimOptions {
            certificates: vec![SimCertificate {
                pem: APP_CRT.into(),
                end: None,
            }],
            ..SimOptions::default()
        })
        .await
        .unwrap();
        let tenant = SimOptions::default().tenant;
        let aud = format!("{}/{tenant}/oauth2/v2.0/token", sim.base_url());
        let by_guid = format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            sim.control().tenant_guid()
        );
        for (alg, aud) in [(Algorithm::RS256, &aud), (Algorithm::PS256, &by_guid)] {
            let r = sign_in(&sim, &assertion(APP_KEY, APP_CRT, alg, aud, |_| {})).await;
            assert_eq!(r.status, 200, "{alg:?}: {}", r.text);
        }
        let replayed = assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |_| {});
        assert_eq!(sign_in(&sim, &replayed).await.status, 200);
        let r = sign_in(&sim, &replayed).await;
        assert_eq!(
            (r.status, code(&r)),
            (401, 50027),
            "a jti is used once: {}",
            r.text
        );

        let now = chrono::Utc::now().timestamp();
        let cases: Vec<(&str, String, u64)> = vec![
            (
                "unregistered certificate",
                assertion(OTHER_KEY, OTHER_CRT, Algorithm::RS256, &aud, |_| {}),
                700027,
            ),
            (
                "registered thumbprint, another key",
                assertion(OTHER_KEY, APP_CRT, Algorithm::RS256, &aud, |_| {}),
                700027,
            ),
            (
                "expired an hour ago",
                assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |c| {
                    c["exp"] = (now - 3600).into();
                }),
                700024,
            ),
            (
                "valid only from tomorrow",
                assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |c| {
                    c["nbf"] = (now + 86400).into();
                }),
                700024,
            ),
            (
                "another application",
                assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |c| {
                    c["iss"] = "11111111-2222-3333-4444-555555555555".into();
                }),
                700021,
            ),
            (
                "another audience",
                assertion(
                    APP_KEY,
                    APP_CRT,
                    Algorithm::RS256,
                    "https://evil.example/token",
                    |_| {},
                ),
                50027,
            ),
            (
                "no exp",
                assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                50027,
            ),
            ("not a JWT", "a.b.c".to_string(), 50027),
        ];
        for (what, jwt, expected) in cases {
            let r = sign_in(&sim, &jwt).await;
            assert_eq!((r.status, code(&r)), (401, expected), "{what}: {}", r.text);
        }
        // A forged signature over a registered thumbprint.
        let good = assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |_| {});
        let (head, _) = good.rsplit_once('.').unwrap();
        let r = sign_in(&sim, &format!("{head}.AAAA")).await;
        assert_eq!(code(&r), 700027, "{}", r.text);
    }

    #[tokio::test]
    async fn a_registration_that_has_ended_refuses_its_certificate() {
        let sim = Sim::start(SimOptions {
            certificates: vec![SimCertificate {
                pem: APP_CRT.into(),
                end: Some(chrono::Utc::now() - chrono::Duration::days(1)),
            }],
            ..SimOptions::default()
        })
        .await
        .unwrap();
        let aud = format!(
            "{}/{}/oauth2/v2.0/token",
            sim.base_url(),
            SimOptions::default().tenant
        );
        let r = sign_in(
            &sim,
            &assertion(APP_KEY, APP_CRT, Algorithm::RS256, &aud, |_| {}),
        )
        .await;
        assert_eq!(code(&r), 700027);
        assert!(r.text.contains("expired"), "{}", r.text);
    }
}
