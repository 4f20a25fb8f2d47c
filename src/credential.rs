//! How a tenant proves who it is to the identity platform: a client secret, or a certificate
//! whose private key signs a short-lived `client_assertion` JWT (RFC 7523; Microsoft's
//! "certificate credentials": RS256, `x5t#S256`, `aud` the token endpoint, `iss` = `sub` the
//! client id, a unique `jti`, a few minutes of validity).
//!
//! Owns reading the PEM (key and certificate), its thumbprints and signing assertions, with
//! `jsonwebtoken` over `ring` (no cryptography of our own). It must not talk to the network.
//! The key stays in wiped-on-drop memory ([`Secret`]) between signatures; no `Debug` output
//! shows it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The `client_assertion_type` of a signed assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: Microsoft asks for "5-10 minutes after nbf at most".
const ASSERTION_LIFETIME_SECS: i64 = 10 * 60;

/// A tenant's credential, loaded and checked when the config is.
#[derive(Clone)]
pub enum Credential {
    Secret(Secret),
    Certificate(Certificate),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => f.write_str("Credential::Secret([REDACTED])"),
            Credential::Certificate(c) => write!(f, "Credential::Certificate({})", c.thumbprint),
        }
    }
}

/// A certificate registered on the app registration and its private key.
#[derive(Clone)]
pub struct Certificate {
    /// The private key's PEM block, as read.
    key_pem: Secret,
    /// `x5t#S256`: base64url of the SHA-256 of the certificate's DER.
    x5t_s256: String,
    /// The SHA-1 thumbprint in hex, as the Entra admin center lists certificates.
    pub thumbprint: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl Certificate {
    /// Reads a PEM holding an RSA private key (PKCS#8 or PKCS#1, unencrypted) and the
    /// certificate it belongs to, in any order; the first certificate is the one registered.
    /// Refuses a key that does not match the certificate. The error says what to fix.
    pub fn from_pem(pem: Secret) -> Result<Certificate, String> {
        let blocks = pem::parse_many(pem.expose().as_bytes())
            .map_err(|e| format!("is not a PEM file ({e}); it must hold the private key and the certificate as -----BEGIN ...----- blocks"))?;
        let mut cert_der = None;
        let mut key_pem = None;
        for block in blocks {
            match block.tag() {
                "CERTIFICATE" if cert_der.is_none() => cert_der = Some(block.into_contents()),
                "PRIVATE KEY" | "RSA PRIVATE KEY" if key_pem.is_none() => {
                    let tag = block.tag().to_string();
                    let der = Zeroizing::new(block.into_contents());
                    let text = Zeroizing::new(pem::encode(&pem::Pem::new(tag, der.to_vec())));
                    key_pem = Some(Secret::new(&text));
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err("the private key is encrypted; store it unencrypted (openssl pkey -in key.pem -out plain.pem) and protect the file instead (mode 0600, or systemd LoadCredential=)".into());
                }
                "EC PRIVATE KEY" => {
                    return Err("holds an EC key; sign-in assertions here are RS256: create an RSA key of 2048 bits or more".into());
                }
                _ => {}
            }
        }
        let cert_der = cert_der.ok_or(
            "holds no certificate (-----BEGIN CERTIFICATE-----); put the certificate and its private key in one file: cat key.pem cert.pem > app.pem",
        )?;
        let key_pem = key_pem.ok_or(
            "holds no private key (-----BEGIN PRIVATE KEY-----); put the certificate and its private key in one file: cat key.pem cert.pem > app.pem",
        )?;
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &cert_der);
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert_der);
        let certificate = Certificate {
            key_pem,
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256.as_ref()),
            thumbprint: sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect(),
        };
        // The key must be an RSA key that belongs to the certificate: sign a probe and check
        // it with the certificate's public key.
        let probe = b"entra-sync key check";
        let signature = jsonwebtoken::crypto::sign(probe, &certificate.key()?, Algorithm::RS256)
            .map_err(|e| format!("the private key cannot sign RS256 ({e}); it must be an RSA key of 2048 bits or more"))?;
        let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert_der));
        let public = jsonwebtoken::DecodingKey::from_rsa_pem(cert_pem.as_bytes())
            .map_err(|e| format!("the certificate holds no RSA public key ({e})"))?;
        match jsonwebtoken::crypto::verify(&signature, probe, &public, Algorithm::RS256) {
            Ok(true) => Ok(certificate),
            _ => Err(format!(
                "the private key does not belong to the certificate (thumbprint {}); put the certificate's own key in the file",
                certificate.thumbprint
            )),
        }
    }

    fn key(&self) -> Result<EncodingKey, String> {
        EncodingKey::from_rsa_pem(self.key_pem.expose().as_bytes())
            .map_err(|e| format!("the private key cannot be read ({e})"))
    }

    /// A signed assertion for `client_id` at the token endpoint `audience`, valid from `now`
    /// (Unix seconds) for ten minutes, with a fresh `jti`.
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<Secret, String> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let claims = Claims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let jwt = Zeroizing::new(
            jsonwebtoken::encode(&header, &claims, &self.key()?)
                .map_err(|e| format!("cannot sign the client assertion ({e})"))?,
        );
        Ok(Secret::new(&jwt))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/graph-sim/test-certs");

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
    }

    #[test]
    fn an_assertion_carries_what_microsoft_documents_and_verifies_with_the_certificate() {
        let cert = Certificate::from_pem(Secret::new(&read("app.pem"))).unwrap();
        let aud = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
        let client = "00000000-0000-0000-0000-0000000000aa";
        let a = cert.assertion(client, aud, 1_800_000_000).unwrap();
        let b = cert.assertion(client, aud, 1_800_000_000).unwrap();
        let header = jsonwebtoken::decode_header(a.expose()).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.x5t_s256.as_deref(), Some(cert.x5t_s256.as_str()));
        let public = jsonwebtoken::DecodingKey::from_rsa_pem(read("app.crt").as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&[aud]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(a.expose(), &public, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["iss"], client);
        assert_eq!(claims["sub"], client);
        assert_eq!(claims["nbf"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_600, "ten minutes, no more");
        let other = jsonwebtoken::decode::<serde_json::Value>(b.expose(), &public, &validation)
            .unwrap()
            .claims;
        assert_ne!(
            claims["jti"], other["jti"],
            "every assertion has its own jti"
        );
        assert!(!format!("{:?}", Credential::Certificate(cert)).contains("PRIVATE"));
    }

    #[test]
    fn a_pem_that_cannot_sign_says_what_to_fix() {
        let key = read("app.key");
        let crt = read("app.crt");
        let other_crt = read("unregistered.crt");
        let cases = [
            (crt.clone(), "no private key"),
            (key.clone(), "no certificate"),
            (
                format!("{key}{other_crt}"),
                "does not belong to the certificate",
            ),
            ("not a pem".to_string(), "no certificate"),
            (
                format!(
                    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n{crt}"
                ),
                "encrypted",
            ),
        ];
        for (pem, expected) in cases {
            let e = Certificate::from_pem(Secret::new(&pem)).err().unwrap();
            assert!(e.contains(expected), "{expected}: {e}");
            assert!(
                !e.contains("BEGIN PRIVATE KEY-----\nMII"),
                "no key in errors: {e}"
            );
        }
        // Certificate first, key second: order does not matter.
        assert!(Certificate::from_pem(Secret::new(&format!("{crt}{key}"))).is_ok());
    }
}
