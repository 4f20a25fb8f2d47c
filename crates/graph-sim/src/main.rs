//! graph-sim: serve a simulated Microsoft Entra ID tenant (token endpoint + Graph v1.0).
//!
//! Thin CLI over `graph_sim`. Prints the base URL as the first stdout line, then serves
//! until SIGINT/SIGTERM. See the crate README.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use graph_sim::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Sim, SimOptions};

#[derive(Debug, Parser)]
#[command(
    name = "graph-sim",
    version,
    about = "Simulated Microsoft Entra ID tenant: token endpoint and Graph v1.0"
)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Live users to generate.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Security groups to generate.
    #[arg(long, default_value_t = 6)]
    groups: usize,
    /// Seed of the generated tenant (same seed, same tenant).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Server-side maximum page size of member and user listings (Graph: 999).
    #[arg(long, default_value_t = 999)]
    page_size: usize,
    /// Entries per users/groups delta page.
    #[arg(long, default_value_t = 200)]
    delta_page_size: usize,
    /// Tenant domain name.
    #[arg(long, default_value = "contoso.onmicrosoft.com")]
    tenant: String,
    /// Client (application) id of the app registration.
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    client_id: String,
    /// Client secret the token endpoint accepts.
    #[arg(long, env = "GRAPH_SIM_CLIENT_SECRET", default_value = DEFAULT_CLIENT_SECRET, hide_default_value = true, hide_env_values = true)]
    client_secret: String,
    /// Scale Graph's per-app-and-tenant resource-unit budget (3,500/5,000/8,000 RU per 10 s by
    /// tenant size) by this factor; 0 turns throttling off.
    #[arg(long, default_value_t = 1.0)]
    ru_budget_scale: f64,
    /// Answer every token and Graph request this many milliseconds after it arrived.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// A certificate (PEM) to register on the app, for certificate sign-in; repeatable.
    #[arg(long, value_name = "PEM")]
    certificate: Vec<PathBuf>,
    /// Access token lifetime in seconds (expires_in).
    #[arg(long, default_value_t = 3599.0)]
    token_lifetime: f64,
    /// Write a ready entra-sync config here (and the secret as sim.secret next to it, mode 0600).
    #[arg(long, value_name = "FILE")]
    write_config: Option<PathBuf>,
    /// Store path written into the config (default: psa.db next to the config file).
    #[arg(long, value_name = "PATH", requires = "write_config")]
    store_path: Option<PathBuf>,
    /// Serve this many tenants of one app registration, each its own directory (seed + i,
    /// domain `<name>{i}.<rest>`, its own tenant id) on its own port (the next ports when
    /// --listen names one), sharing Graph's per-app budget across tenants (150,000 RU per
    /// 20 s, scaled by --ru-budget-scale). One base URL per line; --write-config lists them all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    tenants: u16,
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let lifetime = Duration::try_from_secs_f64(cli.token_lifetime)
        .context("--token-lifetime must be positive")?;
    let certificates = cli
        .certificate
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|pem| graph_sim::SimCertificate { pem, end: None })
                .with_context(|| format!("cannot read --certificate {}", path.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let app_budget = (cli.ru_budget_scale > 0.0 && cli.tenants > 1)
        .then(|| graph_sim::AppBudget::new(cli.ru_budget_scale));
    let listen: std::net::SocketAddr = tokio::net::lookup_host(&cli.listen)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("--listen {}: not an address", cli.listen))?;
    let mut sims = Vec::new();
    for i in 0..cli.tenants {
        let tenant = if cli.tenants == 1 {
            cli.tenant.clone()
        } else {
            match cli.tenant.split_once('.') {
                Some((name, rest)) => format!("{name}{i}.{rest}"),
                None => format!("{}{i}", cli.tenant),
            }
        };
        let opts = SimOptions {
            users: cli.users,
            groups: cli.groups,
            seed: cli.seed.wrapping_add(u64::from(i)),
            page_size: cli.page_size,
            delta_page_size: cli.delta_page_size,
            tenant,
            client_id: cli.client_id.clone(),
            client_secret: cli.client_secret.clone(),
            token_lifetime: lifetime,
            certificates: certificates.clone(),
            latency: Duration::from_millis(cli.latency_ms),
            ru_budget_scale: (cli.ru_budget_scale > 0.0).then_some(cli.ru_budget_scale),
            app_budget: app_budget.clone(),
        };
        let mut addr = listen;
        if addr.port() != 0 {
            addr.set_port(addr.port().saturating_add(i));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        sims.push(Sim::start_on(listener, opts).await?);
    }
    if let Some(config) = &cli.write_config {
        let written = match sims.as_slice() {
            [one] => one.write_config(config, cli.store_path.as_deref()),
            all => {
                let all: Vec<&Sim> = all.iter().collect();
                Sim::write_fleet_config(&all, config, cli.store_path.as_deref())
            }
        };
        written.with_context(|| format!("cannot write {} and its secret", config.display()))?;
    }
    {
        let mut out = std::io::stdout().lock();
        for sim in &sims {
            writeln!(out, "{}", sim.base_url())?;
        }
        out.flush()?;
    }
    for (i, sim) in sims.iter().enumerate() {
        eprintln!(
            "graph-sim: tenant {} ({}), {} users, {} groups, seed {}; control API at {}/_sim/",
            sim.control().tenant(),
            sim.control().tenant_guid(),
            cli.users,
            cli.groups,
            cli.seed.wrapping_add(i as u64),
            sim.base_url()
        );
    }
    stop_signal().await;
    for sim in sims {
        sim.shutdown().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graph-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
