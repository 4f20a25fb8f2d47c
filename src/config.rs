//! The configuration: TOML file + `ENTRA_SYNC__SECTION__KEY` overrides → a validated [`Config`].
//!
//! Owns parsing, defaults and validation, and turns every problem into one [`ConfigError`] that
//! names the key path and the fix. It reads the client secrets (through [`crate::secret`]) so a
//! broken secret is a config error at start-up, not a failed run an hour later. It must not
//! talk to the network or the store.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use entra_sync_core::ObjectId;
use entra_sync_core::rules::{EmployeeDefaults, Rule, Target};
use serde::{Deserialize, Deserializer};

pub use entra_sync_core::rules::EmailSource;

use crate::credential::{Certificate, Credential};
use crate::secret::SecretSource;

/// Prefix of environment overrides: `ENTRA_SYNC__SYNC__MAX_ATTEMPTS=3`.
pub const ENV_PREFIX: &str = "ENTRA_SYNC";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/entra-sync/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("config: {0}")]
    Parse(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub employee_defaults: EmployeeDefaults,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The directory of the config file: relative store and secret paths are relative to it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub sync: String,
    pub full_sync: String,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            sync: "0 */1 * * * *".into(),
            full_sync: "0 30 2 * * *".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub email_source: EmailSource,
    pub nested_groups: bool,
    pub default_phone_type: String,
    pub reconnect_after_seconds: u64,
    pub max_attempts: u32,
    /// A longer `Retry-After` is not waited for: that try counts as failed.
    pub max_retry_wait_seconds: u64,
    /// Graph requests in flight per tenant.
    pub max_concurrency: usize,
    /// Tenants whose Graph reads run at the same time.
    pub tenant_concurrency: usize,
    /// Timeout of one Graph request.
    pub request_timeout_seconds: u64,
    /// First step of the exponential backoff between retries (no `Retry-After`).
    pub retry_base_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            email_source: EmailSource::Mail,
            nested_groups: true,
            default_phone_type: "Work".into(),
            reconnect_after_seconds: 120,
            max_attempts: 6,
            max_retry_wait_seconds: 300,
            max_concurrency: 16,
            tenant_concurrency: 32,
            request_timeout_seconds: 60,
            retry_base_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafetyConfig {
    pub max_deactivations: u64,
    pub max_deactivation_percent: u64,
    /// The grace period: minutes a user stays out of scope before their records leave
    /// service (0: at once).
    pub deactivate_after_minutes: u64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            max_deactivations: 50,
            max_deactivation_percent: 20,
            deactivate_after_minutes: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub purge_deactivated_after_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: String,
    pub token_file: String,
    /// Host names accepted besides the listen address and `localhost` (no DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8650".into(),
            token_file: String::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl AdminConfig {
    /// The parsed listen address (validated by [`Config::parse`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    pub tenant_id: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// PEM with the private key and the certificate registered on the app: a signed
    /// `client_assertion` instead of a secret.
    #[serde(default)]
    pub client_certificate_file: Option<PathBuf>,
    #[serde(default = "default_authority")]
    pub authority: String,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    #[serde(default)]
    pub account: Option<String>,
    /// Filled in by [`Config::load`]; never deserialized from the file.
    #[serde(skip)]
    pub credential: Option<Credential>,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub tenant: String,
    #[serde(deserialize_with = "group_object_id")]
    pub group_id: ObjectId,
    pub order: i64,
    pub target: Target,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub portal_access: Option<bool>,
    #[serde(default)]
    pub account: Option<String>,
}

/// A rule's `group_id`: the group's object id, with the fix in the error.
fn group_object_id<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
    let text = String::deserialize(d)?;
    ObjectId::parse(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{e}; use the group's Object ID from the Entra admin center"
        ))
    })
}

impl RuleConfig {
    /// The rule as the decisions read it.
    pub fn rule(&self) -> Rule {
        Rule {
            group_id: self.group_id,
            order: self.order,
            target: self.target,
            role: self.role.clone(),
            portal_access: self.portal_access,
            account: self.account.clone(),
        }
    }
}

impl Config {
    /// Reads `path`, applies `ENTRA_SYNC__…` overrides from `env`, validates, and reads secrets.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Self::load_without_secrets(path)?;
        config.load_secrets(&|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// [`Config::load`] without reading the client secrets, for commands that only read the
    /// store (`status`): they also work from a shell, where secrets given to the service by
    /// systemd (`LoadCredential`) are not there.
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: io_reason(&e),
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut config = Self::parse(&text, &env)?;
        config.resolve_relative_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Parses and validates TOML text with overrides, without touching secrets or files.
    pub fn parse(text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let prefix = format!("{ENV_PREFIX}__");
        let overrides: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .cloned()
            .collect();
        for (key, _) in &overrides {
            if !known_env_key(&key[prefix.len()..]) {
                return Err(invalid(
                    key.clone(),
                    "unknown environment override; remove it or fix its name \
                     (ENTRA_SYNC__SECTION__KEY for keys of [store], [schedule], [sync], [safety], \
                     [retention], [admin], [employee_defaults]; tenants and rules live in the file)",
                ));
            }
        }
        let source = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("admin.allowed_hosts")
            .source(Some(overrides.iter().cloned().collect()));
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(source)
            .build()
            .map_err(|e| ConfigError::Parse(one_line(&e.to_string())))?;
        let config: Config = serde_path_to_error::deserialize(built).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                ConfigError::Parse(one_line(&inner))
            } else {
                invalid(path, inner)
            }
        })?;
        config.validate()
    }
}

/// Whether an `ENTRA_SYNC__A__B` override names a key of a known section.
fn known_env_key(rest: &str) -> bool {
    {
        const KEYS: &[(&str, &[&str])] = &[
            ("store", &["path"]),
            ("schedule", &["sync", "full_sync"]),
            (
                "sync",
                &[
                    "email_source",
                    "nested_groups",
                    "default_phone_type",
                    "reconnect_after_seconds",
                    "max_attempts",
                    "max_retry_wait_seconds",
                    "max_concurrency",
                    "tenant_concurrency",
                    "request_timeout_seconds",
                    "retry_base_ms",
                ],
            ),
            (
                "safety",
                &[
                    "max_deactivations",
                    "max_deactivation_percent",
                    "deactivate_after_minutes",
                ],
            ),
            ("retention", &["purge_deactivated_after_days"]),
            ("admin", &["listen", "token_file", "allowed_hosts"]),
            (
                "employee_defaults",
                &[
                    "first_name",
                    "last_name",
                    "job_title",
                    "phone",
                    "department",
                ],
            ),
        ];
        let lower = rest.to_ascii_lowercase();
        let mut parts = lower.splitn(2, "__");
        let (Some(section), Some(key)) = (parts.next(), parts.next()) else {
            return false;
        };
        KEYS.iter()
            .any(|(s, keys)| *s == section && keys.contains(&key))
    }
}

impl Config {
    fn validate(mut self) -> Result<Config, ConfigError> {
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must name the SQLite file"));
        }
        for (key, expr) in [
            ("schedule.sync", &self.schedule.sync),
            ("schedule.full_sync", &self.schedule.full_sync),
        ] {
            crate::schedule::validate_cron(expr).map_err(|m| invalid(key, m))?;
        }
        if self.sync.max_attempts == 0 {
            return Err(invalid("sync.max_attempts", "must be at least 1"));
        }
        if self.sync.request_timeout_seconds == 0 {
            return Err(invalid(
                "sync.request_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.sync.max_concurrency == 0 {
            return Err(invalid("sync.max_concurrency", "must be at least 1"));
        }
        if self.sync.tenant_concurrency == 0 {
            return Err(invalid("sync.tenant_concurrency", "must be at least 1"));
        }
        if self.safety.max_deactivation_percent > 100 {
            return Err(invalid(
                "safety.max_deactivation_percent",
                "must be between 0 (off) and 100",
            ));
        }
        let listen = self
            .admin
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| invalid("admin.listen", "must be an address like 127.0.0.1:8650"))?;
        if !listen.ip().is_loopback() && self.admin.token_file.trim().is_empty() {
            return Err(invalid(
                "admin.token_file",
                format!(
                    "required when admin.listen ({listen}) is not a loopback address: anyone who reaches the port could run syncs; \
                     set token_file to a file holding a long random token, or listen on 127.0.0.1"
                ),
            ));
        }
        for (i, host) in self.admin.allowed_hosts.iter_mut().enumerate() {
            let trimmed = host.trim().trim_end_matches('.').to_ascii_lowercase();
            // An IPv6 address may come bracketed; a port is never part of it.
            let name = trimmed
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(&trimmed)
                .to_string();
            let ipv6 = name.parse::<std::net::Ipv6Addr>().is_ok();
            if name.is_empty()
                || (!ipv6
                    && !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
            {
                return Err(invalid(
                    format!("admin.allowed_hosts[{i}]"),
                    format!(
                        "\"{host}\" is not a host name; give names like \"sync.example.internal\" (no scheme, port or path)"
                    ),
                ));
            }
            *host = name;
        }
        if self.tenants.is_empty() {
            return Err(invalid(
                "tenants",
                "no [[tenants]] configured; add one (see config.example.toml)",
            ));
        }
        let mut names = HashSet::new();
        let mut directories = HashSet::new();
        for (i, t) in self.tenants.iter_mut().enumerate() {
            if !directories.insert(t.tenant_id.trim().to_ascii_lowercase()) {
                return Err(invalid(
                    format!("tenants[{i}].tenant_id"),
                    format!(
                        "\"{}\" is already the directory of another entry; one entry per directory (merge their rules)",
                        t.tenant_id
                    ),
                ));
            }
            let key = |k: &str| format!("tenants[{i}].{k}");
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    key("name"),
                    "must be a short name of letters, digits, '-' or '_'",
                ));
            }
            if !names.insert(t.name.to_ascii_lowercase()) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "duplicate tenant name \"{}\"; tenant names must be unique",
                        t.name
                    ),
                ));
            }
            if t.tenant_id.is_empty()
                || (parse_guid(&t.tenant_id).is_none() && !is_domain(&t.tenant_id))
            {
                return Err(invalid(
                    key("tenant_id"),
                    format!(
                        "\"{}\" is neither a GUID nor a domain name (e.g. contoso.onmicrosoft.com)",
                        t.tenant_id
                    ),
                ));
            }
            if matches!(
                t.tenant_id.to_ascii_lowercase().as_str(),
                "common" | "organizations" | "consumers"
            ) {
                return Err(invalid(
                    key("tenant_id"),
                    "client credentials need a tenant-specific authority, not common/organizations",
                ));
            }
            t.client_id = parse_guid(&t.client_id).ok_or_else(|| {
                invalid(
                    key("client_id"),
                    format!(
                        "\"{}\" is not a GUID; use the Application (client) ID of the app registration",
                        t.client_id
                    ),
                )
            })?;
            let given = [
                t.client_secret_file.is_some(),
                t.client_secret_env.is_some(),
                t.client_certificate_file.is_some(),
            ];
            match given.iter().filter(|g| **g).count() {
                0 => {
                    return Err(invalid(
                        key("client_secret_file"),
                        "missing: set client_certificate_file (a PEM with key and certificate), client_secret_file (a file holding the secret) or client_secret_env",
                    ));
                }
                1 => {}
                _ => {
                    return Err(invalid(
                        key("client_secret_file"),
                        "set one of client_certificate_file, client_secret_file and client_secret_env, not several",
                    ));
                }
            }
            t.authority = check_url(&key("authority"), &t.authority)?;
            t.graph_url = check_url(&key("graph_url"), &t.graph_url)?;
            // A token (or the secret) never crosses a network in clear: plain http only when
            // both ends are loopback test servers.
            let plain = |u: &str| u.starts_with("http://");
            if plain(&t.authority) != plain(&t.graph_url) {
                let k = if plain(&t.graph_url) {
                    "graph_url"
                } else {
                    "authority"
                };
                return Err(invalid(
                    key(k),
                    "plain http:// is accepted only when authority and graph_url are both loopback test servers; use https:// for both",
                ));
            }
        }
        let mut seen_rules = HashSet::new();
        for (i, r) in self.rules.iter_mut().enumerate() {
            let key = |k: &str| format!("rules[{i}].{k}");
            if !self.tenants.iter().any(|t| t.name == r.tenant) {
                return Err(invalid(
                    key("tenant"),
                    format!(
                        "names tenant \"{}\", which is not configured; add a [[tenants]] entry or fix the name",
                        r.tenant
                    ),
                ));
            }
            if !seen_rules.insert((r.tenant.clone(), r.group_id)) {
                return Err(invalid(
                    key("group_id"),
                    "this group already has a rule for this tenant; merge the two rules",
                ));
            }
            match r.target {
                Target::Employee => {
                    if r.portal_access.is_some() || r.account.is_some() {
                        return Err(invalid(
                            key("target"),
                            "portal_access and account apply to contact rules only",
                        ));
                    }
                }
                Target::Contact => {
                    if r.role.is_some() {
                        return Err(invalid(key("role"), "role applies to employee rules only"));
                    }
                    let tenant_account = self
                        .tenants
                        .iter()
                        .find(|t| t.name == r.tenant)
                        .and_then(|t| t.account.clone());
                    if r.account.is_none() && tenant_account.is_none() {
                        return Err(invalid(
                            key("account"),
                            "contact rules need an account: set it here or on the tenant",
                        ));
                    }
                }
            }
        }
        Ok(self)
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        self.base_dir = base.to_path_buf();
        if self.store.path.is_relative() {
            self.store.path = base.join(&self.store.path);
        }
    }

    /// Reads every tenant's credential (secret or certificate). `env` looks up environment
    /// variables. A relative file name is read from systemd's `$CREDENTIALS_DIRECTORY` when
    /// set, else from the config file's directory, like the store path.
    pub fn load_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let credentials_dir = env("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let base_dir = self.base_dir.clone();
        for (i, t) in self.tenants.iter_mut().enumerate() {
            if let Some(file) = &t.client_certificate_file {
                let key = format!("tenants[{i}].client_certificate_file");
                let pem = SecretSource::File(file.clone())
                    .read(
                        "certificate and private key (PEM)",
                        credentials_dir.as_deref(),
                        &base_dir,
                        env,
                    )
                    .map_err(|m| invalid(&key, m))?;
                let cert = Certificate::from_pem(pem).map_err(|m| invalid(&key, m))?;
                t.credential = Some(Credential::Certificate(cert));
                continue;
            }
            let (source, key) = match (&t.client_secret_file, &t.client_secret_env) {
                (Some(file), _) => (
                    SecretSource::File(file.clone()),
                    format!("tenants[{i}].client_secret_file"),
                ),
                (_, Some(var)) => (
                    SecretSource::Env(var.clone()),
                    format!("tenants[{i}].client_secret_env"),
                ),
                (None, None) => continue,
            };
            let secret = source
                .read("client secret", credentials_dir.as_deref(), &base_dir, env)
                .map_err(|m| invalid(key, m))?;
            t.credential = Some(Credential::Secret(secret));
        }
        Ok(())
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    pub fn rules_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a RuleConfig> + 'a {
        self.rules.iter().filter(move |r| r.tenant == tenant)
    }
}

/// The file a CLI should read: `--config`, else `$ENTRA_SYNC_CONFIG`, else the default.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("ENTRA_SYNC_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Error texts of the TOML parser span several lines (source excerpt, caret); keep one.
fn one_line(text: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim().trim_start_matches('|').trim();
        if t.is_empty()
            || t.chars().all(|c| c == '^' || c == ' ')
            || line.trim_start().starts_with(|c: char| c.is_ascii_digit()) && line.contains('|')
        {
            continue;
        }
        parts.push(t);
    }
    parts.join(": ")
}

pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// A GUID in canonical lower-case form, or `None`.
pub fn parse_guid(s: &str) -> Option<String> {
    ObjectId::parse(s).ok().map(|id| id.to_string())
}

fn is_domain(s: &str) -> bool {
    s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_url(key: &str, raw: &str) -> Result<String, ConfigError> {
    let url =
        url::Url::parse(raw).map_err(|e| invalid(key, format!("\"{raw}\" is not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if !loopback {
                return Err(invalid(
                    key,
                    format!(
                        "\"{raw}\" uses plain http://, allowed only for loopback test servers; use https://"
                    ),
                ));
            }
        }
        other => {
            return Err(invalid(
                key,
                format!("\"{raw}\" has scheme {other}:, expected https://"),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            key,
            format!("\"{raw}\" must be a base URL without ? or #"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            key,
            "must not carry a user name or password (user@host): give the base URL only",
        ));
    }
    // The URL as parsed (`HTTP://` is `http://`), so later checks see what is used.
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MINIMAL: &str = r#"
[store]
path = "/tmp/psa.db"

[[tenants]]
name = "msp"
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-0000000000AA"
client_secret_env = "MSP_SECRET"
account = "Contoso Ltd"

[[rules]]
tenant = "msp"
group_id = "11111111-1111-1111-1111-111111111111"
order = 10
target = "employee"
role = "Admin"
"#;

    #[tokio::test]
    async fn the_config_graph_sim_writes_is_accepted() {
        let sim = graph_sim::Sim::start(graph_sim::SimOptions::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = sim.config_toml(&dir.path().join("psa.db"), &dir.path().join("sim.secret"));
        if let Err(e) = Config::parse(&text, &[]) {
            panic!("entra-sync rejects the config graph-sim writes: {e}\n{text}");
        }
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(text, &env).unwrap_err().to_string()
    }

    #[test]
    fn example_config_parses_and_documents_every_key() {
        let text = include_str!("../config.example.toml");
        let config = Config::parse(text, &[]).unwrap();
        assert_eq!(config.tenants.len(), 2);
        assert!(config.rules.len() >= 3);
    }

    #[test]
    fn minimal_config_gets_spec_defaults_and_canonical_ids() {
        let c = Config::parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.sync.max_attempts, 6);
        assert_eq!(c.safety.max_deactivations, 50);
        assert_eq!(c.safety.max_deactivation_percent, 20);
        assert_eq!(
            c.tenants[0].client_id,
            "00000000-0000-0000-0000-0000000000aa"
        );
        assert_eq!(c.tenants[0].authority, "https://login.microsoftonline.com");
    }

    #[test]
    fn env_override_changes_a_key_and_unknown_override_is_refused() {
        let env = vec![(
            "ENTRA_SYNC__SYNC__MAX_ATTEMPTS".to_string(),
            "3".to_string(),
        )];
        assert_eq!(Config::parse(MINIMAL, &env).unwrap().sync.max_attempts, 3);
        let e = err(MINIMAL, &[("ENTRA_SYNC__SYNC__MAX_ATEMPTS", "3")]);
        assert!(e.contains("ENTRA_SYNC__SYNC__MAX_ATEMPTS"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = err(&MINIMAL.replace("order = 10", "order = 10\nordr = 3"), &[]);
        assert!(e.contains("rules[0]") && e.contains("ordr"), "{e}");
        let e = err(&format!("{MINIMAL}\n[sync]\nnested = true\n"), &[]);
        assert!(e.contains("sync") && e.contains("nested"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err(&MINIMAL.replace("order = 10", "order = \"ten\""), &[]);
        assert!(e.contains("rules[0].order"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_fix() {
        let cases = [
            (
                MINIMAL.replace("11111111-1111-1111-1111-111111111111", "sales-team"),
                "rules[0].group_id",
            ),
            (
                MINIMAL.replace("tenant = \"msp\"", "tenant = \"mps\""),
                "rules[0].tenant",
            ),
            (
                MINIMAL.replace("0000000000AA", "0000000000"),
                "tenants[0].client_id",
            ),
            (
                MINIMAL.replace(
                    "account = \"Contoso Ltd\"",
                    "graph_url = \"http://graph.example.com\"",
                ),
                "tenants[0].graph_url",
            ),
            (
                MINIMAL.replace("client_secret_env = \"MSP_SECRET\"", ""),
                "tenants[0].client_secret_file",
            ),
            (
                MINIMAL.replace("contoso.onmicrosoft.com", "common"),
                "tenants[0].tenant_id",
            ),
        ];
        for (text, key) in cases {
            let e = err(&text, &[]);
            assert!(e.contains(key), "expected {key} in: {e}");
        }
    }

    #[test]
    fn duplicate_tenant_names_are_refused() {
        let dup = MINIMAL.replace(
            "[[rules]]",
            "[[tenants]]\nname = \"MSP\"\ntenant_id = \"fabrikam.com\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret_env = \"X\"\n\n[[rules]]",
        );
        let e = err(&dup, &[]);
        assert!(
            e.contains("tenants[1].name") && e.contains("duplicate"),
            "{e}"
        );
    }

    /// Two entries of one directory would take each other's links for a rename.
    #[test]
    fn two_entries_for_one_directory_are_refused() {
        let dup = MINIMAL.replace(
            "[[rules]]",
            "[[tenants]]\nname = \"other\"\ntenant_id = \"Contoso.onmicrosoft.com\"\nclient_id = \"00000000-0000-0000-0000-000000000001\"\nclient_secret_env = \"X\"\n\n[[rules]]",
        );
        let e = err(&dup, &[]);
        assert!(
            e.contains("tenants[1].tenant_id") && e.contains("one entry per directory"),
            "{e}"
        );
    }

    #[test]
    fn plain_http_needs_both_ends_on_loopback() {
        // A real token from the real authority would travel in clear to a local port.
        let e = err(
            &MINIMAL.replace(
                "account = \"Contoso Ltd\"",
                "account = \"C\"\ngraph_url = \"http://127.0.0.1:9\"",
            ),
            &[],
        );
        assert!(
            e.contains("tenants[0].graph_url") && e.contains("both"),
            "{e}"
        );
        let e = err(
            &MINIMAL.replace(
                "account = \"Contoso Ltd\"",
                "account = \"C\"\nauthority = \"http://localhost:9\"",
            ),
            &[],
        );
        assert!(e.contains("tenants[0].authority"), "{e}");
        // The scheme as parsed, not as typed.
        for graph_url in ["HTTP://127.0.0.1:9", " http://127.0.0.1:9"] {
            let e = err(
                &MINIMAL.replace(
                    "account = \"Contoso Ltd\"",
                    &format!("account = \"C\"\ngraph_url = \"{graph_url}\""),
                ),
                &[],
            );
            assert!(e.contains("tenants[0].graph_url"), "{graph_url}: {e}");
        }
        let e = err(
            &MINIMAL.replace(
                "account = \"Contoso Ltd\"",
                "account = \"C\"\ngraph_url = \"https://user:pw@graph.microsoft.com\"",
            ),
            &[],
        );
        assert!(
            e.contains("user name or password") && !e.contains("pw@"),
            "{e}"
        );
    }

    #[test]
    fn an_admin_endpoint_off_loopback_needs_a_token() {
        for listen in ["0.0.0.0:8650", "[::]:8650", "192.0.2.10:8650"] {
            let text = format!("{MINIMAL}\n[admin]\nlisten = \"{listen}\"\n");
            let e = err(&text, &[]);
            assert!(e.contains("admin.token_file") && e.contains(listen), "{e}");
            let with_token = format!("{text}token_file = \"admin.token\"\n");
            assert!(Config::parse(&with_token, &[]).is_ok(), "{listen}");
        }
        let e = err(
            &format!("{MINIMAL}\n[admin]\nallowed_hosts = [\"https://x.example/\"]\n"),
            &[],
        );
        assert!(e.contains("admin.allowed_hosts[0]"), "{e}");
        let e = err(
            &format!("{MINIMAL}\n[admin]\nallowed_hosts = [\"sync.example:8650\"]\n"),
            &[],
        );
        assert!(e.contains("port"), "a port never matches: {e}");
        let v6 = format!("{MINIMAL}\n[admin]\nallowed_hosts = [\"[fd00::1]\"]\n");
        assert_eq!(
            Config::parse(&v6, &[]).unwrap().admin.allowed_hosts,
            ["fd00::1"]
        );
        let env = [(
            "ENTRA_SYNC__ADMIN__ALLOWED_HOSTS".to_string(),
            "Sync.Example,other.example".to_string(),
        )];
        let c = Config::parse(MINIMAL, &env).unwrap();
        assert_eq!(c.admin.allowed_hosts, ["sync.example", "other.example"]);
        assert_eq!(c.sync.max_retry_wait_seconds, 300);
    }

    #[test]
    fn loopback_http_is_allowed_for_test_servers() {
        let text = MINIMAL.replace(
            "account = \"Contoso Ltd\"",
            "account = \"C\"\nauthority = \"http://127.0.0.1:8080/\"\ngraph_url = \"http://localhost:9\"",
        );
        let c = Config::parse(&text, &[]).unwrap();
        assert_eq!(c.tenants[0].authority, "http://127.0.0.1:8080");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Arbitrary text, or the example with a line replaced by junk, is a clean error or a
        /// valid config — never a panic.
        #[test]
        fn any_text_is_a_clean_error_or_a_config(text in "\\PC{0,200}") {
            if let Err(e) = Config::parse(&text, &[]) {
                prop_assert!(!e.to_string().contains('\n'), "{}", e);
            }
        }

        #[test]
        fn a_mangled_example_is_a_clean_error_or_a_config(line in 0usize..120, junk in "[ -~]{0,40}") {
            let example = include_str!("../config.example.toml");
            let mangled: Vec<String> = example
                .lines()
                .enumerate()
                .map(|(i, l)| if i == line { junk.clone() } else { l.to_string() })
                .collect();
            if let Err(e) = Config::parse(&mangled.join("\n"), &[]) {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(!e.to_string().contains('\n'), "{}", e);
            }
        }
    }
}
