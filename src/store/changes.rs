//! The change log read back for people (`entra-sync changes`): newest first, filtered by
//! tenant, person, run or time. Reads only.

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};

/// Which changes to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeQuery {
    pub tenant: Option<String>,
    /// An object id, or an email or UPN the record has or was synced from (case-insensitive).
    pub user: Option<String>,
    pub run: Option<i64>,
    /// RFC 3339: changes at or after it.
    pub since: Option<String>,
    pub limit: usize,
}

/// One applied change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEntry {
    pub id: i64,
    pub run: i64,
    pub at: String,
    pub tenant: Option<String>,
    pub object_id: Option<String>,
    pub action: String,
    pub record_kind: String,
    pub record_id: Option<i64>,
    /// The record's email now.
    pub email: Option<String>,
    /// `{"column": [old, new], …}` for a record; what changed for a group.
    pub changes: serde_json::Value,
}

impl Store {
    pub fn changes(&self, q: &ChangeQuery) -> Result<Vec<ChangeEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT l.id, l.run_id, l.at, l.tenant, l.object_id, l.action, l.record_kind,
                    l.record_id, COALESCE(e.email, c.email), l.changes
             FROM change_log l
             LEFT JOIN employees e ON l.record_kind = 'employee' AND e.id = l.record_id
             LEFT JOIN contacts c ON l.record_kind = 'contact' AND c.id = l.record_id
             WHERE (?1 IS NULL OR l.tenant = ?1)
               AND (?2 IS NULL OR l.run_id = ?2)
               AND (?3 IS NULL OR l.at >= ?3)
               AND (?4 IS NULL
                    OR lower(l.object_id) = lower(?4)
                    OR lower(COALESCE(e.email, c.email)) = lower(?4)
                    OR l.object_id IN (SELECT object_id FROM sync_links WHERE lower(upn) = lower(?4)))
             ORDER BY l.id DESC
             LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![
                q.tenant,
                q.run,
                q.since,
                q.user.as_deref().map(str::trim),
                q.limit.max(1) as i64
            ],
            |r| {
                let changes: String = r.get(9)?;
                Ok(ChangeEntry {
                    id: r.get(0)?,
                    run: r.get(1)?,
                    at: r.get(2)?,
                    tenant: r.get(3)?,
                    object_id: r.get(4)?,
                    action: r.get(5)?,
                    record_kind: r.get(6)?,
                    record_id: r.get(7)?,
                    email: r.get(8)?,
                    changes: serde_json::from_str(&changes)
                        .unwrap_or(serde_json::Value::String(changes)),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
