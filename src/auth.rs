//! Signing in to Entra ID with OAuth 2.0 client credentials (the `oauth2` crate), with a client
//! secret or a certificate's signed assertion ([`crate::credential`]), caching the access token
//! and renewing it before it expires.
//!
//! Owns the token endpoint conversation and turns Microsoft's error answers (`error`,
//! `error_codes` / AADSTS) into one readable [`AuthError`] with what to do. It must never put
//! a secret, a key, an assertion or a token in an error, a log line or a `Debug` output.

use std::fmt;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponseType, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, EndpointNotSet, EndpointSet, ExtraTokenFields, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use entra_sync_core::ObjectId;

use crate::clock::{Clock, SystemClock};
use crate::config::TenantConfig;
use crate::credential::{ASSERTION_TYPE, Credential};
use crate::secret::Secret;

/// Renew this long before the token expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The identity platform refused the credentials or the request: retrying will not help.
    #[error("sign-in for tenant \"{tenant}\" refused: {summary}; {fix}")]
    Rejected {
        tenant: String,
        summary: String,
        fix: String,
    },
    /// The token endpoint could not be reached or answered oddly: worth retrying later.
    #[error("sign-in for tenant \"{tenant}\" failed: {reason}")]
    Unavailable { tenant: String, reason: String },
}

impl AuthError {
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Unavailable { .. })
    }
}

/// Microsoft's `ext_expires_in`, kept for completeness.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EntraTokenFields {
    #[serde(default)]
    pub ext_expires_in: Option<u64>,
}
impl ExtraTokenFields for EntraTokenFields {}

/// The token endpoint's error body, with the AADSTS codes `BasicErrorResponse` drops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntraTokenError {
    pub error: BasicErrorResponseType,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl fmt::Display for EntraTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error.as_ref())
    }
}
impl oauth2::ErrorResponse for EntraTokenError {}

type EntraTokenResponse = StandardTokenResponse<EntraTokenFields, BasicTokenType>;
type EntraClient = oauth2::Client<
    EntraTokenError,
    EntraTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// One tenant's access tokens.
pub struct TokenSource {
    tenant: String,
    tenant_id: String,
    client_id: String,
    token_url: String,
    scope: String,
    credential: Credential,
    client: EntraClient,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
    /// The identity platform's OpenID configuration document of the tenant.
    discovery_url: String,
    directory: Mutex<Option<String>>,
}

impl TokenSource {
    pub fn new(tenant: &TenantConfig) -> Result<TokenSource, AuthError> {
        let unavailable = |reason: String| AuthError::Unavailable {
            tenant: tenant.name.clone(),
            reason,
        };
        let credential = tenant
            .credential
            .clone()
            .ok_or_else(|| AuthError::Rejected {
                tenant: tenant.name.clone(),
                summary: "no credential loaded".into(),
                fix: "set client_certificate_file, client_secret_file or client_secret_env".into(),
            })?;
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            tenant.authority, tenant.tenant_id
        );
        // The credential is added to each request (borrowed, never copied into the client).
        let client = oauth2::Client::new(ClientId::new(tenant.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(
                TokenUrl::new(token_url.clone())
                    .map_err(|e| unavailable(format!("bad token URL {token_url}: {e}")))?,
            );
        // oauth2's docs: the token client must not follow redirects (the shared one does not).
        let http = crate::graph::shared_http_client(Duration::from_secs(30))
            .map_err(|e| unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(TokenSource {
            tenant: tenant.name.clone(),
            tenant_id: tenant.tenant_id.clone(),
            client_id: tenant.client_id.clone(),
            token_url,
            scope: graph_scope(&tenant.graph_url),
            credential,
            client,
            http,
            cached: Mutex::new(None),
            discovery_url: format!(
                "{}/{}/v2.0/.well-known/openid-configuration",
                tenant.authority, tenant.tenant_id
            ),
            directory: Mutex::new(None),
        })
    }

    /// The directory (tenant GUID) this tenant signs in to: the configured `tenant_id` when it
    /// is a GUID, else what the identity platform's OpenID configuration document for it names
    /// as issuer (no credentials needed; read once per client).
    pub async fn directory(&self) -> Result<String, AuthError> {
        if let Ok(id) = ObjectId::parse(&self.tenant_id) {
            return Ok(id.to_string());
        }
        let mut known = self.directory.lock().await;
        if let Some(d) = known.as_ref() {
            return Ok(d.clone());
        }
        let unavailable = |reason: String| AuthError::Unavailable {
            tenant: self.tenant.clone(),
            reason,
        };
        let response = self
            .http
            .get(&self.discovery_url)
            .send()
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot reach {}: {}",
                    self.discovery_url,
                    error_chain(&e)
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            unavailable(format!(
                "cannot read {}: {}",
                self.discovery_url,
                error_chain(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<EntraTokenError>(&body) {
                Ok(error) if status.is_client_error() => self.rejected(&error),
                _ => unavailable(format!("{} answered {status}", self.discovery_url)),
            });
        }
        let issuer = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("issuer")?.as_str().map(str::to_string))
            .unwrap_or_default();
        // `https://login.microsoftonline.com/{tenant GUID}/v2.0`
        let directory = issuer
            .split('/')
            .find_map(|segment| ObjectId::parse(segment).ok())
            .ok_or_else(|| {
                unavailable(format!(
                    "{} names no tenant GUID in its issuer ({issuer:?})",
                    self.discovery_url
                ))
            })?
            .to_string();
        *known = Some(directory.clone());
        Ok(directory)
    }

    /// A valid access token, from the cache or freshly requested.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let request = self
            .client
            .exchange_client_credentials()
            .add_scope(Scope::new(self.scope.clone()));
        let assertion;
        let request = match &self.credential {
            Credential::Secret(secret) => request.add_extra_param("client_secret", secret.expose()),
            Credential::Certificate(cert) => {
                // The identity platform checks it against its own clock: the system's, never
                // a test's or a replayed run's.
                let now = SystemClock.now().timestamp();
                assertion = cert
                    .assertion(&self.client_id, &self.token_url, now)
                    .map_err(|reason| AuthError::Rejected {
                        tenant: self.tenant.clone(),
                        summary: reason,
                        fix: "check client_certificate_file".into(),
                    })?;
                request
                    .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                    .add_extra_param("client_assertion", assertion.expose())
            }
        };
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.explain(e))?;
        // At most a day: a hostile `expires_in` must not overflow the clock.
        let lifetime = response
            .expires_in()
            .unwrap_or(Duration::from_secs(3599))
            .min(Duration::from_secs(24 * 3600));
        // Renew 5 minutes early, or halfway through a short test lifetime.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let token = Secret::new(response.access_token().secret());
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime - margin,
        });
        tracing::debug!(tenant = %self.tenant, lifetime_s = lifetime.as_secs(), "access token acquired");
        Ok(token)
    }

    /// Forgets the cached token (after Graph answered 401 to it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    fn explain(
        &self,
        e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, EntraTokenError>,
    ) -> AuthError {
        let unavailable = |reason: String| AuthError::Unavailable {
            tenant: self.tenant.clone(),
            reason,
        };
        match e {
            RequestTokenError::ServerResponse(body) => self.rejected(&body),
            RequestTokenError::Request(e) => unavailable(format!(
                "cannot reach the token endpoint {}: {}",
                self.token_url,
                error_chain(&e)
            )),
            RequestTokenError::Parse(_, body) => unavailable(format!(
                "the token endpoint {} answered with something that is not a token ({} bytes)",
                self.token_url,
                body.len()
            )),
            RequestTokenError::Other(m) => {
                unavailable(format!("unexpected answer from {}: {m}", self.token_url))
            }
        }
    }

    fn rejected(&self, body: &EntraTokenError) -> AuthError {
        let code = body.error_codes.first().copied();
        // The first line of the description is Microsoft's sentence; the rest are trace ids.
        let first_line = body
            .error_description
            .as_deref()
            .and_then(|d| d.lines().next())
            .unwrap_or("")
            .to_string();
        let aadsts = code.map(|c| format!("AADSTS{c}")).unwrap_or_default();
        let fix = match code {
            Some(7000215) => format!(
                "the client secret of app {} is wrong: put the secret's Value (not its Secret ID) in the secret file",
                self.client_id
            ),
            Some(7000222) => "the client secret has expired: create a new one under Certificates & secrets and update the secret file".into(),
            Some(700027) => match &self.credential {
                Credential::Certificate(cert) => format!(
                    "the certificate with thumbprint {} is not registered on app {}, or has expired: upload the certificate (.crt) under Certificates & secrets of the app registration, or renew it",
                    cert.thumbprint, self.client_id
                ),
                Credential::Secret(_) => "the app expects a certificate: set client_certificate_file".into(),
            },
            Some(700024) => "the client assertion is outside its valid time range: check this machine's clock (NTP)".into(),
            Some(700021) => format!(
                "the certificate was accepted but the assertion names another application: check client_id ({})",
                self.client_id
            ),
            Some(700016) => format!(
                "application {} was not found in tenant {}: check client_id and tenant_id, and that an admin consented the app in this tenant",
                self.client_id, self.tenant_id
            ),
            Some(90002) => format!(
                "tenant {} does not exist: check tenant_id, and authority for national clouds",
                self.tenant_id
            ),
            Some(7000112) => "the application is disabled in this tenant: enable it in Enterprise applications".into(),
            Some(53003) => "blocked by a Conditional Access policy: exclude this workload identity from the policy".into(),
            Some(70011) | Some(700022) => "the scope was refused: graph_url must be the Graph root of the tenant's cloud".into(),
            Some(90024) | Some(50033) | Some(90006) | Some(90033) => {
                return AuthError::Unavailable {
                    tenant: self.tenant.clone(),
                    reason: format!("{aadsts} {first_line} (transient; will retry)"),
                };
            }
            _ if matches!(body.error, BasicErrorResponseType::Extension(ref s) if s == "temporarily_unavailable") => {
                return AuthError::Unavailable {
                    tenant: self.tenant.clone(),
                    reason: format!("{aadsts} {first_line} (temporarily unavailable; will retry)"),
                };
            }
            _ => "check tenant_id, client_id and the secret in the config".into(),
        };
        AuthError::Rejected {
            tenant: self.tenant.clone(),
            summary: format!("{} {aadsts} {first_line}", body.error.as_ref())
                .trim()
                .replace("  ", " "),
            fix,
        }
    }
}

/// The `.default` scope of the Graph resource: `https://graph.microsoft.com/.default`, or the
/// national cloud's Graph root. A plain-http loopback test server stands in for global Graph.
fn graph_scope(graph_url: &str) -> String {
    if graph_url.starts_with("https://") {
        format!("{graph_url}/.default")
    } else {
        "https://graph.microsoft.com/.default".into()
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn microsoft_error_bodies_parse_with_their_aadsts_codes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/graph-sim/fixtures");
        for (file, code) in [
            ("token-error-invalid-client.json", 7000215),
            ("token-error-invalid-scope.json", 70011),
            ("token-error-invalid-scope-with-error-uri.json", 70011),
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let body: EntraTokenError = serde_json::from_str(&text).unwrap();
            assert_eq!(body.error_codes.first().copied(), Some(code), "{file}");
        }
    }

    #[test]
    fn microsoft_success_bodies_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/graph-sim/fixtures");
        for file in ["token-success.json", "token-success-ext-expires-in.json"] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let body: EntraTokenResponse = serde_json::from_str(&text).unwrap();
            assert_eq!(body.expires_in(), Some(Duration::from_secs(3599)), "{file}");
        }
    }
}
