//! Certificate credentials at the token endpoint: the certificates registered on the simulated
//! app (its `keyCredentials`) and the check of a `client_assertion` JWT against them, as the
//! identity platform documents it: `client_assertion_type` jwt-bearer, a registered
//! certificate named by `x5t#S256` (or the legacy SHA-1 `x5t`), an RS256 or PS256 signature by
//! its key, `aud` the token endpoint, `iss` = `sub` = the client id, `exp`/`nbf` with five
//! minutes of clock skew, a `jti` not seen before.
//!
//! Signatures are checked by `jsonwebtoken` over `ring`; nothing here is hand-made
//! cryptography. Refusals are Microsoft's AADSTS errors (700027, 700024, 700021, 50027).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::token::AadError;

pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The clock skew the identity platform tolerates on `exp` and `nbf`.
const SKEW_SECS: u64 = 300;

/// A certificate to register on the simulated app registration, like uploading a `.crt`
/// under "Certificates & secrets": its PEM, and when the registration ends (`None`: never).
#[derive(Debug, Clone)]
pub struct SimCertificate {
    pub pem: String,
    pub end: Option<DateTime<Utc>>,
}

/// A registered certificate, ready to check signatures.
pub(crate) struct Registered {
    x5t_s256: String,
    x5t: String,
    /// SHA-1 in hex, as the admin center and Microsoft's error texts show it.
    thumbprint: String,
    key: DecodingKey,
    end: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registered({})", self.thumbprint)
    }
}

/// Reads the certificates to register; an unreadable one is an error at start.
pub(crate) fn register(certs: &[SimCertificate]) -> anyhow::Result<Vec<Registered>> {
    certs
        .iter()
        .map(|c| {
            let block = pem::parse_many(c.pem.as_bytes())?
                .into_iter()
                .find(|b| b.tag() == "CERTIFICATE")
                .ok_or_else(|| {
                    anyhow::anyhow!("a registered certificate has no CERTIFICATE block")
                })?;
            let der = block.contents();
            let sha256 = ring::digest::digest(&ring::digest::SHA256, der);
            let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
            let key = DecodingKey::from_rsa_pem(pem::encode(&block).as_bytes())
                .map_err(|e| anyhow::anyhow!("a registered certificate has no RSA key: {e}"))?;
            Ok(Registered {
                x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
                x5t: URL_SAFE_NO_PAD.encode(sha1.as_ref()),
                thumbprint: sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
                key,
                end: c.end,
            })
        })
        .collect()
}

/// `jti`s already presented, with the `exp` after which they can be forgotten.
#[derive(Debug, Default)]
pub(crate) struct SeenJti(HashMap<String, i64>);

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    jti: String,
    exp: i64,
}

fn invalid_client(code: u32, description: impl Into<String>) -> AadError {
    AadError::new(401, "invalid_client", code, description)
}

/// Checks a `client_assertion` for `client_id` sent to one of the token endpoint URLs
/// `audiences`, at Unix time `now`.
pub(crate) fn verify(
    registered: &[Registered],
    seen: &mut SeenJti,
    client_id: &str,
    audiences: &[String],
    assertion_type: Option<&str>,
    assertion: &str,
    now: DateTime<Utc>,
) -> Result<(), AadError> {
    if assertion_type != Some(ASSERTION_TYPE) {
        return Err(AadError::new(
            400,
            "invalid_request",
            900144,
            format!(
                "The request body must contain the following parameter: 'client_assertion_type'. Expected '{ASSERTION_TYPE}'."
            ),
        ));
    }
    let malformed = |why: &str| {
        invalid_client(
            50027,
            format!("JWT token is invalid or malformed. [Reason - {why}]"),
        )
    };
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed("not a JWT"))?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(malformed("the assertion must be signed RS256 or PS256"));
    }
    let presented = header
        .x5t_s256
        .as_deref()
        .or(header.x5t.as_deref())
        .ok_or_else(|| malformed("the header names no certificate (x5t#S256)"))?;
    let Some(cert) = registered
        .iter()
        .find(|c| c.x5t_s256 == presented || c.x5t == presented)
    else {
        return Err(invalid_client(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{presented}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
            ),
        ));
    };
    if let Some(end) = cert.end.filter(|end| *end <= now) {
        return Err(invalid_client(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The key used is expired., Thumbprint of key used by client: '{}', Found key 'End={}']",
                cert.thumbprint,
                end.format("%m/%d/%Y %H:%M:%S")
            ),
        ));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = SKEW_SECS;
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<Claims>(assertion, &cert.key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => invalid_client(
                    700027,
                    format!(
                        "Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{}']",
                        cert.thumbprint
                    ),
                ),
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => invalid_client(
                    700024,
                    format!(
                        "Client assertion is not within its valid time range. Current time: {}.{:07}Z",
                        now.format("%Y-%m-%dT%H:%M:%S"),
                        now.timestamp_subsec_nanos() / 100
                    ),
                ),
                ErrorKind::InvalidAudience => malformed("the audience (aud) is not this token endpoint"),
                ErrorKind::MissingRequiredClaim(c) => malformed(&format!("the claim '{c}' is missing")),
                _ => malformed("the claims cannot be read"),
            }
        })?
        .claims;
    if !claims.iss.eq_ignore_ascii_case(client_id) || !claims.sub.eq_ignore_ascii_case(client_id) {
        return Err(invalid_client(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        ));
    }
    let t = now.timestamp();
    seen.0.retain(|_, exp| *exp + SKEW_SECS as i64 >= t);
    if claims.jti.is_empty() || seen.0.insert(claims.jti, claims.exp).is_some() {
        return Err(malformed("the jti is missing or was already used (replay)"));
    }
    Ok(())
}
