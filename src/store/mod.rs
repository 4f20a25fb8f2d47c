//! The SQLite store: opening it (WAL, busy timeout, mode 0600), migrations from `migrations/`,
//! the cross-process writer lock, and typed reads for the planner and `status`.
//!
//! This is the narrow interface a PostgreSQL backend would implement again: [`Store::view`],
//! [`Store::begin_run`] with [`crate::apply::RunWrite`], [`Store::record_failed_run`] and the
//! status reads.
//! It must not decide anything about records.

mod changes;
mod mirror;
pub(crate) mod narrow;
mod state;

pub use changes::{ChangeEntry, ChangeQuery};
pub use mirror::{Cursors, MirrorWrite, RESTORABLE_DAYS};
pub(crate) use mirror::{load_mirror, write_mirror};
pub use state::{HeldChange, OpenState, PendingDeactivation};
pub(crate) use state::{edited_since_whole_plan, names_moved_for_others, write_state};

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use entra_sync_core::ObjectId;
use include_dir::{Dir, include_dir};
use rusqlite::types::{FromSql, FromSqlError, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql, params};
use rusqlite_migration::Migrations;
use serde::Serialize;

pub use entra_sync_core::run::RunCounts;
use entra_sync_core::run::{RunMode, RunStatus};

use entra_sync_core::plan::{Link, LinkState, StoreView, StoredGroup};
use entra_sync_core::record::{ContactValues, EmployeeValues, RecordKind, StoredRecord, Values};

static MIGRATIONS_DIR: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "store {path} was written by a newer entra-sync (schema version {found}, this binary knows {known}); upgrade entra-sync"
    )]
    TooNew {
        path: String,
        found: usize,
        known: usize,
    },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub fn migrations() -> Result<Migrations<'static>, StoreError> {
    Migrations::from_directory(&MIGRATIONS_DIR).map_err(|e| StoreError::Open {
        path: "migrations/".into(),
        reason: e.to_string(),
    })
}

pub struct Store {
    pub(crate) conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) and migrates the store.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        create_private(path).map_err(|e| err(format!("cannot create the file: {e}")))?;
        let mut conn = Connection::open(path).map_err(|e| err(e.to_string()))?;
        configure(&conn)?;
        let migrations = migrations()?;
        let known = MIGRATIONS_DIR.dirs().count();
        let found: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map(|v| v.max(0) as usize)?;
        if found > known {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found,
                known,
            });
        }
        migrations
            .to_latest(&mut conn)
            .map_err(|e| err(format!("migration failed: {e}")))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing store without writing to it; `None` when there is no file yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
                StoreError::Open {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            })?;
        conn.busy_timeout(Duration::from_secs(30))?;
        Ok(Some(Store {
            conn,
            path: path.to_path_buf(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent copy of the whole store at `path`, a file that must not exist yet, only
    /// the owner may read (0600).
    pub fn copy_to(&self, path: &Path) -> Result<(), StoreError> {
        create_private(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: format!("cannot create the file: {e}"),
        })?;
        self.conn
            .execute("VACUUM INTO ?1", [path.to_string_lossy()])?;
        Ok(())
    }

    /// What the planner needs for `tenant`.
    pub fn view(&self, tenant: &str) -> Result<StoreView, StoreError> {
        view_of(&self.conn, tenant)
    }

    /// Records a run that failed before it could apply anything.
    pub fn record_failed_run(&mut self, run: &RunRecord) -> Result<i64, StoreError> {
        insert_run(&self.conn, run)
    }

    /// The latest runs per tenant, newest first.
    pub fn last_runs(&self, limit_per_tenant: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT tenant, mode, started_at, finished_at, status, created, updated, reactivated,
                    deactivated, archived, held, reports, graph_requests, error, purged
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY id DESC) AS n FROM sync_runs)
             WHERE n <= ?1 ORDER BY tenant, n",
        )?;
        let rows = stmt.query_map([limit_per_tenant as i64], |r| {
            Ok(RunRecord {
                tenant: r.get(0)?,
                mode: r.get::<_, Stored<RunMode>>(1)?.0,
                started_at: r.get(2)?,
                finished_at: r.get(3)?,
                status: r.get::<_, Stored<RunStatus>>(4)?.0,
                counts: RunCounts {
                    created: r.get(5)?,
                    updated: r.get(6)?,
                    reactivated: r.get(7)?,
                    deactivated: r.get(8)?,
                    archived: r.get(9)?,
                    purged: r.get(14)?,
                    held: r.get(10)?,
                    reports: r.get(11)?,
                },
                graph_requests: r.get(12)?,
                error: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Row counts of the public tables: (employees active, total), (contacts active, total), groups.
    pub fn totals(&self) -> Result<StoreTotals, StoreError> {
        let count = |sql: &str| -> Result<i64, StoreError> {
            Ok(self.conn.query_row(sql, [], |r| r.get(0))?)
        };
        Ok(StoreTotals {
            employees: count("SELECT COUNT(*) FROM employees")?,
            employees_active: count("SELECT COUNT(*) FROM employees WHERE active = 1")?,
            contacts: count("SELECT COUNT(*) FROM contacts")?,
            contacts_active: count("SELECT COUNT(*) FROM contacts WHERE active = 1")?,
            groups: count("SELECT COUNT(*) FROM groups")?,
        })
    }
}

/// The employee columns [`employee_row`] reads, in its order.
pub(crate) const EMPLOYEE_COLUMNS: &str = "id, username, email, first_name, last_name, job_title, \
     phone, department, security_role, active, is_root, deactivated_at";

pub(crate) fn employee_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        id: r.get(0)?,
        values: Values::Employee(EmployeeValues {
            username: r.get(1)?,
            email: r.get(2)?,
            first_name: r.get(3)?,
            last_name: r.get(4)?,
            job_title: r.get(5)?,
            phone: r.get(6)?,
            department: r.get(7)?,
            security_role: r.get(8)?,
        }),
        active: r.get::<_, Option<i64>>(9)?.unwrap_or(0) != 0,
        is_root: r.get::<_, Option<i64>>(10)?.unwrap_or(0) != 0,
        deactivated_at: r.get(11)?,
    })
}

/// The contact columns [`contact_row`] reads, in its order.
pub(crate) const CONTACT_COLUMNS: &str = "id, account, email, first_name, last_name, job_title, \
     phone, phone_type, portal_access, active, deactivated_at";

pub(crate) fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        id: r.get(0)?,
        values: Values::Contact(ContactValues {
            account: r.get(1)?,
            email: r.get(2)?,
            first_name: r.get(3)?,
            last_name: r.get(4)?,
            job_title: r.get(5)?,
            phone: r.get(6)?,
            phone_type: r.get(7)?,
            portal_access: r.get::<_, Option<i64>>(8)?.unwrap_or(0) != 0,
        }),
        active: r.get::<_, Option<i64>>(9)?.unwrap_or(0) != 0,
        is_root: false,
        deactivated_at: r.get(10)?,
    })
}

/// The link columns [`link_row`] reads, in its order.
pub(crate) const LINK_COLUMNS: &str =
    "directory, object_id, record_kind, record_id, source, upn, state";

/// A `sync_links` row; `None` for one this version cannot read (never written by it).
pub(crate) fn link_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Link>> {
    let (kind, object_id, state) = (
        r.get::<_, String>(2)?,
        r.get::<_, String>(1)?,
        r.get::<_, String>(6)?,
    );
    let (Some(kind), Ok(object_id), Some(state)) = (
        RecordKind::parse(&kind),
        ObjectId::parse(&object_id),
        LinkState::parse(&state),
    ) else {
        return Ok(None);
    };
    Ok(Some(Link {
        directory: r.get(0)?,
        object_id,
        kind,
        record_id: r.get(3)?,
        // An unreadable snapshot only means "rewrite from Entra next time".
        source: serde_json::from_str(&r.get::<_, String>(4)?).ok(),
        upn: r.get(5)?,
        state,
    }))
}

/// What the planner needs for `tenant`, read through `conn` (the store's connection or a
/// run's open transaction).
pub(crate) fn view_of(conn: &Connection, tenant: &str) -> Result<StoreView, StoreError> {
    let mut view = StoreView::default();
    let mut stmt = conn.prepare(&format!("SELECT {EMPLOYEE_COLUMNS} FROM employees"))?;
    for rec in stmt.query_map([], employee_row)? {
        let rec = rec?;
        view.records.insert((RecordKind::Employee, rec.id), rec);
    }
    let mut stmt = conn.prepare(&format!("SELECT {CONTACT_COLUMNS} FROM contacts"))?;
    for rec in stmt.query_map([], contact_row)? {
        let rec = rec?;
        view.records.insert((RecordKind::Contact, rec.id), rec);
    }
    let mut stmt = conn.prepare(&format!("SELECT {LINK_COLUMNS} FROM sync_links"))?;
    for link in stmt.query_map([], link_row)? {
        view.links.extend(link?);
    }
    let mut groups = directories_and_groups(conn, tenant, &mut view)?;
    let mut stmt = conn.prepare(
        "SELECT m.group_id, m.member_kind, m.member_id FROM group_members m
         JOIN groups g ON g.id = m.group_id WHERE g.tenant = ?1",
    )?;
    let rows = stmt.query_map([tenant], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (group, kind, member) = row?;
        if let (Some(g), Some(kind)) = (groups.get_mut(&group), RecordKind::parse(&kind)) {
            g.members.insert((kind, member));
        }
    }
    view.groups = groups.into_values().collect();
    let mut stmt = conn.prepare(
        "SELECT DISTINCT 'employee', employee_id FROM tickets WHERE employee_id IS NOT NULL
         UNION SELECT DISTINCT 'contact', contact_id FROM tickets WHERE contact_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (kind, id) = row?;
        if let Some(kind) = RecordKind::parse(&kind) {
            view.ticketed.insert((kind, id));
        }
    }
    Ok(view)
}

/// The directories' config names and the tenant's pending deactivations into `view`; the
/// tenant's read-only groups without their members, by row id.
pub(crate) fn directories_and_groups(
    conn: &Connection,
    tenant: &str,
    view: &mut StoreView,
) -> Result<BTreeMap<i64, StoredGroup>, StoreError> {
    let mut stmt = conn.prepare("SELECT directory, name FROM tenant_directories")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (directory, name) = row?;
        view.directory_names.insert(directory, name);
    }
    let mut stmt =
        conn.prepare("SELECT object_id, since FROM pending_deactivations WHERE tenant = ?1")?;
    let rows = stmt.query_map([tenant], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (object_id, since) = row?;
        if let Ok(object_id) = ObjectId::parse(&object_id) {
            view.out_of_scope_since.insert(object_id, since);
        }
    }
    let mut groups: BTreeMap<i64, StoredGroup> = BTreeMap::new();
    let mut stmt =
        conn.prepare("SELECT id, object_id, display_name FROM groups WHERE tenant = ?1")?;
    let rows = stmt.query_map([tenant], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (id, object_id, display_name) = row?;
        // A group row written by something else than the sync, with no object id: not ours.
        let Ok(object_id) = ObjectId::parse(&object_id) else {
            continue;
        };
        groups.insert(
            id,
            StoredGroup {
                id,
                object_id,
                display_name,
                members: Default::default(),
            },
        );
    }
    Ok(groups)
}

/// SQLite page cache (KiB) while a run applies its plan; SQLite's default is 2,000 KiB. A full
/// sync of 100k users writes ~120 MB of pages; with the default cache most are spilled to the
/// WAL before the commit, some many times.
pub const APPLY_CACHE_KIB: i64 = 64 * 1024;

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Creates the file with mode 0600 when it does not exist yet (it holds personal data).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

/// One tenant's run as recorded in `sync_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub tenant: String,
    pub mode: RunMode,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: RunStatus,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub graph_requests: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreTotals {
    pub employees: i64,
    pub employees_active: i64,
    pub contacts: i64,
    pub contacts_active: i64,
    pub groups: i64,
}

pub(crate) fn insert_run(conn: &Connection, run: &RunRecord) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO sync_runs (tenant, mode, started_at, finished_at, status, created, updated,
             reactivated, deactivated, archived, held, reports, graph_requests, error, purged)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            run.tenant,
            run.mode.as_str(),
            run.started_at,
            run.finished_at,
            run.status.as_str(),
            run.counts.created,
            run.counts.updated,
            run.counts.reactivated,
            run.counts.deactivated,
            run.counts.archived,
            run.counts.held,
            run.counts.reports,
            run.graph_requests,
            run.error,
            run.counts.purged,
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// An object id bound as its lower-case text, without allocating.
pub(crate) struct IdText([u8; 36]);

impl IdText {
    pub(crate) fn of(id: ObjectId) -> IdText {
        let mut buf = [0u8; 36];
        id.encode(&mut buf);
        IdText(buf)
    }
}

impl ToSql for IdText {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(&self.0)))
    }
}

/// A run mode or status read back from its text; unknown text is a conversion error.
struct Stored<T>(T);

macro_rules! stored_text {
    ($t:ty) => {
        impl FromSql for Stored<$t> {
            fn column_result(value: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                <$t>::parse(text)
                    .map(Stored)
                    .ok_or_else(|| FromSqlError::Other(format!("unknown {text:?}").into()))
            }
        }
    };
}
stored_text!(RunMode);
stored_text!(RunStatus);

/// The cross-process writer lock: one sync writes a store at a time (SPEC 5.5).
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Waits until no other process holds the lock of the store at `store_path`.
    pub fn acquire(store_path: &Path) -> Result<WriterLock, StoreError> {
        let lock_path = lock_path(store_path);
        let err = |reason: String| StoreError::Open {
            path: lock_path.display().to_string(),
            reason,
        };
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        // Mode 0600: a lock other users could open is a lock they could hold forever.
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        if std::fs::symlink_metadata(&lock_path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(err(
                "is a symbolic link; remove it (entra-sync creates its own lock file)".into(),
            ));
        }
        let mut file = options
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open lock file: {e}")))?;
        // One left by an older version (created with the umask): made private now.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if file
                .metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
            {
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path)
                    .ok()
                    .map(|t| {
                        t.lines()
                            .next()
                            .unwrap_or("")
                            .chars()
                            .take(200)
                            .collect::<String>()
                    })
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "another process".into());
                tracing::info!(lock = %lock_path.display(), "the store is being written by {holder}; waiting for it to finish");
                file.lock().map_err(|e| err(format!("cannot lock: {e}")))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(format!("cannot lock: {e}"))),
        }
        // Say who holds it, for the next one to wait (best effort: the lock is what counts).
        let me = format!(
            "entra-sync pid {} since {}\n",
            std::process::id(),
            crate::clock::Clock::now_rfc3339(&crate::clock::SystemClock)
        );
        let _ = file
            .set_len(0)
            .and_then(|()| std::io::Write::write_all(&mut file, me.as_bytes()));
        Ok(WriterLock { _file: file })
    }
}

fn lock_path(store_path: &Path) -> PathBuf {
    let mut name = store_path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    store_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn migrations_are_valid_and_apply_from_empty_and_every_version() {
        let m = migrations().unwrap();
        m.validate().unwrap();
        let total = MIGRATIONS_DIR.dirs().count();
        for start in 0..=total {
            let mut conn = Connection::open_in_memory().unwrap();
            m.to_version(&mut conn, start).unwrap();
            m.to_latest(&mut conn).unwrap();
            let v: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v as usize, total, "from version {start}");
        }
    }

    #[test]
    fn links_of_an_older_store_keep_their_state_and_follow_the_directory_and_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations().unwrap().to_version(&mut conn, 3).unwrap();
            conn.execute_batch(
                "INSERT INTO employees (id, username, email, active, is_root) VALUES
                     (1, 'ada', 'ada@c.com', 1, 0),
                     (2, 'bob', 'bob@c.com', 0, 0),
                     (3, 'eve_Archived', 'eve@c.com_Archived', 0, 0);
                 INSERT INTO sync_links (tenant, object_id, record_kind, record_id, source, synced_at) VALUES
                     ('msp', '00000000-0000-0000-0000-000000000001', 'employee', 1, '{}', 'x'),
                     ('msp', '00000000-0000-0000-0000-000000000002', 'employee', 2, '{}', 'x'),
                     ('msp', '00000000-0000-0000-0000-000000000003', 'employee', 3, '{}', 'x');
                 INSERT INTO groups (tenant, object_id, display_name, read_only) VALUES
                     ('msp', '00000000-0000-0000-0000-0000000000aa', 'Staff', 1);
                 INSERT INTO entra_users (tenant, object_id, data) VALUES
                     ('msp', '00000000-0000-0000-0000-000000000001',
                      '{\"id\":\"00000000-0000-0000-0000-000000000001\",\"user_principal_name\":\"ada@c.onmicrosoft.com\"}');",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let states = |store: &Store| -> Vec<(String, String)> {
            let mut stmt = store
                .conn
                .prepare("SELECT directory, state FROM sync_links ORDER BY record_id")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let pair = |d: &str, s: &str| (d.to_string(), s.to_string());
        assert_eq!(
            states(&store),
            [
                pair("msp", "synced"),
                pair("msp", "left"),
                pair("msp", "archived")
            ],
            "an inactive record counts as deactivated by the sync, an `_Archived` one as archived"
        );
        let upns: Vec<Option<String>> = store
            .conn
            .prepare("SELECT upn FROM sync_links ORDER BY record_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            upns,
            [Some("ada@c.onmicrosoft.com".to_string()), None, None],
            "the UPN the mirror has"
        );
        let guid = "11111111-2222-3333-4444-555555555555";
        store
            .register_directory("msp", "contoso.onmicrosoft.com", guid)
            .unwrap();
        assert_eq!(
            states(&store)[0],
            pair(guid, "synced"),
            "upgraded on its tenant's first run"
        );
        assert_eq!(
            store
                .known_directory("msp", "contoso.onmicrosoft.com")
                .unwrap()
                .as_deref(),
            Some(guid)
        );
        assert_eq!(
            store
                .known_directory("msp", "other.onmicrosoft.com")
                .unwrap(),
            None
        );

        // The tenant entry renamed: its links stay, the tables keyed by the name follow.
        store
            .register_directory("contoso", "contoso.onmicrosoft.com", guid)
            .unwrap();
        assert_eq!(states(&store)[0], pair(guid, "synced"));
        let tenant: String = store
            .conn
            .query_row("SELECT tenant FROM groups", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tenant, "contoso");
        assert_eq!(
            store
                .known_directory("msp", "contoso.onmicrosoft.com")
                .unwrap(),
            None
        );
        assert_eq!(
            store.directory_names().unwrap(),
            BTreeMap::from([(guid.to_string(), "contoso".to_string())])
        );

        // The old name now stands for another directory, listed before the renamed entry: the
        // first directory's tables wait for their entry, and follow it.
        let other = "99999999-2222-3333-4444-555555555555";
        store
            .register_directory("contoso", "fabrikam.onmicrosoft.com", other)
            .unwrap();
        store
            .register_directory("contoso-old", "contoso.onmicrosoft.com", guid)
            .unwrap();
        let tenant: String = store
            .conn
            .query_row("SELECT tenant FROM groups", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tenant, "contoso-old");
        assert_eq!(
            store.directory_names().unwrap(),
            BTreeMap::from([
                (guid.to_string(), "contoso-old".to_string()),
                (other.to_string(), "contoso".to_string())
            ])
        );
    }

    #[test]
    fn store_file_is_private_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/psa.db");
        let store = Store::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        store.conn.pragma_update(None, "user_version", 999).unwrap();
        drop(store);
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains("newer entra-sync"), "{e}");
    }

    /// Under the usual umask (022) every file a sync creates is still 0600: the store, its WAL
    /// and shared-memory files and the writer lock; the lock names its holder.
    #[cfg(unix)]
    #[test]
    fn every_file_a_sync_creates_is_private_and_the_lock_names_its_holder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("psa.db");
        let lock = WriterLock::acquire(&path).unwrap();
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        for name in ["psa.db", "psa.db-wal", "psa.db-shm", "psa.db.lock"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
        }
        let holder = std::fs::read_to_string(dir.path().join("psa.db.lock")).unwrap();
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(lock);
        // A lock left by an older version, made with the umask, is made private.
        std::fs::set_permissions(
            dir.path().join("psa.db.lock"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        drop(WriterLock::acquire(&path).unwrap());
        let mode = std::fs::metadata(dir.path().join("psa.db.lock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A lock path that is a symbolic link is refused, and what it points to is untouched.
    #[cfg(unix)]
    #[test]
    fn a_lock_file_that_is_a_symbolic_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("psa.db.lock")).unwrap();
        let e = WriterLock::acquire(&dir.path().join("psa.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn public_tables_have_the_spec_columns() {
        let store = Store::open(&tempfile::tempdir().unwrap().path().join("s.db")).unwrap();
        let columns = |table: &str| -> Vec<String> {
            let mut stmt = store
                .conn
                .prepare(&format!("PRAGMA table_info({table})"))
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(1))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(
            columns("employees"),
            [
                "id",
                "username",
                "email",
                "first_name",
                "last_name",
                "job_title",
                "phone",
                "department",
                "security_role",
                "active",
                "is_root",
                "created_at",
                "updated_at",
                "deactivated_at"
            ]
        );
        assert_eq!(
            columns("contacts"),
            [
                "id",
                "account",
                "email",
                "first_name",
                "last_name",
                "job_title",
                "phone",
                "phone_type",
                "portal_access",
                "active",
                "created_at",
                "updated_at",
                "deactivated_at"
            ]
        );
        assert_eq!(
            columns("tickets"),
            ["id", "subject", "contact_id", "employee_id"]
        );
        assert_eq!(
            columns("groups"),
            ["id", "tenant", "object_id", "display_name", "read_only"]
        );
        assert_eq!(
            columns("group_members"),
            ["group_id", "member_kind", "member_id"]
        );
    }
}
