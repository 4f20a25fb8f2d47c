//! The identity platform's token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client
//! credentials) and the store of issued access tokens that Graph requests are checked against.
//!
//! Errors use Microsoft's AADSTS body shape. Secrets are compared, never logged or echoed.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::time::Instant;

use super::render::push_json_str;
use crate::assertion::{Registered, SeenJti};

pub(crate) const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Issued access tokens and when each stops being valid.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    tokens: HashMap<String, Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

impl TokenStore {
    pub(crate) fn issue(&mut self, token: String, lifetime: Duration) {
        let now = Instant::now();
        // Forget tokens long past expiry so a long benchmark doesn't grow the map forever.
        if self.tokens.len() > 1024 {
            self.tokens
                .retain(|_, exp| now.saturating_duration_since(*exp) < Duration::from_secs(3600));
        }
        // A lifetime past what the clock can count (a test of a hostile answer) never ends.
        let until = now
            .checked_add(lifetime)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86400));
        self.tokens.insert(token, until);
    }

    pub(crate) fn check(&self, token: &str) -> TokenCheck {
        match self.tokens.get(token) {
            Some(exp) if Instant::now() < *exp => TokenCheck::Valid,
            Some(_) => TokenCheck::Expired,
            None => TokenCheck::Unknown,
        }
    }

    pub(crate) fn expire_all(&mut self) {
        let now = Instant::now();
        for exp in self.tokens.values_mut() {
            *exp = now;
        }
    }
}

/// What the token endpoint needs to know about the app registration.
pub(crate) struct TokenConfig<'a> {
    pub tenant: &'a str,
    pub tenant_guid: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub lifetime: Duration,
    /// Certificates registered on the app (certificate credentials).
    pub certificates: &'a [Registered],
    pub seen_jti: &'a std::sync::Mutex<SeenJti>,
    /// The simulator's base URL: assertions name its token endpoint as audience.
    pub base_url: &'a str,
    /// The same as the client sees it (through a forwarder): also accepted as audience.
    pub public_base: &'a str,
}

/// An AADSTS error answer.
#[derive(Debug, Clone)]
pub(crate) struct AadError {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub description: String,
}

impl AadError {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    /// The body of a fault status on the token endpoint.
    pub(crate) fn for_status(status: u16) -> Self {
        match status {
            429 => AadError::new(
                429,
                "temporarily_unavailable",
                90024,
                "RequestBudgetExceededError - The request budget was exceeded. Retry the request.",
            ),
            400 => AadError::new(400, "invalid_request", 900144, "The request is not valid."),
            401 => AadError::new(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            ),
            403 => AadError::new(
                403,
                "unauthorized_client",
                7000112,
                "UnauthorizedClientApplicationDisabled - The application is disabled.",
            ),
            s => AadError::new(
                s,
                "temporarily_unavailable",
                50033,
                "RetryableError - Indicates a transient error not related to the database operations.",
            ),
        }
    }

    pub(crate) fn body(&self, correlation_id: &str) -> String {
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let trace_id = uuid::Uuid::new_v4().to_string();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {now}",
            self.code, self.description
        );
        let mut out = String::with_capacity(512);
        out.push_str("{\"error\":");
        push_json_str(&mut out, self.error);
        out.push_str(",\"error_description\":");
        push_json_str(&mut out, &description);
        out.push_str(&format!(",\"error_codes\":[{}],\"timestamp\":", self.code));
        push_json_str(&mut out, &now);
        out.push_str(",\"trace_id\":");
        push_json_str(&mut out, &trace_id);
        out.push_str(",\"correlation_id\":");
        push_json_str(&mut out, correlation_id);
        out.push_str(&format!(
            ",\"error_uri\":\"https://login.microsoftonline.com/error?code={}\"}}",
            self.code
        ));
        out
    }
}

/// `application/x-www-form-urlencoded` decoding of one Basic-auth part (RFC 6749 §2.3.1).
fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

/// The tenant's OpenID Connect discovery document, in the shape
/// `login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration` answers: the
/// tenant given by domain name or GUID, the document naming it by GUID (`issuer`,
/// `token_endpoint`).
pub(crate) fn discovery(
    cfg: &TokenConfig<'_>,
    base_url: &str,
    tenant_in_path: &str,
) -> Result<String, AadError> {
    let tenant = tenant_in_path.to_ascii_lowercase();
    if !tenant.eq_ignore_ascii_case(cfg.tenant) && !tenant.eq_ignore_ascii_case(cfg.tenant_guid) {
        return Err(AadError::new(
            400,
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    let tid = cfg.tenant_guid;
    let doc = serde_json::json!({
        "token_endpoint": format!("{base_url}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base_url}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base_url}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base_url}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base_url}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base_url}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base_url}/{tid}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    });
    Ok(doc.to_string())
}

/// Validates a client-credentials request; on success returns the access token and lifetime.
pub(crate) fn grant(
    cfg: &TokenConfig<'_>,
    tenant_in_path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, AadError> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let tenant = tenant_in_path.to_ascii_lowercase();
    if tenant == "common" || tenant == "consumers" {
        return Err(AadError::new(
            400,
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        ));
    }
    if !tenant.eq_ignore_ascii_case(cfg.tenant) && !tenant.eq_ignore_ascii_case(cfg.tenant_guid) {
        return Err(AadError::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant_in_path}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(AadError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
        None => {
            return Err(AadError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
    }
    let (client_id, secret) = match basic_credentials(headers) {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (
            form.get("client_id").cloned(),
            form.get("client_secret").cloned(),
        ),
    };
    let Some(client_id) = client_id else {
        return Err(AadError::new(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    if !client_id.eq_ignore_ascii_case(cfg.client_id) {
        return Err(AadError::new(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                cfg.tenant
            ),
        ));
    }
    match (secret, form.get("client_assertion")) {
        (Some(_), Some(_)) => {
            return Err(AadError::new(
                400,
                "invalid_request",
                900144,
                "The request body must contain only one of the following parameters: 'client_assertion' or 'client_secret'.",
            ));
        }
        (None, Some(assertion)) => {
            let audiences: Vec<String> = [cfg.base_url, cfg.public_base]
                .iter()
                .flat_map(|base| {
                    [cfg.tenant, cfg.tenant_guid].map(|t| format!("{base}/{t}/oauth2/v2.0/token"))
                })
                .collect();
            let mut seen = cfg.seen_jti.lock().unwrap_or_else(|e| e.into_inner());
            crate::assertion::verify(
                cfg.certificates,
                &mut seen,
                &client_id,
                &audiences,
                form.get("client_assertion_type").map(String::as_str),
                assertion,
                chrono::Utc::now(),
            )?;
        }
        (None, None) => {
            return Err(AadError::new(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        (Some(secret), None) => check_secret(cfg, &secret)?,
    }
    check_scope(cfg, &form)
}

/// A client secret: the one registered, compared without echoing it.
fn check_secret(cfg: &TokenConfig<'_>, secret: &str) -> Result<(), AadError> {
    if secret != cfg.client_secret {
        return Err(AadError::new(
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                cfg.client_id
            ),
        ));
    }
    Ok(())
}

/// The scope of a granted request: Graph's `.default`.
fn check_scope(cfg: &TokenConfig<'_>, form: &HashMap<String, String>) -> Result<String, AadError> {
    match form.get("scope") {
        None => Err(AadError::new(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )),
        Some(scope) if scope.trim() == GRAPH_SCOPE => Ok(mint(cfg)),
        Some(scope) => Err(AadError::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )),
    }
}

/// A JWT-shaped opaque token (the simulator never verifies its signature, only its presence in
/// the store).
fn mint(cfg: &TokenConfig<'_>) -> String {
    let now = chrono::Utc::now().timestamp();
    let exp = now + cfg.lifetime.as_secs() as i64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"graph-sim"}"#);
    let claims = serde_json::json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{}/", cfg.tenant_guid),
        "iat": now, "nbf": now, "exp": exp,
        "appid": cfg.client_id,
        "tid": cfg.tenant_guid,
        "roles": ["GroupMember.Read.All", "User.Read.All"],
        "uti": uuid::Uuid::new_v4().to_string(),
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{payload}.{sig}")
}

pub(crate) fn success_body(token: &str, lifetime: Duration) -> String {
    let secs = lifetime.as_secs();
    let mut out = String::with_capacity(token.len() + 96);
    out.push_str(&format!(
        "{{\"token_type\":\"Bearer\",\"expires_in\":{secs},\"ext_expires_in\":{secs},\"access_token\":"
    ));
    push_json_str(&mut out, token);
    out.push('}');
    out
}
