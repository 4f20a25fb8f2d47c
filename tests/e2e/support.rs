//! TestEnv: a graph-sim tenant in-process on port 0, a temporary directory with a config and a
//! store, and the real `entra-sync` binary run against them.

use std::path::PathBuf;

use chrono::TimeZone;
use graph_sim::{NewUser, Sim, SimControl, SimOptions};
use serde_json::Value;

pub const SECRET: &str = graph_sim::DEFAULT_CLIENT_SECRET;

/// The private keys of the test certificates (`crates/graph-sim/test-certs`).
pub const TEST_KEYS: [&str; 2] = [
    include_str!("../../crates/graph-sim/test-certs/app.key"),
    include_str!("../../crates/graph-sim/test-certs/unregistered.key"),
];

pub struct TestEnv {
    pub sims: Vec<Sim>,
    /// The config's name of each tenant (`t0`, `t1`, … unless renamed).
    pub names: Vec<String>,
    pub dir: tempfile::TempDir,
    pub rules: Vec<String>,
    pub extra_config: String,
    /// Extra keys of the `[sync]` section.
    pub sync_extra: String,
    /// The tenants' credential line instead of `client_secret_file = <sim.secret>`.
    pub credential: Option<String>,
    /// The tenants' `graph_url` instead of the simulator's.
    pub graph_url: Option<String>,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl TestEnv {
    /// An empty simulated tenant (no generated users or groups).
    pub async fn new() -> TestEnv {
        Self::with_tenants(1).await
    }

    pub async fn with_tenants(n: usize) -> TestEnv {
        Self::with_options(n, |_| {}).await
    }

    /// `n` empty tenants whose simulator options `change` adjusts.
    pub async fn with_options(n: usize, change: impl Fn(&mut SimOptions)) -> TestEnv {
        let mut sims = Vec::new();
        for i in 0..n {
            let mut opts = SimOptions {
                users: 0,
                groups: 0,
                seed: i as u64 + 1,
                tenant: format!("tenant{i}.onmicrosoft.com"),
                ..SimOptions::default()
            };
            change(&mut opts);
            sims.push(Sim::start(opts).await.expect("graph-sim starts"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("sim.secret");
        std::fs::write(&secret, SECRET).expect("secret file");
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        // Scenario tenants are tiny: one deactivation is already over the default 20 %, so the
        // percent guard is off unless a test sets [safety] itself.
        let extra_config = "[safety]\nmax_deactivation_percent = 0\n".to_string();
        TestEnv {
            names: (0..n).map(|i| format!("t{i}")).collect(),
            sims,
            dir,
            rules: Vec::new(),
            extra_config,
            sync_extra: String::new(),
            credential: None,
            graph_url: None,
        }
    }

    pub fn sim(&self) -> SimControl {
        self.sims[0].control()
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("psa.db")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// A security group created on day `day` of 2020 (older groups win ties).
    pub fn group(&self, name: &str, day: u32) -> String {
        self.group_in(0, name, day)
    }

    pub fn group_in(&self, tenant: usize, name: &str, day: u32) -> String {
        let created = chrono::Utc.with_ymd_and_hms(2020, 1, day, 0, 0, 0).unwrap();
        self.sims[tenant].control().create_group(name, created).id
    }

    /// A user `local@contoso.com` with mail of the same address, given name from `local`.
    pub fn user(&self, local: &str) -> String {
        self.user_in(0, local)
    }

    pub fn user_in(&self, tenant: usize, local: &str) -> String {
        self.sims[tenant]
            .control()
            .add_user(NewUser {
                user_principal_name: format!("{local}@contoso.com"),
                display_name: format!("{local} Test"),
                given_name: Some(local.to_string()),
                surname: Some("Test".into()),
                mail: Some(format!("{local}@contoso.com")),
                job_title: Some("Engineer".into()),
                business_phones: vec!["+1 555 0100".into()],
                ..NewUser::default()
            })
            .id
    }

    pub fn add(&self, group: &str, member: &str) {
        self.sim().add_member(group, member).expect("add member");
    }

    pub fn remove(&self, group: &str, member: &str) {
        self.sim()
            .remove_member(group, member)
            .expect("remove member");
    }

    pub fn employee_rule(&mut self, group: &str, order: i64, role: Option<&str>) {
        self.rule(
            0,
            group,
            order,
            "employee",
            role.map(|r| format!("role = \"{r}\"")).unwrap_or_default(),
        );
    }

    pub fn contact_rule(&mut self, group: &str, order: i64, portal: bool) {
        self.rule(
            0,
            group,
            order,
            "contact",
            format!("portal_access = {portal}"),
        );
    }

    pub fn rule(&mut self, tenant: usize, group: &str, order: i64, target: &str, extra: String) {
        self.rules.push(format!(
            "[[rules]]\ntenant = \"{}\"\ngroup_id = \"{group}\"\norder = {order}\ntarget = \"{target}\"\n{extra}\n",
            self.names[tenant]
        ));
    }

    /// Renames tenant `index` in the config (its rules follow).
    pub fn rename_tenant(&mut self, index: usize, name: &str) {
        let old = format!("tenant = \"{}\"", self.names[index]);
        let new = format!("tenant = \"{name}\"");
        for rule in &mut self.rules {
            *rule = rule.replace(&old, &new);
        }
        self.names[index] = name.to_string();
    }

    pub fn write_config(&self) {
        let mut text = format!(
            "[store]\npath = \"{}\"\n\n[sync]\nretry_base_ms = 10\n{}\n\n[employee_defaults]\ndepartment = \"General\"\n\n{}\n",
            self.store_path().display(),
            self.sync_extra,
            self.extra_config
        );
        let secret = format!(
            "client_secret_file = \"{}\"",
            self.dir.path().join("sim.secret").display()
        );
        for (i, sim) in self.sims.iter().enumerate() {
            let ctl = sim.control();
            text.push_str(&format!(
                "[[tenants]]\nname = \"{}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n{}\nauthority = \"{}\"\ngraph_url = \"{}\"\naccount = \"Account {i}\"\n\n",
                self.names[i],
                ctl.tenant(),
                ctl.client_id(),
                self.credential.as_deref().unwrap_or(&secret),
                sim.base_url(),
                self.graph_url.clone().unwrap_or_else(|| sim.base_url()),
            ));
        }
        text.push_str(&self.rules.join("\n"));
        std::fs::write(self.config_path(), text).expect("write config");
        std::fs::set_permissions(
            self.config_path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod config");
    }

    /// Runs the real binary with `args` (after `--config`).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.write_config();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("ENTRA_SYNC_CONFIG")
            .output()
            .await
            .expect("run entra-sync");
        let output = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // No secret, key, assertion or token in any output of any run: JWTs begin with a
        // base64 `{"typ":"JWT"` or `{"alg":`; the test keys with their first base64 line.
        let key_lines: Vec<&str> = [TEST_KEYS[0], TEST_KEYS[1]]
            .iter()
            .filter_map(|k| k.lines().nth(1))
            .collect();
        for leak in [SECRET, "eyJ0eXAi", "eyJhbGci"]
            .into_iter()
            .chain(key_lines)
        {
            assert!(
                !output.stdout.contains(leak) && !output.stderr.contains(leak),
                "{leak:?} leaked into the output:\n{}\n{}",
                output.stdout,
                output.stderr
            );
        }
        output
    }

    /// `sync --json` that must succeed; returns the summary.
    pub async fn sync_ok(&self, extra: &[&str]) -> Value {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args).await;
        assert_eq!(out.code, 0, "sync failed:\n{}\n{}", out.stdout, out.stderr);
        out.json()
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_rows(sql).expect("query the store")
    }

    /// `rows`, or the error while the store is still being created by another process.
    pub fn try_rows(&self, sql: &str) -> rusqlite::Result<Vec<Vec<String>>> {
        rows_at(&self.store_path(), sql)
    }

    /// Creates the (migrated) store before any sync, for pre-existing PSA data.
    pub fn init_store(&self) {
        entra_sync::store::Store::open(&self.store_path()).expect("create store");
    }

    pub fn exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.store_path()).expect("open store");
        conn.execute_batch(sql).expect("exec");
    }

    /// Every row of the public tables, for idempotence checks.
    pub fn dump(&self) -> Vec<Vec<String>> {
        let mut all = Vec::new();
        for table in [
            "employees",
            "contacts",
            "tickets",
            "groups",
            "group_members",
        ] {
            for row in self.rows(&format!("SELECT * FROM {table} ORDER BY 1, 2, 3")) {
                let mut r = vec![table.to_string()];
                r.extend(row);
                all.push(r);
            }
        }
        all
    }
}

/// The summary entry of tenant `name`.
pub fn tenant<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["tenants"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["tenant"] == name))
        .unwrap_or_else(|| panic!("no tenant {name} in {summary}"))
}

/// The rows of a query on the store at `path`, every value as text (`NULL` for null).
pub fn rows_at(path: &std::path::Path, sql: &str) -> rusqlite::Result<Vec<Vec<String>>> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => "NULL".to_string(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })?
    .collect()
}
