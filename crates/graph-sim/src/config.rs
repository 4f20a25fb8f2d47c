//! The entra-sync configuration that points at running simulators (`config_toml`,
//! `graph-sim --write-config`): one tenant (or, with `--tenants N`, each of them), one rule per
//! security group.
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
    let mut out = header(std::slice::from_ref(sh), store_path);
    tenant_section(&mut out, sh, "sim", secret_file);
    out
}

/// One config for several simulated tenants of one app (`graph-sim --tenants N`): tenants
/// `sim0`, `sim1`, … each with its rules.
pub(crate) fn fleet_config_toml(
    sims: &[std::sync::Arc<Shared>],
    store_path: &Path,
    secret_file: &Path,
) -> String {
    let mut out = header(sims, store_path);
    for (i, sh) in sims.iter().enumerate() {
        tenant_section(&mut out, sh, &format!("sim{i}"), secret_file);
    }
    out
}

fn header(sims: &[std::sync::Arc<Shared>], store_path: &Path) -> String {
    let mut out = String::new();
    for sh in sims {
        let _ = writeln!(
            out,
            "# entra-sync config for graph-sim at {} (seed {}, {} users, {} groups)",
            sh.base_url, sh.opts.seed, sh.opts.users, sh.opts.groups
        );
    }
    let _ = writeln!(
        out,
        "\n[store]\npath = {}\n",
        toml_str(&store_path.to_string_lossy())
    );
    let _ = writeln!(out, "[sync]\nnested_groups = true\n");
    out
}

fn tenant_section(out: &mut String, sh: &std::sync::Arc<Shared>, name: &str, secret_file: &Path) {
    let control = SimControl { shared: sh.clone() };
    let _ = writeln!(out, "[[tenants]]");
    let _ = writeln!(out, "name = {}", toml_str(name));
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
        let _ = writeln!(out, "tenant = {}", toml_str(name));
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
    out.push('\n');
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
