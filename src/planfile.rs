//! Reviewed plans (SPEC 1, `sync --plan-out FILE` and `apply FILE`): the file format, the
//! fingerprint of what a plan was planned from (the tenant's delta cursors, its rules, and the
//! records and groups it touches or whose names it writes), and applying a file whole — in one
//! transaction, under the writer lock — or not at all.
//!
//! Decides nothing: the plan in the file was made by the core; this module only checks that
//! nothing it was planned from moved, and hands it to `apply`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use entra_sync_core::plan::{Plan, RecordRef, Scope, StoreView};
use entra_sync_core::record::RecordKind;
use entra_sync_core::run::{RunCounts, RunMode, RunStatus};
use entra_sync_core::{Email, Username};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::{Cursors, RunRecord, Store, StoreError, WriterLock};
use crate::sync::rules_for;

impl PlanFile {
    /// The plan file of a `sync --plan-out` run: each tenant's plan with its fingerprint.
    pub fn of(summary: &crate::sync::SyncSummary, planned_at: &str) -> PlanFile {
        PlanFile {
            format: FORMAT.into(),
            version: VERSION,
            planned_at: planned_at.to_string(),
            tenants: summary
                .tenants
                .iter()
                .filter_map(|t| {
                    let (scope, fingerprint) = t.reviewed.clone()?;
                    Some(TenantPlan {
                        tenant: t.tenant.clone(),
                        mode: t.mode,
                        scope,
                        fingerprint,
                        plan: t.plan.clone()?,
                    })
                })
                .collect(),
        }
    }
}

/// The stored records `plan` changes or puts in a group.
pub fn stored_records(plan: &Plan) -> impl Iterator<Item = (RecordKind, i64)> + '_ {
    let changed = plan
        .changes
        .iter()
        .chain(&plan.held)
        .filter_map(|c| match c.record {
            RecordRef::Existing(id) => Some((c.kind, id)),
            RecordRef::New(_) => None,
        });
    let grouped = plan.groups.iter().flat_map(|g| {
        g.remove
            .iter()
            .copied()
            .chain(g.add.iter().filter_map(|(kind, r)| match r {
                RecordRef::Existing(id) => Some((*kind, *id)),
                RecordRef::New(_) => None,
            }))
    });
    changed.chain(grouped)
}

/// What a plan file says it is; anything else is refused.
pub const FORMAT: &str = "entra-sync plan";
pub const VERSION: u32 = 1;

/// A reviewed plan: readable JSON, one entry per tenant.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub format: String,
    pub version: u32,
    /// When it was planned (RFC 3339).
    pub planned_at: String,
    pub tenants: Vec<TenantPlan>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TenantPlan {
    pub tenant: String,
    /// How Graph was read for it (full, incremental, user).
    pub mode: RunMode,
    /// Whose open state (reports, holds, pending deactivations) the plan replaces: every
    /// user's, a `--user` run's people's, or nobody's (`null`: nothing new was planned).
    pub scope: Option<Scope>,
    pub fingerprint: Fingerprint,
    /// The plan, whole: every change with its values before and after. Deactivations over
    /// the safety limits are in it (`plan.released` says why they would be held): `apply`
    /// needs `--allow-mass-deactivation` for them.
    pub plan: Plan,
}

/// What a plan was planned from, each part as a digest (SHA-256, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The tenant's stored delta cursors (a run since moves them).
    pub cursors: String,
    /// The tenant's rules and mapping settings in the config.
    pub rules: String,
    /// Each record the plan touches or whose username or email it writes (`employee #12`),
    /// with its link; `absent` for one that did not exist.
    pub records: BTreeMap<String, String>,
    /// Each read-only group the plan changes (by Entra object id), with its members.
    pub groups: BTreeMap<String, String>,
    /// The tenant's open state: reports, held and pending deactivations, the purge watch
    /// (a run that moves no cursor, such as a `--user` run, can change it).
    pub open_state: String,
    /// The plan itself as written: an edited plan is not the reviewed one.
    pub plan: String,
}

fn digest(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Fingerprint {
    /// The fingerprint of `plan` against the store as `view` shows it, with the tenant's
    /// stored `cursors` and `rules` fingerprint.
    pub fn of(
        plan: &Plan,
        view: &StoreView,
        cursors: Option<&Cursors>,
        rules: &str,
        open_state: &str,
    ) -> Fingerprint {
        let cursors = match cursors {
            None => digest("none"),
            Some(c) => {
                let links: Vec<String> = c.links.iter().map(|(k, v)| format!("{k}={v}")).collect();
                digest(&format!("{}\n{}\n{}", c.scope, c.rules, links.join("\n")))
            }
        };
        let mut touched: Vec<(RecordKind, i64)> = stored_records(plan).collect();
        let mut emails: HashSet<Email> = HashSet::new();
        let mut usernames: HashSet<Username> = HashSet::new();
        for change in plan.changes.iter().chain(&plan.held) {
            emails.extend(change.after.email_key());
            usernames.extend(change.after.username_key());
        }
        // Whoever holds a name the plan writes: a record edited or added since could clash.
        for (key, rec) in &view.records {
            if rec.values.email_key().is_some_and(|e| emails.contains(&e))
                || rec
                    .values
                    .username_key()
                    .is_some_and(|u| usernames.contains(&u))
            {
                touched.push(*key);
            }
        }
        let links: HashMap<(RecordKind, i64), &entra_sync_core::plan::Link> = view
            .links
            .iter()
            .map(|l| ((l.kind, l.record_id), l))
            .collect();
        let mut records = BTreeMap::new();
        for (kind, id) in touched {
            let link = links.get(&(kind, id)).map(|l| {
                format!(
                    "{} {} {} {}",
                    l.directory,
                    l.object_id,
                    l.state.as_str(),
                    serde_json::to_string(&l.source).unwrap_or_default()
                )
            });
            let text = match view.records.get(&(kind, id)) {
                None => "absent".to_string(),
                Some(rec) => format!(
                    "{} active={} root={} deactivated_at={:?} ticket={} link={link:?}",
                    serde_json::to_string(&rec.values).unwrap_or_default(),
                    rec.active,
                    rec.is_root,
                    rec.deactivated_at,
                    view.ticketed.contains(&(kind, id))
                ),
            };
            records.insert(format!("{kind} #{id}"), digest(&text));
        }
        let mut groups = BTreeMap::new();
        for change in &plan.groups {
            let stored = view.groups.iter().find(|g| g.object_id == change.object_id);
            let text = match stored {
                None => "absent".to_string(),
                Some(g) => format!("{} {:?} {:?}", g.id, g.display_name, g.members),
            };
            groups.insert(change.object_id.to_string(), digest(&text));
        }
        Fingerprint {
            cursors,
            rules: digest(rules),
            records,
            groups,
            open_state: digest(open_state),
            plan: digest(&serde_json::to_string(plan).unwrap_or_default()),
        }
    }

    /// What differs from `now`, one line each for people.
    pub fn moved(&self, now: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.cursors != now.cursors {
            out.push(
                "the delta cursors moved: a sync ran since the plan (Entra may have changed)"
                    .to_string(),
            );
        }
        if self.plan != now.plan {
            out.push("the plan in the file is not the one that was planned (edited?)".to_string());
        }
        if self.rules != now.rules {
            out.push(
                "the rules, mapping, safety or retention settings in the config changed"
                    .to_string(),
            );
        }
        if self.open_state != now.open_state {
            out.push(
                "the open reports, held or pending deactivations changed (a run since?)"
                    .to_string(),
            );
        }
        for (record, was) in &self.records {
            if now.records.get(record) != Some(was) {
                out.push(format!("{record} changed in the store"));
            }
        }
        for record in now.records.keys() {
            if !self.records.contains_key(record) {
                out.push(format!(
                    "{record} now holds a username or email the plan writes"
                ));
            }
        }
        for (group, was) in &self.groups {
            if now.groups.get(group) != Some(was) {
                out.push(format!(
                    "the read-only group of {group} changed in the store"
                ));
            }
        }
        out
    }
}

/// What of the config a tenant's plan depends on: its rules and mapping settings, the safety
/// limits and grace period, retention.
pub fn settings(config: &Config, tenant: &crate::config::TenantConfig) -> String {
    format!(
        "{} safety={:?} retention={:?}",
        rules_for(config, tenant).fingerprint(),
        config.safety,
        config.retention
    )
}

/// The tenant's open state as the fingerprint sees it.
/// No store yet reads as an empty one (a first sync can be planned and applied).
pub fn open_state(store: Option<&Store>, tenant: &str) -> Result<String, StoreError> {
    let (state, watch) = match store {
        None => (crate::store::OpenState::default(), None),
        Some(store) => (store.open_state(tenant)?, store.purge_watch(tenant)?),
    };
    Ok(format!(
        "{} watch={watch:?}",
        serde_json::to_string(&state).unwrap_or_default()
    ))
}

/// Why `apply` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not a plan file this binary can apply (exit 2).
    #[error("{0}")]
    Unreadable(String),
    /// Something the plan was planned from moved (exit 1).
    #[error("the plan is stale, nothing was applied: {}; plan again with `sync --plan-out`", first_of(.0))]
    Moved(Vec<String>),
    /// It holds deactivations over the safety limits and the flag was not given (exit 3).
    #[error(
        "{0}; nothing was applied: review them and apply with `entra-sync apply FILE --allow-mass-deactivation`"
    )]
    Held(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The first few of `moved`, and how many more: one line, however much moved.
fn first_of(moved: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = moved
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if moved.len() > SHOWN {
        text.push_str(&format!("; and {} more", moved.len() - SHOWN));
    }
    text
}

/// Reads and checks a plan file.
pub fn read(path: &Path) -> Result<PlanFile, ApplyError> {
    let unreadable = |e: String| ApplyError::Unreadable(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unreadable(format!("not JSON ({e})")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(unreadable(format!(
            "not an entra-sync plan (no \"format\": \"{FORMAT}\")"
        )));
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(u64::from(VERSION)) {
        return Err(unreadable(format!(
            "plan format version {version:?}; this entra-sync applies version {VERSION}: plan again"
        )));
    }
    let file: PlanFile =
        serde_json::from_value(value).map_err(|e| unreadable(format!("malformed plan: {e}")))?;
    if let Some(t) = file.tenants.iter().find(|t| t.plan.tenant != t.tenant) {
        return Err(unreadable(format!(
            "malformed plan: the plan of tenant \"{}\" names tenant \"{}\"",
            t.tenant, t.plan.tenant
        )));
    }
    let mut seen = HashSet::new();
    if let Some(t) = file.tenants.iter().find(|t| !seen.insert(&t.tenant)) {
        return Err(unreadable(format!(
            "malformed plan: tenant \"{}\" is in it twice",
            t.tenant
        )));
    }
    if let Some(c) =
        file.tenants.iter().flat_map(|t| &t.plan.changes).find(|c| {
            c.after.kind() != c.kind || c.before.as_ref().is_some_and(|b| b.kind() != c.kind)
        })
    {
        return Err(unreadable(format!(
            "malformed plan: a change to {} {} carries values of another kind",
            c.kind, c.user
        )));
    }
    Ok(file)
}

/// Writes a plan file, readable by its owner only (it holds people's records).
pub fn write(path: &Path, file: &PlanFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_string_pretty(file).map_err(std::io::Error::other)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode when opened: make it the owner's only.
    out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")
}

/// What `apply` did: per tenant, its run id and counts.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub tenant: String,
    pub run_id: i64,
    #[serde(flatten)]
    pub counts: RunCounts,
}

/// Applies `file` whole, or nothing: under the writer lock and in one transaction, every
/// tenant's fingerprint is compared with the store and config as they are now, then every
/// tenant's plan is written (records, links, groups, change log, a `sync_runs` row of mode
/// `apply`, open state). Cursors and the mirror stay where they are: the next run reads Entra
/// from where the store's last run left it, and finds these changes already made.
pub fn apply(
    config: &Config,
    file: &PlanFile,
    allow_mass_deactivation: bool,
    now: &str,
) -> Result<Vec<Applied>, ApplyError> {
    let mut moved = Vec::new();
    for t in &file.tenants {
        if config.tenant(&t.tenant).is_none() {
            moved.push(format!(
                "tenant \"{}\" is no longer in the config",
                t.tenant
            ));
        }
    }
    if !moved.is_empty() {
        return Err(ApplyError::Moved(moved));
    }
    let held: Vec<String> = file
        .tenants
        .iter()
        .filter_map(|t| {
            let reason = t.plan.released.as_ref().or(t.plan.hold_reason.as_ref())?;
            Some(format!("tenant \"{}\": {reason}", t.tenant))
        })
        .collect();
    if !held.is_empty() && !allow_mass_deactivation {
        return Err(ApplyError::Held(held.join("; ")));
    }
    let _lock = WriterLock::acquire(&config.store.path)?;
    let mut store = Store::open(&config.store.path)?;
    let mut cursors = BTreeMap::new();
    for t in &file.tenants {
        cursors.insert(t.tenant.clone(), store.load_cursors(&t.tenant)?);
        let tenant_id = config
            .tenant(&t.tenant)
            .map(|c| c.tenant_id.clone())
            .unwrap_or_default();
        if store.known_directory(&t.tenant, &tenant_id)?.as_deref() != Some(&t.plan.directory)
            && t.fingerprint.cursors != digest("none")
        {
            moved.push(format!(
                "tenant \"{}\" now stands for another directory than the plan's",
                t.tenant
            ));
        }
    }
    let mut states = BTreeMap::new();
    for t in &file.tenants {
        states.insert(t.tenant.clone(), open_state(Some(&store), &t.tenant)?);
    }
    let write = store.begin_run(now.to_string())?;
    for t in &file.tenants {
        let view = write.view(&t.tenant)?;
        let settings = config
            .tenant(&t.tenant)
            .map(|tenant| settings(config, tenant))
            .unwrap_or_default();
        let now_print = Fingerprint::of(
            &t.plan,
            &view,
            cursors.get(&t.tenant).and_then(Option::as_ref),
            &settings,
            states.get(&t.tenant).map_or("", String::as_str),
        );
        moved.extend(
            t.fingerprint
                .moved(&now_print)
                .into_iter()
                .map(|m| format!("tenant \"{}\": {m}", t.tenant)),
        );
    }
    if !moved.is_empty() {
        return Err(ApplyError::Moved(moved));
    }
    let mut applied = Vec::new();
    for t in &file.tenants {
        let counts = t.plan.counts();
        let record = RunRecord {
            tenant: t.tenant.clone(),
            mode: RunMode::Apply,
            started_at: now.to_string(),
            finished_at: Some(now.to_string()),
            status: RunStatus::Success,
            counts: counts.clone(),
            graph_requests: 0,
            error: None,
        };
        let run_id = write.write(&t.plan, &record, t.scope.as_ref())?;
        // The records now stand for Entra as the dry run read it, which the mirror does not
        // hold (a change that came and went since leaves no delta): the next run plans again.
        write.plan_again(&t.tenant)?;
        applied.push(Applied {
            tenant: t.tenant.clone(),
            run_id,
            counts,
        });
    }
    write.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_plan_is_one_line_however_much_moved() {
        let moved: Vec<String> = (0..100_000)
            .map(|i| format!("employee #{i} changed"))
            .collect();
        let line = ApplyError::Moved(moved).to_string();
        assert!(
            line.contains("employee #4 changed; and 99995 more"),
            "{line}"
        );
        assert!(!line.contains("employee #5 changed"));
        assert!(!line.contains('\n'));
    }
}
