//! Client secrets and the admin token: where they come from (a file, an environment variable, systemd's
//! `$CREDENTIALS_DIRECTORY`) and a [`Secret`] type whose `Debug`/`Display` never show the value.
//!
//! The only way to read the value is [`Secret::expose`], called where the token request is built.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(SecretString::from(value))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Reads the secret (`what` names it in errors: "client secret", "admin token"). A relative
    /// file name is looked up in systemd's credentials directory when one is set
    /// (`LoadCredential=msp.secret:/etc/entra-sync/msp.secret`).
    pub fn read(
        &self,
        what: &str,
        credentials_dir: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, String> {
        let value = match self {
            SecretSource::File(file) => {
                let path = match credentials_dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                warn_if_readable_by_others(&path);
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "cannot read secret file {}: {}; create it with the {what} value (mode 0600)",
                        path.display(),
                        crate::config::io_reason(&e)
                    )
                })?
            }
            SecretSource::Env(var) => env(var).ok_or_else(|| {
                format!("environment variable {var} is not set; export it with the {what} value")
            })?,
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(format!("the {what} is empty"));
        }
        Ok(Secret::new(value))
    }
}

/// Warns when a config or secret file can be read by any user of the machine ("others").
pub fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o007 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "file is readable by every user of this machine; run chmod 600 (or 640 with a service group) on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn relative_file_is_read_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("msp.secret"), "abc~123\n").unwrap();
        let s = SecretSource::File("msp.secret".into())
            .read("client secret", Some(dir.path()), &|_| None)
            .unwrap();
        assert_eq!(s.expose(), "abc~123");
    }

    #[test]
    fn missing_sources_say_what_to_do() {
        let e = SecretSource::Env("NOPE".into())
            .read("client secret", None, &|_| None)
            .unwrap_err();
        assert!(e.contains("NOPE") && e.contains("export"), "{e}");
        let e = SecretSource::File("/nonexistent/x.secret".into())
            .read("client secret", None, &|_| None)
            .unwrap_err();
        assert!(
            e.contains("/nonexistent/x.secret") && e.contains("no such file"),
            "{e}"
        );
    }
}
