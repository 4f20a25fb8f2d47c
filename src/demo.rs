//! `entra-sync demo`: the embedded default. Starts graph-sim in-process, writes a config and a
//! store in a fresh directory, runs a full sync, changes a few things in the simulated tenant,
//! syncs again and prints what changed. Needs no network and no credentials.
//!
//! Uses the same [`crate::sync::run`] as every other entry point; only the printing is its own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{EXIT_FAILED, fail, render_summary};
use crate::config::Config;
use crate::store::Store;
use crate::sync::{self, SyncOptions, SyncSummary};
use entra_sync_core::plan::Action;
use entra_sync_core::rules::Target;
use graph_sim::{NewUser, Sim, SimOptions, UserPatch};

pub async fn run() -> ExitCode {
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILED, format!("demo: {e:#}")),
    }
}

fn fresh_dir() -> std::io::Result<PathBuf> {
    let stamp = crate::clock::Clock::now(&crate::clock::SystemClock).format("%Y%m%d-%H%M%S");
    let dir = std::env::temp_dir().join(format!("entra-sync-demo-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

async fn demo() -> anyhow::Result<()> {
    let dir = fresh_dir()?;
    let opts = SimOptions {
        users: 120,
        groups: 4,
        seed: 2026,
        ..SimOptions::default()
    };
    let secret = opts.client_secret.clone();
    let sim = Sim::start(opts).await?;
    let ctl = sim.control();
    let store_path = dir.join("psa.db");
    let secret_path = dir.join("sim.secret");
    let config_path = dir.join("config.toml");
    write_private(&secret_path, &secret)?;
    write_private(&config_path, &sim.config_toml(&store_path, &secret_path))?;
    let config = Config::load(&config_path)?;

    println!("entra-sync demo");
    println!("  simulated tenant {} at {}", ctl.tenant(), sim.base_url());
    println!(
        "  {} users, {} groups; {} mapping rules",
        ctl.users().len(),
        ctl.groups().len(),
        config.rules.len()
    );
    for rule in &config.rules {
        let name = ctl
            .group(&rule.group_id.to_string())
            .map(|g| g.display_name)
            .unwrap_or_default();
        let target = match rule.target {
            Target::Employee => format!(
                "employee{}",
                rule.role
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Target::Contact => format!(
                "contact{}",
                if rule.portal_access == Some(true) {
                    " (portal)"
                } else {
                    ""
                }
            ),
        };
        println!("    order {:>3}: {name:<28} → {target}", rule.order);
    }
    println!("  config and store in {}\n", dir.display());

    println!("1. Full sync into an empty store");
    let first = sync::run(&config, &SyncOptions::default()).await?;
    print!("{}", indent(&render_summary(&first, false)));
    print_totals(&store_path)?;

    // Change the tenant the way an admin would.
    println!("\n2. Changes in Entra");
    let employee_group = config.rules.iter().find(|r| r.target == Target::Employee);
    let contact_group = config.rules.iter().find(|r| r.target == Target::Contact);
    let synced = synced_user_ids(&first);
    let mut pick = synced.iter();
    if let Some(id) = pick.next()
        && let Some(u) = ctl.user(id)
    {
        ctl.update_user(
            id,
            UserPatch {
                job_title: Some(Some("Head of Support".into())),
                ..Default::default()
            },
        )?;
        println!("   {}: job title → Head of Support", u.user_principal_name);
    }
    if let Some(id) = pick.next()
        && let Some(u) = ctl.user(id)
    {
        ctl.disable_user(id)?;
        println!("   {}: account disabled", u.user_principal_name);
    }
    if let Some(rule) = employee_group {
        let new = ctl.add_user(NewUser {
            user_principal_name: "grace.hopper@contoso.onmicrosoft.com".into(),
            display_name: "Grace Hopper".into(),
            given_name: Some("Grace".into()),
            surname: Some("Hopper".into()),
            mail: Some("grace.hopper@contoso.com".into()),
            job_title: Some("Rear Admiral".into()),
            ..NewUser::default()
        });
        ctl.add_member(&rule.group_id.to_string(), &new.id)?;
        println!("   grace.hopper@contoso.onmicrosoft.com: new user, added to an employee group");
    }
    if let (Some(emp), Some(con)) = (employee_group, contact_group)
        && let Some(id) = ctl.group(&emp.group_id.to_string()).and_then(|g| {
            g.members.into_iter().find(|m| {
                ctl.user(m)
                    .is_some_and(|u| u.account_enabled && u.mail.is_some())
            })
        })
    {
        // Moved to customers only: becomes a client-portal contact, the employee is archived.
        for rule in config.rules.iter().filter(|r| r.target == Target::Employee) {
            let _ = ctl.remove_member(&rule.group_id.to_string(), &id);
        }
        ctl.add_member(&con.group_id.to_string(), &id)?;
        if let Some(u) = ctl.user(&id) {
            println!(
                "   {}: moved from an employee group to a contact group",
                u.user_principal_name
            );
        }
    }

    println!("\n3. Sync again: only what changed is written");
    let second = sync::run(&config, &SyncOptions::default()).await?;
    print!("{}", indent(&render_summary(&second, false)));
    for t in &second.tenants {
        for change in t.plan.iter().flat_map(|p| &p.changes) {
            if change.action != Action::Resnapshot {
                println!("     {change}");
            }
        }
    }
    print_totals(&store_path)?;
    println!(
        "\nTry: entra-sync --config {} status   (the simulated tenant is gone when the demo ends)",
        config_path.display()
    );
    sim.shutdown().await;
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn synced_user_ids(summary: &SyncSummary) -> Vec<String> {
    summary
        .tenants
        .iter()
        .flat_map(|t| t.plan.iter().flat_map(|p| &p.changes))
        .filter(|c| c.action == Action::Create)
        .map(|c| c.object_id.to_string())
        .collect()
}

fn print_totals(store_path: &Path) -> anyhow::Result<()> {
    if let Some(store) = Store::open_read_only(store_path)? {
        let t = store.totals()?;
        println!(
            "   store: {} employees ({} active), {} contacts ({} active), {} read-only groups",
            t.employees, t.employees_active, t.contacts, t.contacts_active, t.groups
        );
    }
    Ok(())
}
