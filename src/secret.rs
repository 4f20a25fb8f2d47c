//! Client secrets, certificate keys and the admin token: where they come from (a file, an
//! environment variable, systemd's `$CREDENTIALS_DIRECTORY`) and a [`Secret`] type whose
//! `Debug`/`Display` never show the value and whose memory is wiped when dropped (`secrecy`).
//!
//! The only way to read the value is [`Secret::expose`], called where a request is built.
//! Buffers this module reads a secret into are wiped too (`zeroize`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Copies `value` into wiped-on-drop memory of exactly its size; the caller wipes (or
    /// never owned) the original.
    pub fn new(value: &str) -> Secret {
        Secret(SecretString::new(Box::from(value)))
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
    /// (`LoadCredential=msp.secret:/etc/entra-sync/msp.secret`), else in `base_dir` (the config
    /// file's directory), never in the working directory.
    pub fn read(
        &self,
        what: &str,
        credentials_dir: Option<&Path>,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, String> {
        let value = match self {
            SecretSource::File(file) => {
                let path = resolve(file, credentials_dir, base_dir);
                warn_if_readable_by_others(&path);
                read_wiped(&path).map_err(|e| {
                    format!(
                        "cannot read {}: {}; create it with the {what} (mode 0600)",
                        path.display(),
                        crate::config::io_reason(&e)
                    )
                })?
            }
            SecretSource::Env(var) => Zeroizing::new(env(var).ok_or_else(|| {
                format!("environment variable {var} is not set; export it with the {what} value")
            })?),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("the {what} is empty"));
        }
        Ok(Secret::new(value))
    }
}

/// Where a secret file named `file` is: as given when absolute, else in the credentials
/// directory when there is one, else beside the config file.
pub fn resolve(file: &Path, credentials_dir: Option<&Path>, base_dir: &Path) -> PathBuf {
    match credentials_dir {
        _ if file.is_absolute() => file.to_path_buf(),
        Some(dir) => dir.join(file),
        None => base_dir.join(file),
    }
}

/// The file's text in a buffer sized up front (no reallocation leaves a copy behind) and wiped
/// when dropped.
fn read_wiped(path: &Path) -> std::io::Result<Zeroizing<String>> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    let mut text = Zeroizing::new(String::with_capacity(size.saturating_add(1).min(1 << 20)));
    file.read_to_string(&mut text)?;
    Ok(text)
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
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn relative_file_is_read_from_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("msp.secret"), "abc~123\n").unwrap();
        let s = SecretSource::File("msp.secret".into())
            .read(
                "client secret",
                Some(dir.path()),
                Path::new("/nonexistent"),
                &|_| None,
            )
            .unwrap();
        assert_eq!(s.expose(), "abc~123");
    }

    #[test]
    fn relative_file_without_credentials_directory_is_read_beside_the_config() {
        let config_dir = tempfile::tempdir().unwrap();
        std::fs::write(config_dir.path().join("msp.secret"), "beside-the-config\n").unwrap();
        // The working directory has no such file; the config's directory has.
        let s = SecretSource::File("msp.secret".into())
            .read("client secret", None, config_dir.path(), &|_| None)
            .unwrap();
        assert_eq!(s.expose(), "beside-the-config");
    }

    #[test]
    fn missing_sources_say_what_to_do() {
        let e = SecretSource::Env("NOPE".into())
            .read("client secret", None, Path::new(""), &|_| None)
            .unwrap_err();
        assert!(e.contains("NOPE") && e.contains("export"), "{e}");
        let e = SecretSource::File("/nonexistent/x.secret".into())
            .read("client secret", None, Path::new(""), &|_| None)
            .unwrap_err();
        assert!(
            e.contains("/nonexistent/x.secret") && e.contains("no such file"),
            "{e}"
        );
    }
}
