//! The mirror of Entra state (users and direct memberships of the tracked groups) and the delta
//! cursors, per tenant: what an incremental run starts from.
//!
//! Written only by [`crate::apply`], inside the run's transaction, as a diff against what was
//! there so that a run with nothing new writes no rows. Decides nothing.

use std::collections::BTreeMap;

use rusqlite::{Transaction, params};

use super::{Store, StoreError};
use crate::directory::{EntraGroup, EntraUser, MemberType, Snapshot};

/// Where each delta round of a tenant continues, and what they were taken for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursors {
    /// Fingerprint of what the cursors track (groups, `$select`); a mismatch means a full sync.
    pub scope: String,
    /// Fingerprint of the mapping config the mirror was last resolved with.
    pub rules: String,
    /// resource (`users`, `groups:0`, …) → deltaLink.
    pub links: BTreeMap<String, String>,
}

/// What a run writes of the mirror: the new state, the state it replaces, the new cursors.
pub struct MirrorWrite<'a> {
    pub snapshot: Option<(&'a Snapshot, &'a Snapshot)>,
    pub cursors: &'a Cursors,
}

fn member_type_str(t: MemberType) -> &'static str {
    match t {
        MemberType::User => "user",
        MemberType::Group => "group",
        MemberType::Other => "other",
    }
}

impl Store {
    /// The tenant's mirrored directory (empty when never synced).
    pub fn load_mirror(&self, tenant: &str) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        let mut stmt = self
            .conn
            .prepare("SELECT data FROM entra_users WHERE tenant = ?1")?;
        let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
        for data in rows {
            if let Ok(user) = serde_json::from_str::<EntraUser>(&data?) {
                snapshot.users.insert(user.id.clone(), user);
            }
        }
        let mut stmt = self.conn.prepare(
            "SELECT object_id, display_name, created FROM entra_groups WHERE tenant = ?1",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (id, display_name, created) = row?;
            let created = created
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok())
                .map(|d| d.with_timezone(&chrono::Utc));
            snapshot.groups.insert(
                id.clone(),
                EntraGroup {
                    id,
                    display_name,
                    created,
                    members: BTreeMap::new(),
                },
            );
        }
        let mut stmt = self.conn.prepare(
            "SELECT group_id, member_id, member_type FROM entra_members WHERE tenant = ?1",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (group, member, kind) = row?;
            let kind = match kind.as_str() {
                "user" => MemberType::User,
                "group" => MemberType::Group,
                _ => MemberType::Other,
            };
            if let Some(g) = snapshot.groups.get_mut(&group) {
                g.members.insert(member, kind);
            }
        }
        Ok(snapshot)
    }

    /// The ids of the groups the mirror tracks (without reading their members).
    pub fn mirror_group_ids(
        &self,
        tenant: &str,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT object_id FROM entra_groups WHERE tenant = ?1")?;
        let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn load_cursors(&self, tenant: &str) -> Result<Option<Cursors>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT resource, link, scope, rules FROM delta_cursors WHERE tenant = ?1")?;
        let rows = stmt.query_map([tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut cursors: Option<Cursors> = None;
        for row in rows {
            let (resource, link, scope, rules) = row?;
            let c = cursors.get_or_insert_with(|| Cursors {
                scope,
                rules,
                links: BTreeMap::new(),
            });
            c.links.insert(resource, link);
        }
        Ok(cursors)
    }

    /// When each tenant's delta cursors were last saved (RFC 3339), for `status`.
    pub fn cursor_saved_at(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT tenant, MIN(saved_at) FROM delta_cursors GROUP BY tenant")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The status of the tenant's latest run, if any.
    pub fn last_status(&self, tenant: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT status FROM sync_runs WHERE tenant = ?1 ORDER BY id DESC LIMIT 1",
                [tenant],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// Writes the mirror diff and the cursors; returns the number of mirror rows written.
pub(crate) fn write_mirror(
    tx: &Transaction<'_>,
    tenant: &str,
    write: &MirrorWrite<'_>,
    now: &str,
) -> Result<u64, StoreError> {
    let mut rows = 0u64;
    if let Some((new, old)) = write.snapshot {
        let mut upsert_user = tx.prepare_cached(
            "INSERT OR REPLACE INTO entra_users (tenant, object_id, data) VALUES (?1, ?2, ?3)",
        )?;
        for (id, user) in &new.users {
            if old.users.get(id) != Some(user) {
                let data = serde_json::to_string(user).unwrap_or_default();
                upsert_user.execute(params![tenant, id, data])?;
                rows += 1;
            }
        }
        let mut delete_user =
            tx.prepare_cached("DELETE FROM entra_users WHERE tenant = ?1 AND object_id = ?2")?;
        for id in old.users.keys().filter(|id| !new.users.contains_key(*id)) {
            delete_user.execute(params![tenant, id])?;
            rows += 1;
        }
        let mut add_member = tx.prepare_cached(
            "INSERT OR REPLACE INTO entra_members (tenant, group_id, member_id, member_type) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut remove_member = tx.prepare_cached(
            "DELETE FROM entra_members WHERE tenant = ?1 AND group_id = ?2 AND member_id = ?3",
        )?;
        let empty = BTreeMap::new();
        for (id, group) in &new.groups {
            let before = old.groups.get(id);
            let changed_meta = before
                .is_none_or(|b| b.display_name != group.display_name || b.created != group.created);
            if changed_meta {
                tx.execute(
                    "INSERT OR REPLACE INTO entra_groups (tenant, object_id, display_name, created) VALUES (?1, ?2, ?3, ?4)",
                    params![tenant, id, group.display_name, group.created.map(|c| c.to_rfc3339())],
                )?;
                rows += 1;
            }
            let old_members = before.map_or(&empty, |b| &b.members);
            for (member, kind) in &group.members {
                if old_members.get(member) != Some(kind) {
                    add_member.execute(params![tenant, id, member, member_type_str(*kind)])?;
                    rows += 1;
                }
            }
            for member in old_members
                .keys()
                .filter(|m| !group.members.contains_key(*m))
            {
                remove_member.execute(params![tenant, id, member])?;
                rows += 1;
            }
        }
        for id in old.groups.keys().filter(|id| !new.groups.contains_key(*id)) {
            tx.execute(
                "DELETE FROM entra_members WHERE tenant = ?1 AND group_id = ?2",
                params![tenant, id],
            )?;
            tx.execute(
                "DELETE FROM entra_groups WHERE tenant = ?1 AND object_id = ?2",
                params![tenant, id],
            )?;
            rows += 1;
        }
    }
    tx.execute("DELETE FROM delta_cursors WHERE tenant = ?1", [tenant])?;
    for (resource, link) in &write.cursors.links {
        tx.execute(
            "INSERT INTO delta_cursors (tenant, resource, link, scope, rules, saved_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![tenant, resource, link, write.cursors.scope, write.cursors.rules, now],
        )?;
    }
    Ok(rows)
}
