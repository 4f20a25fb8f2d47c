//! `cargo bench --bench sync`: entra-sync against a 100,000-user graph-sim tenant in a separate
//! process on loopback, release build, store on disk. Prints one line per figure (SPEC 8).
//!
//! Figures: full sync into an empty store (seconds, peak RSS, Graph requests vs. the pages the
//! data needs), full sync into a current store, idle incremental run, incremental run after
//! 1,000 attribute and 1,000 membership changes, and the floors (graph-sim serving every page
//! to a bare client; SQLite inserting the same rows) with each sync figure as a ratio of them.
//! Sizes can be changed with BENCH_USERS and BENCH_GROUPS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// A benchmark measures real time: the product's clock rule (clippy.toml) is not for it.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use entra_sync::credential::Credential;
use serde_json::{Value, json};

struct Run {
    seconds: f64,
    peak_rss_mb: f64,
    summary: Value,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `entra-sync` to completion, sampling its peak RSS (VmHWM) while it runs.
fn entra_sync(config: &Path, args: &[&str]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_entra-sync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .arg("--json")
        // ENTRA_SYNC_BENCH_LOG=entra_sync=debug shows each run's phases (time, memory).
        .env(
            "RUST_LOG",
            std::env::var("ENTRA_SYNC_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak_kb = peak_kb.max(kb);
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    let out = reader.join().unwrap();
    let summary: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("entra-sync printed no JSON ({e}): {out}"));
    Run {
        seconds,
        peak_rss_mb: peak_kb as f64 / 1024.0,
        summary,
    }
}

fn tenant(run: &Run) -> &Value {
    &run.summary["tenants"][0]
}

fn rows_written(run: &Run) -> i64 {
    [
        "created",
        "updated",
        "reactivated",
        "deactivated",
        "archived",
    ]
    .iter()
    .map(|k| tenant(run)[*k].as_i64().unwrap_or(0))
    .sum()
}

/// A graph-sim control-API listing (`/_sim/users`, `/_sim/groups`).
async fn sim_list(http: &reqwest::Client, url: &str) -> Vec<Value> {
    let answer = http
        .get(url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    answer.json().await.unwrap()
}

/// The tables a sync writes, parents before children.
const TABLES: [&str; 12] = [
    "sync_runs",
    "employees",
    "contacts",
    "groups",
    "group_members",
    "sync_links",
    "change_log",
    "sync_reports",
    "entra_users",
    "entra_groups",
    "entra_members",
    "delta_cursors",
];

/// Reads every row of `synced` (untimed), then times inserting them one by one with prepared
/// statements into a fresh database with the store's own migrations, pragmas and indexes, in
/// one transaction. Returns the seconds and the row count per table.
fn sqlite_floor(synced: &Path, dir: &Path) -> (f64, Vec<(&'static str, usize)>) {
    let src = rusqlite::Connection::open(synced).unwrap();
    let mut data = Vec::new();
    for table in TABLES {
        let mut stmt = src.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = stmt.column_count();
        let rows: Vec<Vec<rusqlite::types::Value>> = stmt
            .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        data.push((table, n, rows));
    }
    let mut conn = rusqlite::Connection::open(dir.join("floor.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    // The page cache a run applies its plan with (the sync writes its mirror with SQLite's
    // default; the floor gets the larger cache for every row, which only lowers it).
    conn.pragma_update(None, "cache_size", -entra_sync::store::APPLY_CACHE_KIB)
        .unwrap();
    entra_sync::store::migrations()
        .unwrap()
        .to_latest(&mut conn)
        .unwrap();
    let start = Instant::now();
    let tx = conn.transaction().unwrap();
    // As the sync writes: its own rows are not edits behind its back (migration 08).
    tx.execute("INSERT INTO sync_writing (since) VALUES ('floor')", [])
        .unwrap();
    for (table, n, rows) in &data {
        let placeholders: Vec<String> = (1..=*n).map(|i| format!("?{i}")).collect();
        let mut stmt = tx
            .prepare(&format!(
                "INSERT INTO {table} VALUES ({})",
                placeholders.join(", ")
            ))
            .unwrap();
        for row in rows {
            stmt.execute(rusqlite::params_from_iter(row)).unwrap();
        }
    }
    tx.execute("DELETE FROM sync_writing", []).unwrap();
    tx.commit().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    (
        seconds,
        data.iter().map(|(t, _, rows)| (*t, rows.len())).collect(),
    )
}

/// graph-sim on its own thread and runtime, as it would run in a process of its own: the
/// 100k-user tenant, its config and secret written to `config`.
struct SimThread {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl SimThread {
    fn start(users: usize, groups: usize, latency: Duration, config: &Path) -> SimThread {
        let (started, base) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config.to_path_buf();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let opts = graph_sim::SimOptions {
                    users,
                    groups,
                    seed: 1,
                    latency,
                    ..graph_sim::SimOptions::default()
                };
                let sim = graph_sim::Sim::start(opts).await.unwrap();
                sim.write_config(&config, None).unwrap();
                started.send(sim.base_url()).unwrap();
                let _ = stopped.await;
                sim.shutdown().await;
            });
        });
        let base = base.recv().unwrap();
        SimThread { base, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

/// A fleet of small tenants, each its own graph-sim answering after `latency`, on one thread
/// and runtime; the config that lists them all (one employee rule each) written to `config`.
struct FleetThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    sims: Vec<graph_sim::SimControl>,
}

impl FleetThread {
    /// `tenants` of `users` users; with `ru_scale`, Graph's budgets scaled by it, the per-app
    /// one shared by every tenant (one app registration).
    fn start(
        tenants: usize,
        users: usize,
        latency: Duration,
        ru_scale: Option<f64>,
        dir: &Path,
    ) -> FleetThread {
        let (started, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let secret = dir.join("fleet.secret");
                std::fs::write(&secret, graph_sim::DEFAULT_CLIENT_SECRET).unwrap();
                let mut text = format!(
                    "[store]\npath = \"{}\"\n\n[safety]\nmax_deactivation_percent = 0\n\n",
                    dir.join("fleet.db").display()
                );
                let mut sims = Vec::new();
                let app_budget = ru_scale.map(graph_sim::AppBudget::new);
                for i in 0..tenants {
                    let sim = graph_sim::Sim::start(graph_sim::SimOptions {
                        users,
                        groups: 2,
                        seed: i as u64 + 1,
                        tenant: format!("tenant{i}.onmicrosoft.com"),
                        latency,
                        ru_budget_scale: ru_scale,
                        app_budget: app_budget.clone(),
                        ..graph_sim::SimOptions::default()
                    })
                    .await
                    .unwrap();
                    let ctl = sim.control();
                    let group = ctl.security_groups()[0].id.clone();
                    text.push_str(&format!(
                        "[[tenants]]\nname = \"t{i}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\nauthority = \"{base}\"\ngraph_url = \"{base}\"\naccount = \"Account {i}\"\n\n[[rules]]\ntenant = \"t{i}\"\ngroup_id = \"{group}\"\norder = 10\ntarget = \"employee\"\n\n",
                        ctl.tenant_guid(),
                        ctl.client_id(),
                        secret.display(),
                        base = sim.base_url(),
                    ));
                    sims.push(sim);
                }
                std::fs::write(dir.join("fleet.toml"), text).unwrap();
                started
                    .send(sims.iter().map(|s| s.control()).collect::<Vec<_>>())
                    .unwrap();
                let _ = stopped.await;
                for sim in sims {
                    sim.shutdown().await;
                }
            });
        });
        let sims = ready.recv().unwrap();
        FleetThread { stop, thread, sims }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

/// The daemon's idle round over a fleet at Graph-like latency: `Syncer::run` in this process
/// (tokens cached between rounds, as in the daemon), a first round to take cursors, then idle
/// rounds timed.
async fn fleet(tenants: usize, latency_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let sims = FleetThread::start(
        tenants,
        20,
        Duration::from_millis(latency_ms),
        None,
        dir.path(),
    );
    let config = entra_sync::config::Config::load(&dir.path().join("fleet.toml")).unwrap();
    println!(
        "fleet: {tenants} tenants of 20 users at {latency_ms} ms per request, started in {:.1} s; tenant_concurrency {}",
        start.elapsed().as_secs_f64(),
        config.sync.tenant_concurrency
    );
    let syncer = entra_sync::sync::Syncer::default();
    let opts = entra_sync::sync::SyncOptions::default();
    let start = Instant::now();
    let first = syncer.run(&config, &opts).await.unwrap();
    let failed = first
        .tenants
        .iter()
        .filter(|t| t.status.as_str() == "failed")
        .count();
    println!(
        "fleet first round (full reads, tokens): {:.2} s, {failed} tenants failed",
        start.elapsed().as_secs_f64()
    );
    for round in 1..=3 {
        for s in &sims.sims {
            s.reset_stats();
        }
        let start = Instant::now();
        let idle = syncer.run(&config, &opts).await.unwrap();
        if std::env::var("BENCH_FLEET_ENDPOINTS").is_ok() {
            println!("{:?}", sims.sims[0].stats().by_endpoint);
        }
        let requests: u64 = idle.tenants.iter().map(|t| t.graph_requests).sum();
        println!(
            "fleet idle round {round}: {:.2} s for {tenants} tenants, {requests} Graph requests (target < 2 s for 500 at 100 ms)",
            start.elapsed().as_secs_f64()
        );
    }
    sims.stop();
}

/// A fleet's first full sync against Graph's budgets scaled down until the per-app budget
/// across tenants binds: 429s (target 0) and wall time against RU needed ÷ the app budget's
/// rate (target within 1.2×).
async fn fleet_ru(tenants: usize, users: usize, latency_ms: u64, scale: f64) {
    let dir = tempfile::tempdir().unwrap();
    let sims = FleetThread::start(
        tenants,
        users,
        Duration::from_millis(latency_ms),
        Some(scale),
        dir.path(),
    );
    let config = entra_sync::config::Config::load(&dir.path().join("fleet.toml")).unwrap();
    let syncer = entra_sync::sync::Syncer::default();
    let start = Instant::now();
    let first = syncer
        .run(&config, &entra_sync::sync::SyncOptions::default())
        .await
        .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let failed = first
        .tenants
        .iter()
        .filter(|t| t.status.as_str() == "failed")
        .count();
    let units: u64 = sims.sims.iter().map(|s| s.stats().resource_units).sum();
    let mut throttled: std::collections::BTreeMap<String, u64> = Default::default();
    for s in &sims.sims {
        for (scope, n) in s.stats().throttled {
            *throttled.entry(scope).or_default() += n;
        }
    }
    let rate = 150_000.0 * scale / 20.0;
    let floor = units as f64 / rate;
    println!(
        "fleet under the app budget: {tenants} tenants x {users} users at {latency_ms} ms, RU budgets x {scale}: {seconds:.1} s, {units} RU charged, floor RU / app rate ({rate:.0} RU/s) = {floor:.1} s, target <= {:.1} s; 429s {throttled:?} (target none); {failed} tenants failed",
        1.2 * floor
    );
    sims.stop();
}

/// The daemon (`entra-sync run`, the release binary) with a fleet configured, on a 1 s
/// schedule: once every tenant has its cursors, its resident memory and CPU over the next
/// `seconds` of idle rounds (an idle hour scaled down).
async fn fleet_daemon(tenants: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let sims = FleetThread::start(tenants, 20, Duration::ZERO, None, dir.path());
    let config = dir.path().join("fleet.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "[schedule]\nsync = \"* * * * * *\"\nfull_sync = \"0 0 3 * * *\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let store = dir.path().join("fleet.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_entra-sync"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let runs = || -> i64 {
        rusqlite::Connection::open(&store)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM sync_runs", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the command name.
        fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
    };
    let memory = || -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| {
                    v.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .unwrap_or(0.0)
                })
                .unwrap_or(0.0)
                / 1024.0
        };
        (kb("VmRSS:"), kb("VmHWM:"))
    };
    let start = Instant::now();
    while runs() < tenants as i64 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "first round never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = start.elapsed().as_secs_f64();
    let (rss0, _) = memory();
    let (runs0, ticks0, t0) = (runs(), cpu_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (runs1, ticks1, elapsed) = (runs(), cpu_ticks(), t0.elapsed().as_secs_f64());
    let (rss1, peak) = memory();
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (ticks1 - ticks0) as f64 / hz;
    let rounds = (runs1 - runs0) as f64 / tenants as f64;
    println!(
        "daemon with {tenants} tenants, 1 s schedule: first round {first:.1} s; then {elapsed:.0} s idle: {rounds:.0} rounds ({} runs), CPU {cpu:.1} s ({:.0} % of one core, {:.1} ms per tenant round), resident {rss0:.0} MB -> {rss1:.0} MB, peak {peak:.0} MB",
        runs1 - runs0,
        100.0 * cpu / elapsed,
        1000.0 * cpu / (runs1 - runs0).max(1) as f64,
    );
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    sims.stop();
}

#[tokio::main]
async fn main() {
    if let Ok(n) = std::env::var("BENCH_FLEET_DAEMON") {
        fleet_daemon(
            n.parse().unwrap_or(1_000),
            env_usize("BENCH_DAEMON_SECONDS", 60) as u64,
        )
        .await;
        return;
    }
    if let Ok(n) = std::env::var("BENCH_FLEET_RU") {
        fleet_ru(
            n.parse().unwrap_or(200),
            env_usize("BENCH_FLEET_USERS", 2_000),
            env_usize("BENCH_LATENCY_MS", 100) as u64,
            std::env::var("BENCH_RU_SCALE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.02),
        )
        .await;
        return;
    }
    if let Ok(n) = std::env::var("BENCH_FLEET_ONLY") {
        fleet(
            n.parse().unwrap_or(500),
            env_usize("BENCH_LATENCY_MS", 100) as u64,
        )
        .await;
        return;
    }
    let users = env_usize("BENCH_USERS", 100_000);
    let groups = env_usize("BENCH_GROUPS", 20);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");

    let start = Instant::now();
    let sim = SimThread::start(users, groups, Duration::ZERO, &config);
    let base = sim.base.clone();
    println!(
        "graph-sim: {users} users, {groups} groups, started in {:.2} s at {base}",
        start.elapsed().as_secs_f64()
    );
    // Throughput figures, not safety: the guard would hold the big membership changes below.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[safety]\nmax_deactivations = 0\nmax_deactivation_percent = 0\n"),
    )
    .unwrap();

    let http = reqwest::Client::new();
    let sim_groups = sim_list(&http, &format!("{base}/_sim/groups")).await;
    let parsed = entra_sync::config::Config::load(&config).unwrap();
    let rule_groups: BTreeSet<String> = parsed
        .rules
        .iter()
        .map(|r| r.group_id.to_string())
        .collect();
    let by_id: BTreeMap<String, &Value> = sim_groups
        .iter()
        .map(|g| (g["id"].as_str().unwrap().to_string(), g))
        .collect();
    // Groups a full sync reads: the rule groups and the groups nested in them.
    let mut read: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = rule_groups.iter().cloned().collect();
    while let Some(g) = stack.pop() {
        if !read.insert(g.clone()) {
            continue;
        }
        for m in by_id[&g]["members"].as_array().unwrap() {
            let m = m.as_str().unwrap();
            if by_id.contains_key(m) {
                stack.push(m.to_string());
            }
        }
    }
    let member_pages: usize = read
        .iter()
        .map(|g| {
            by_id[g]["members"]
                .as_array()
                .unwrap()
                .len()
                .div_ceil(999)
                .max(1)
        })
        .sum();
    let memberships: usize = read
        .iter()
        .map(|g| by_id[g]["members"].as_array().unwrap().len())
        .sum();

    // Floor 1: graph-sim alone serving every member page to a bare client.
    let token: Value = http
        .post(format!(
            "{base}/{}/oauth2/v2.0/token",
            parsed.tenants[0].tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", parsed.tenants[0].client_id.as_str()),
            (
                "client_secret",
                match parsed.tenants[0].credential.as_ref().unwrap() {
                    Credential::Secret(secret) => secret.expose(),
                    Credential::Certificate(_) => unreachable!("graph-sim's config has a secret"),
                },
            ),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["access_token"].as_str().unwrap().to_string();
    let start = Instant::now();
    let mut fetches = tokio::task::JoinSet::new();
    for g in &read {
        let (http, bearer) = (http.clone(), bearer.clone());
        let mut next = Some(format!(
            "{base}/v1.0/groups/{g}/members?$select={}&$top=999",
            entra_sync::graph::wire::USER_SELECT
        ));
        fetches.spawn(async move {
            let mut items = 0usize;
            while let Some(url) = next.take() {
                let page: Value = http
                    .get(&url)
                    .bearer_auth(&bearer)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                items += page["value"].as_array().map_or(0, Vec::len);
                next = page["@odata.nextLink"].as_str().map(str::to_string);
            }
            items
        });
    }
    let mut served = 0;
    while let Some(n) = fetches.join_next().await {
        served += n.unwrap();
    }
    let graph_floor = start.elapsed().as_secs_f64();
    println!(
        "floor graph-sim: {graph_floor:.2} s to serve {member_pages} pages ({served} members) to a bare client"
    );

    // Full sync into an empty store.
    let full = entra_sync(&config, &["sync", "--full"]);
    let t = tenant(&full);
    let records = t["created"].as_i64().unwrap_or(0) as usize;

    // Floor 2: SQLite alone inserting the rows that sync wrote, in one transaction.
    let (sqlite_floor, rows_by_table) = sqlite_floor(&parsed.store.path, dir.path());
    let floor_rows: usize = rows_by_table.iter().map(|(_, n)| n).sum();
    let floor = graph_floor + sqlite_floor;
    let detail: Vec<String> = rows_by_table
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    println!(
        "floor sqlite: {sqlite_floor:.2} s to insert the {floor_rows} rows the full sync wrote, in one transaction, with the store's schema ({})",
        detail.join(", ")
    );
    println!(
        "full sync, empty store: {:.2} s ({:.2}x floor {floor:.2} s), peak RSS {:.0} MB, {} Graph requests for {member_pages} member pages ({memberships} memberships), {records} records created",
        full.seconds,
        full.seconds / floor,
        full.peak_rss_mb,
        t["graph_requests"],
    );

    let current = entra_sync(&config, &["sync", "--full"]);
    println!(
        "full sync, current store: {:.2} s ({:.2}x its floor, the graph-sim floor: nothing to write), record rows written {}, {} Graph requests",
        current.seconds,
        current.seconds / graph_floor,
        rows_written(&current),
        tenant(&current)["graph_requests"]
    );

    let idle = entra_sync(&config, &["sync"]);
    println!(
        "incremental, nothing changed: {:.3} s wall ({} ms in the run), {} Graph requests per tenant, record rows written {}, mode {}",
        idle.seconds,
        tenant(&idle)["duration_ms"],
        tenant(&idle)["graph_requests"],
        rows_written(&idle),
        tenant(&idle)["mode"]
    );

    // 1,000 attribute changes and 1,000 membership changes through the control API.
    let all_users = sim_list(&http, &format!("{base}/_sim/users")).await;
    let rule_list: Vec<&String> = rule_groups.iter().collect();
    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &rule_list {
        for m in by_id[g.as_str()]["members"].as_array().unwrap() {
            member_of.entry(m.as_str().unwrap()).or_insert(g.as_str());
        }
    }
    // Members that are users (groups also hold nested groups, devices, service principals).
    let user_ids: BTreeSet<&str> = all_users.iter().filter_map(|u| u["id"].as_str()).collect();
    let members: Vec<&str> = member_of
        .keys()
        .copied()
        .filter(|m| user_ids.contains(m))
        .collect();
    for (i, id) in members.iter().take(1000).enumerate() {
        http.patch(format!("{base}/_sim/users/{id}"))
            .json(&json!({ "jobTitle": format!("Bench title {i}") }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    let outsiders: Vec<&str> = all_users
        .iter()
        .filter_map(|u| u["id"].as_str())
        .filter(|id| !member_of.contains_key(id))
        .collect();
    for i in 0..1000 {
        if i % 2 == 0 && i / 2 < outsiders.len() {
            let g = rule_list[i % rule_list.len()];
            http.post(format!("{base}/_sim/groups/{g}/members"))
                .json(&json!({ "id": outsiders[i / 2] }))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap();
        } else if let Some(&id) = members.len().checked_sub(1 + i).map(|k| &members[k]) {
            let g = member_of[id];
            http.delete(format!("{base}/_sim/groups/{g}/members/{id}"))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap();
        }
    }
    let changed = entra_sync(&config, &["sync"]);
    println!(
        "incremental, 1000 attribute + 1000 membership changes: {:.2} s, {} Graph requests, record rows written {}, mode {}",
        changed.seconds,
        tenant(&changed)["graph_requests"],
        rows_written(&changed),
        tenant(&changed)["mode"]
    );
    // One person resynced on demand (SPEC 8: at most 5 Graph requests).
    let one = members[members.len() / 2];
    let user = entra_sync(&config, &["sync", "--user", one]);
    println!(
        "sync --user on the {users}-user tenant: {:.2} s wall ({} ms in the run), {} Graph requests (target <= 5), mode {}",
        user.seconds,
        tenant(&user)["duration_ms"],
        tenant(&user)["graph_requests"],
        tenant(&user)["mode"]
    );
    // One changed user (SPEC 8: local work proportional to the change, under 50 ms beyond
    // the Graph requests).
    http.patch(format!("{base}/_sim/users/{one}"))
        .json(&json!({ "jobTitle": "Bench one change" }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let single = entra_sync(&config, &["sync"]);
    println!(
        "incremental, 1 attribute change: {:.2} s wall ({} ms in the run), {} Graph requests, record rows written {}",
        single.seconds,
        tenant(&single)["duration_ms"],
        tenant(&single)["graph_requests"],
        rows_written(&single)
    );
    sim.stop();

    // The same tenant behind a Graph that answers in 100 ms (SPEC 8: at most the time without
    // latency + 1.2 × the critical path, the longest group's chain of member pages).
    let latency_ms = env_usize("BENCH_LATENCY_MS", 100) as u64;
    let slow_dir = tempfile::tempdir().unwrap();
    let slow_config = slow_dir.path().join("config.toml");
    let slow = SimThread::start(
        users,
        groups,
        Duration::from_millis(latency_ms),
        &slow_config,
    );
    let longest_chain = read
        .iter()
        .map(|g| {
            by_id[g]["members"]
                .as_array()
                .unwrap()
                .len()
                .div_ceil(999)
                .max(1)
        })
        .max()
        .unwrap_or(1);
    let critical = longest_chain as f64 * latency_ms as f64 / 1000.0;
    let at_latency = entra_sync(&slow_config, &["sync", "--full"]);
    println!(
        "full sync at {latency_ms} ms per request: {:.2} s, target <= {:.2} s (no latency {:.2} s + 1.2 x critical path {critical:.2} s = {longest_chain} pages), {} Graph requests",
        at_latency.seconds,
        full.seconds + 1.2 * critical,
        full.seconds,
        tenant(&at_latency)["graph_requests"],
    );
    slow.stop();
    fleet(
        env_usize("BENCH_FLEET_TENANTS", 500),
        env_usize("BENCH_LATENCY_MS", 100) as u64,
    )
    .await;
}
