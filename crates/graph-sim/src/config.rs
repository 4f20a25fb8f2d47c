//! The entra-sync configuration that points at a running simulator (`config_toml`,
//! `graph-sim --write-config`): one tenant, one rule per security group.
//!
//! Writes only keys the daemon's config schema knows; never writes the secret itself.

use std::fmt::Write as _;
use std::path::Path;

use super::{Shared, SimControl};

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The company the tenant's contacts belong to: `contoso.onmicrosoft.com` → `Contoso Ltd`.
pub(crate) fn account_name(tenant: &str) -> String {
    let first = tenant.split('.').next().unwrap_or(tenant);
    let mut c = first.chars();
    let cap: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => "Simulated".to_owned(),
    };
    format!("{cap} Ltd")
}

const ROLES: &[Option<&str>] = &[Some("Technician"), Some("Admin"), None, Some("Dispatcher")];

pub(crate) fn config_toml(
    sh: &std::sync::Arc<Shared>,
    store_path: &Path,
    secret_file: &Path,
) -> String {
    let control = SimControl { shared: sh.clone() };
    let mut out = String::new();
    let _ = writeln!(out, "# entra-sync config for graph-sim at {}", sh.base_url);
    let _ = writeln!(
        out,
        "# (seed {}, {} users, {} groups)\n",
        sh.opts.seed, sh.opts.users, sh.opts.groups
    );
    let _ = writeln!(
        out,
        "[store]\npath = {}\n",
        toml_str(&store_path.to_string_lossy())
    );
    let _ = writeln!(out, "[sync]\nnested_groups = true\n");
    let _ = writeln!(out, "[[tenants]]");
    let _ = writeln!(out, "name = \"sim\"");
    let _ = writeln!(out, "tenant_id = {}", toml_str(&sh.opts.tenant));
    let _ = writeln!(out, "client_id = {}", toml_str(&sh.opts.client_id));
    let _ = writeln!(
        out,
        "client_secret_file = {}",
        toml_str(&secret_file.to_string_lossy())
    );
    let _ = writeln!(out, "authority = {}", toml_str(&sh.base_url));
    let _ = writeln!(out, "graph_url = {}", toml_str(&sh.base_url));
    let _ = writeln!(
        out,
        "account = {}",
        toml_str(&account_name(&sh.opts.tenant))
    );
    for (i, g) in control.security_groups().iter().enumerate() {
        let _ = writeln!(out, "\n# {}", g.display_name.replace('\n', " "));
        let _ = writeln!(out, "[[rules]]");
        let _ = writeln!(out, "tenant = \"sim\"");
        let _ = writeln!(out, "group_id = {}", toml_str(&g.id));
        let _ = writeln!(out, "order = {}", (i + 1) * 10);
        if i % 3 == 1 {
            let _ = writeln!(out, "target = \"contact\"");
            let _ = writeln!(out, "portal_access = {}", (i / 3) % 2 == 0);
        } else {
            let _ = writeln!(out, "target = \"employee\"");
            if let Some(role) = ROLES[i % ROLES.len()] {
                let _ = writeln!(out, "role = {}", toml_str(role));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_and_backslashes() {
        assert_eq!(toml_str(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    }

    #[test]
    fn account_from_domain() {
        assert_eq!(account_name("contoso.onmicrosoft.com"), "Contoso Ltd");
    }
}
