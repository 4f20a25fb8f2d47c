//! The command line (clap): one function per subcommand that loads what it needs, calls the
//! library and prints the result for a person or as JSON. No business logic here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, config_path};
use crate::store::Store;
use crate::sync::{self, SyncOptions, SyncSummary};
use entra_sync_core::plan::Action;
use entra_sync_core::run::RunStatus;

#[derive(Debug, Parser)]
#[command(
    name = "entra-sync",
    version,
    about = "Sync Microsoft Entra ID security groups into a PSA store"
)]
pub struct Cli {
    /// Config file [default: $ENTRA_SYNC_CONFIG or /etc/entra-sync/config.toml]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: scheduled syncs, admin endpoint, SIGHUP reload, systemd notify.
    Run,
    /// Sync once (safe while the daemon runs: waits for its turn).
    Sync {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Ignore stored delta cursors and read every group in full.
        #[arg(long)]
        full: bool,
        /// Print the planned changes and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Resync one person: Entra object id, UPN or email.
        #[arg(long, value_name = "UPN|EMAIL|OBJECT-ID")]
        user: Option<String>,
        /// Apply deactivations held by the safety limits.
        #[arg(long)]
        allow_mass_deactivation: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Write the plan to this file to review, then `apply` it (implies --dry-run).
        #[arg(long, value_name = "FILE")]
        plan_out: Option<PathBuf>,
    },
    /// Apply a plan written by `sync --plan-out`, whole, or nothing if anything it was
    /// planned from moved since.
    Apply {
        /// The plan file.
        file: PathBuf,
        /// Apply deactivations over the safety limits that the plan carries.
        #[arg(long)]
        allow_mass_deactivation: bool,
        /// Print what was applied as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config and test every connection.
    Check,
    /// Last runs per tenant and store totals.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The change log, newest first: each field old → new.
    Changes {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this person: object id, UPN or email (as `sync --user`).
        #[arg(long, value_name = "UPN|EMAIL|OBJECT-ID")]
        user: Option<String>,
        /// Only this run (its id in `status`).
        #[arg(long)]
        run: Option<i64>,
        /// Only changes at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// At most this many changes.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Why a person is (or is not) what the store says: scope, groups, rules, record, what the
    /// next run would change. Reads Graph for that person only; writes nothing.
    Explain {
        /// Entra object id, UPN or email (as `sync --user`).
        #[arg(value_name = "UPN|EMAIL|OBJECT-ID")]
        user: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a full demo against a built-in simulated tenant (no network, no credentials).
    Demo,
}

/// Exit codes of SPEC 1.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Prints one error line and returns the exit code for it.
pub fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

pub fn load_config(flag: &Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = config_path(flag.clone());
    Config::load(&path).map_err(|e| fail(EXIT_USAGE, e))
}

/// The config without its client secrets, for `status`, which only reads the store.
pub fn load_config_without_secrets(flag: &Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = config_path(flag.clone());
    Config::load_without_secrets(&path).map_err(|e| fail(EXIT_USAGE, e))
}

pub async fn sync_command(
    config: &Config,
    opts: SyncOptions,
    json: bool,
    plan_out: Option<PathBuf>,
) -> ExitCode {
    let opts = SyncOptions {
        dry_run: opts.dry_run || plan_out.is_some(),
        plan_out: plan_out.is_some(),
        ..opts
    };
    let summary = match sync::run(config, &opts).await {
        Ok(s) => s,
        Err(e @ sync::SyncError::UnknownTenant(_)) => return fail(EXIT_USAGE, e),
        Err(e) => return fail(EXIT_FAILED, e),
    };
    if let Some(path) = &plan_out {
        if summary
            .tenants
            .iter()
            .any(|t| t.status == RunStatus::Failed)
        {
            print!("{}", render_summary(&summary, true));
            return fail(
                EXIT_FAILED,
                format!("no plan written to {}: a tenant failed", path.display()),
            );
        }
        let now = crate::clock::Clock::now_rfc3339(&crate::clock::SystemClock);
        let file = crate::planfile::PlanFile::of(&summary, &now);
        if let Err(e) = crate::planfile::write(path, &file) {
            return fail(
                EXIT_FAILED,
                format!("cannot write the plan to {}: {e}", path.display()),
            );
        }
        eprintln!(
            "plan written to {}; review it, then `entra-sync apply {}`",
            path.display(),
            path.display()
        );
    }
    if json {
        let mut printable = summary.clone();
        if !opts.dry_run {
            for t in &mut printable.tenants {
                t.plan = None;
            }
        }
        match serde_json::to_string_pretty(&printable) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(EXIT_FAILED, e),
        }
    } else {
        print!("{}", render_summary(&summary, opts.dry_run));
    }
    ExitCode::from(summary.exit_code() as u8)
}

/// `apply FILE`: the reviewed plan, whole, or nothing (exit 1 naming what moved, 3 for
/// deactivations over the limits without the flag, 2 for a file that is not a plan).
pub fn apply_command(
    config: &Config,
    path: &std::path::Path,
    allow_mass_deactivation: bool,
    json: bool,
) -> ExitCode {
    use crate::planfile::ApplyError;
    let file = match crate::planfile::read(path) {
        Ok(f) => f,
        Err(e) => return fail(EXIT_USAGE, e),
    };
    let now = crate::clock::Clock::now_rfc3339(&crate::clock::SystemClock);
    match crate::planfile::apply(config, &file, allow_mass_deactivation, &now) {
        Ok(applied) => {
            if json {
                println!("{:#}", serde_json::json!({ "applied": applied }));
            } else {
                for a in &applied {
                    let c = &a.counts;
                    println!(
                        "tenant {}: plan of {} applied (run {}): {} created, {} updated, {} reactivated, {} deactivated, {} archived, {} purged",
                        a.tenant,
                        file.planned_at,
                        a.run_id,
                        c.created,
                        c.updated,
                        c.reactivated,
                        c.deactivated,
                        c.archived,
                        c.purged
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e @ ApplyError::Held(_)) => fail(3, e),
        Err(e @ ApplyError::Unreadable(_)) => fail(EXIT_USAGE, e),
        Err(e) => fail(EXIT_FAILED, e),
    }
}

/// `explain USER`: a dry-run plan of each tenant that knows the person, explained. Exit 1 when
/// no tenant knows them or a tenant's read failed.
pub async fn explain_command(
    config: &Config,
    user: String,
    tenant: Option<String>,
    json: bool,
) -> ExitCode {
    let opts = SyncOptions {
        tenant,
        user: Some(user),
        dry_run: true,
        explain: true,
        ..SyncOptions::default()
    };
    let summary = match sync::run(config, &opts).await {
        Ok(s) => s,
        Err(e @ sync::SyncError::UnknownTenant(_)) => return fail(EXIT_USAGE, e),
        Err(e) => return fail(EXIT_FAILED, e),
    };
    let failed = summary
        .tenants
        .iter()
        .any(|t| t.status == RunStatus::Failed);
    if json {
        println!("{:#}", summary.explanations_json());
    } else {
        print!("{}", render_explanations(&summary));
    }
    if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The human `explain`: each person's sentences, a blank line between people.
pub fn render_explanations(summary: &SyncSummary) -> String {
    let mut out = String::new();
    for t in &summary.tenants {
        if let Some(e) = &t.error {
            out.push_str(&format!("tenant {}: cannot explain: {e}\n", t.tenant));
        }
        for e in &t.explanations {
            if !out.is_empty() {
                out.push('\n');
            }
            for line in e.lines() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// The human summary: one line per tenant, its reports, and with `dry_run` the plan.
pub fn render_summary(summary: &SyncSummary, dry_run: bool) -> String {
    let mut out = String::new();
    for t in &summary.tenants {
        let status = match t.status {
            RunStatus::Success => "ok",
            RunStatus::Held => "HELD",
            RunStatus::Failed => "FAILED",
            RunStatus::DryRun => "dry run",
        };
        let c = &t.counts;
        out.push_str(&format!(
            "tenant {}: {} sync {status} in {:.1} s: {} created, {} updated, {} reactivated, {} deactivated, {} archived, {} purged, {} held; {} reports; {} Graph requests\n",
            t.tenant, t.mode, t.duration_ms as f64 / 1000.0,
            c.created, c.updated, c.reactivated, c.deactivated, c.archived, c.purged, c.held, c.reports, t.graph_requests
        ));
        if let Some(e) = &t.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        if let Some(reason) = &t.hold_reason {
            out.push_str(&format!(
                "  held: {reason}; apply with `entra-sync sync --allow-mass-deactivation`\n"
            ));
        }
        for r in &t.reports {
            out.push_str(&format!("  report: {}: {}\n", r.user, r.message));
        }
        for p in &t.pending {
            out.push_str(&format!(
                "  pending: {} out of scope since {}; deactivated at {} unless they come back\n",
                p.user, p.since, p.due
            ));
        }
        if dry_run && let Some(plan) = &t.plan {
            for change in &plan.changes {
                if change.action != Action::Resnapshot {
                    out.push_str(&format!("  {}\n", change));
                }
            }
            for change in &plan.held {
                out.push_str(&format!("  (held) {}\n", change));
            }
            for g in &plan.groups {
                out.push_str(&format!(
                    "  group {} ({}): +{} -{} members{}\n",
                    g.display_name.as_deref().unwrap_or("?"),
                    g.object_id,
                    g.add.len(),
                    g.remove.len(),
                    if g.remove_group {
                        ", removed"
                    } else if g.group.is_none() {
                        ", new"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    out
}

pub async fn check_command(config: &Config) -> ExitCode {
    let lines = crate::check::run(config).await;
    println!(
        "config OK: {} tenant(s), {} rule(s)",
        config.tenants.len(),
        config.rules.len()
    );
    for line in &lines {
        println!(
            "{} {}: {}",
            if line.ok { "OK  " } else { "FAIL" },
            line.subject,
            line.detail
        );
    }
    if lines.iter().all(|l| l.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `entra-sync changes`: the change log as people read it, or as JSON.
pub fn changes_command(
    config: &Config,
    mut query: crate::store::ChangeQuery,
    json: bool,
) -> ExitCode {
    if let Some(since) = &query.since {
        match chrono::DateTime::parse_from_rfc3339(since) {
            Ok(t) => query.since = Some(crate::clock::rfc3339(t.with_timezone(&chrono::Utc))),
            Err(_) => {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "--since {since}: not an RFC 3339 time; write e.g. 2026-12-01T00:00:00Z"
                    ),
                );
            }
        }
    }
    if let Some(t) = &query.tenant
        && config.tenant(t).is_none()
    {
        return fail(EXIT_USAGE, format!("no tenant named \"{t}\" in the config"));
    }
    let store = match Store::open_read_only(&config.store.path) {
        Ok(Some(s)) => s,
        Ok(None) => {
            println!(
                "{}",
                if json {
                    "[]"
                } else {
                    "no store yet: no sync has run"
                }
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(EXIT_FAILED, e),
    };
    let entries = match store.changes(&query) {
        Ok(e) => e,
        Err(e) => return fail(EXIT_FAILED, e),
    };
    if json {
        return match serde_json::to_string_pretty(&entries) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_FAILED, e),
        };
    }
    if entries.is_empty() {
        println!("no changes match");
    }
    for e in &entries {
        println!(
            "{}  run {}  {}  {} {} {}{}",
            e.at,
            e.run,
            e.tenant.as_deref().unwrap_or("-"),
            e.action,
            e.record_kind,
            e.record_id.map_or("-".to_string(), |id| id.to_string()),
            e.email
                .as_deref()
                .map_or(String::new(), |m| format!(" ({m})")),
        );
        match &e.changes {
            serde_json::Value::Object(fields) => {
                for (field, value) in fields {
                    match value.as_array().map(Vec::as_slice) {
                        Some([old, new]) => println!("    {field}: {old} → {new}"),
                        _ => println!("    {field}: {value}"),
                    }
                }
            }
            other => println!("    {other}"),
        }
    }
    ExitCode::SUCCESS
}

pub fn status_command(config: &Config, json: bool) -> ExitCode {
    let store = match Store::open_read_only(&config.store.path) {
        Ok(Some(s)) => s,
        Ok(None) => {
            if json {
                println!("{{\"runs\":[],\"totals\":null}}");
            } else {
                println!(
                    "no store yet at {}: no sync has run",
                    config.store.path.display()
                );
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(EXIT_FAILED, e),
    };
    let (runs, totals, cursors) =
        match (store.last_runs(5), store.totals(), store.cursor_saved_at()) {
            (Ok(r), Ok(t), Ok(c)) => (r, t, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(EXIT_FAILED, e),
        };
    let mut open = std::collections::BTreeMap::new();
    let mut edits = std::collections::BTreeMap::new();
    for tenant in &config.tenants {
        match (
            store.open_state(&tenant.name),
            store.local_edits(&tenant.name),
        ) {
            (Ok(state), Ok(n)) => {
                open.insert(tenant.name.clone(), state);
                edits.insert(tenant.name.clone(), n);
            }
            (Err(e), _) | (_, Err(e)) => return fail(EXIT_FAILED, e),
        };
    }
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let cursor_age = |tenant: &str| -> Option<i64> {
        let saved = chrono::DateTime::parse_from_rfc3339(cursors.get(tenant)?).ok()?;
        Some((now - saved.with_timezone(&chrono::Utc)).num_seconds())
    };
    if json {
        let ages: serde_json::Map<String, serde_json::Value> = config
            .tenants
            .iter()
            .map(|t| (t.name.clone(), serde_json::json!(cursor_age(&t.name))))
            .collect();
        let tenants: serde_json::Map<String, serde_json::Value> = open
            .iter()
            .map(|(name, state)| {
                let local = edits.get(name).copied().unwrap_or_default();
                (name.clone(), state.as_json(local))
            })
            .collect();
        let value = serde_json::json!({
            "runs": runs,
            "totals": totals,
            "cursor_age_seconds": ages,
            "tenants": tenants,
        });
        println!("{value:#}");
        return ExitCode::SUCCESS;
    }
    println!(
        "store {}: employees {} active / {}, contacts {} active / {}, groups {}",
        config.store.path.display(),
        totals.employees_active,
        totals.employees,
        totals.contacts_active,
        totals.contacts,
        totals.groups
    );
    for tenant in &config.tenants {
        let mine: Vec<_> = runs.iter().filter(|r| r.tenant == tenant.name).collect();
        if mine.is_empty() {
            println!("tenant {}: never synced", tenant.name);
        }
        match cursor_age(&tenant.name) {
            Some(age) => println!("tenant {}: delta cursors saved {age} s ago", tenant.name),
            None => println!(
                "tenant {}: no delta cursors (the next sync is a full one)",
                tenant.name
            ),
        }
        if let Some(n) = edits.get(&tenant.name).filter(|n| **n > 0) {
            println!(
                "tenant {}: {n} synced records carry local edits that the next Entra change of their user will overwrite (`entra-sync explain USER` shows them)",
                tenant.name
            );
        }
        if let Some(state) = open.get(&tenant.name) {
            if state.held_removals() > 0 {
                println!(
                    "tenant {}: {} deactivations held: {}; apply with `entra-sync sync --allow-mass-deactivation`",
                    tenant.name,
                    state.held_removals(),
                    state.hold_reason().unwrap_or_default()
                );
                for h in state.held.iter().filter(|h| h.removes()) {
                    println!(
                        "  held since {}: {} {} {}",
                        h.since, h.action, h.record_kind, h.user
                    );
                }
            }
            for p in state.pending() {
                println!(
                    "tenant {}: pending deactivation: {} out of scope since {}; deactivated at {} unless they come back",
                    tenant.name, p.user, p.since, p.due
                );
            }
            for r in &state.reports {
                println!(
                    "tenant {}: open report: {}: {}",
                    tenant.name, r.user, r.message
                );
            }
        }
        for r in mine {
            let c = &r.counts;
            println!(
                "tenant {}: {} {} {} (+{} ~{} ↑{} -{} archived {} held {}; {} reports){}",
                r.tenant,
                r.started_at,
                r.mode,
                r.status,
                c.created,
                c.updated,
                c.reactivated,
                c.deactivated,
                c.archived,
                c.held,
                c.reports,
                r.error
                    .as_ref()
                    .map(|e| format!(" error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}
