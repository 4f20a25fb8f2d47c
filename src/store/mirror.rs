//! The mirror of Entra state (users and direct memberships of the tracked groups) and the delta
//! cursors, per tenant: what an incremental run starts from.
//!
//! Written only by [`crate::apply`], inside the run's transaction, as a diff against the rows
//! already stored (read in key order and merged with the new state, never loaded whole), so a
//! run with nothing new writes no rows. Decides nothing.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use entra_sync_core::ObjectId;
use entra_sync_core::directory::{EntraGroup, EntraUser, MemberType, Snapshot};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{IdText, Store, StoreError};

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

/// What a run writes of the mirror: the new state (`None`: unchanged), the new cursors, and
/// the users it learned are deleted but restorable.
pub struct MirrorWrite<'a> {
    pub snapshot: Option<&'a Snapshot>,
    /// The snapshot holds only these users (and every tracked group, unchanged): only their
    /// rows and memberships are compared and written. `None`: it holds the whole tenant.
    pub only: Option<&'a BTreeSet<ObjectId>>,
    pub cursors: &'a Cursors,
    pub deleted: &'a BTreeSet<ObjectId>,
}

/// How long Entra keeps a deleted user restorable, and a day to spare: a user noted departed
/// longer ago cannot come back by a restore.
pub const RESTORABLE_DAYS: i64 = 31;

impl Store {
    /// The tenant's mirrored directory (empty when never synced).
    pub fn load_mirror(&self, tenant: &str) -> Result<Snapshot, StoreError> {
        load_mirror(&self.conn, tenant)
    }

    /// The tenant's tracked groups and, of its users, only `users` (their attributes and
    /// memberships), read by key: what an incremental round that touched only them starts from.
    pub fn load_mirror_of(
        &self,
        tenant: &str,
        users: &BTreeSet<ObjectId>,
        nested: bool,
    ) -> Result<Snapshot, StoreError> {
        let mut snapshot = super::narrow::mirror_groups(&self.conn, tenant, nested)?;
        super::narrow::mirror_users(&self.conn, tenant, users, &mut snapshot)?;
        Ok(snapshot)
    }

    /// The ids of the groups the mirror tracks (without reading their members).
    pub fn mirror_group_ids(
        &self,
        tenant: &str,
    ) -> Result<std::collections::BTreeSet<ObjectId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT object_id FROM entra_groups WHERE tenant = ?1")?;
        let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
        let mut ids = std::collections::BTreeSet::new();
        for id in rows {
            ids.extend(ObjectId::parse(&id?).ok());
        }
        Ok(ids)
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
}

/// The tenant's mirrored directory (empty when never synced), read through `conn`.
pub(crate) fn load_mirror(
    conn: &rusqlite::Connection,
    tenant: &str,
) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot::default();
    let mut stmt = conn.prepare("SELECT data FROM entra_users WHERE tenant = ?1")?;
    let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
    for data in rows {
        if let Ok(user) = serde_json::from_str::<EntraUser>(&data?) {
            snapshot.users.insert(user.id, user);
        }
    }
    load_groups(conn, tenant, &mut snapshot)?;
    let mut stmt = conn
        .prepare("SELECT group_id, member_id, member_type FROM entra_members WHERE tenant = ?1")?;
    let rows = stmt.query_map([tenant], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (group, member, kind) = row?;
        let (Ok(group), Ok(member)) = (ObjectId::parse(&group), ObjectId::parse(&member)) else {
            continue;
        };
        if let Some(g) = snapshot.groups.get_mut(&group) {
            g.members.insert(member, MemberType::parse(&kind));
        }
    }
    Ok(snapshot)
}

/// The tenant's tracked groups (name, creation time) into `snapshot`, without members.
pub(super) fn load_groups(
    conn: &rusqlite::Connection,
    tenant: &str,
    snapshot: &mut Snapshot,
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("SELECT object_id, display_name, created FROM entra_groups WHERE tenant = ?1")?;
    let rows = stmt.query_map([tenant], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (id, display_name, created) = row?;
        let Ok(id) = ObjectId::parse(&id) else {
            continue; // never written by this version: the next full read replaces it
        };
        let created = created
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(&c).ok())
            .map(|d| d.with_timezone(&chrono::Utc));
        snapshot.groups.insert(
            id,
            EntraGroup {
                display_name,
                created,
                ..EntraGroup::new(id)
            },
        );
    }
    Ok(())
}

/// Walks two sequences ordered by the same key together: `f(Some(old), Some(new))` when
/// `cmp` finds them equal, `(Some, None)` for an item only in `old`, `(None, Some)` for one
/// only in `new`.
fn merge<A, B>(
    old: impl IntoIterator<Item = A>,
    new: impl IntoIterator<Item = B>,
    cmp: impl Fn(&A, &B) -> Ordering,
    mut f: impl FnMut(Option<A>, Option<B>),
) {
    let mut old = old.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => cmp(a, b),
        };
        match order {
            Ordering::Less => f(old.next(), None),
            Ordering::Greater => f(None, new.next()),
            Ordering::Equal => f(old.next(), new.next()),
        }
    }
}

/// The rows of a query, stopping at the first error, which is kept in `error`.
fn rows_until_error<T>(
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    error: &mut Option<rusqlite::Error>,
) -> impl Iterator<Item = T> {
    rows.map_while(move |r| r.map_err(|e| *error = Some(e)).ok())
}

/// One mirror change, collected while the stored rows are read and written after.
enum Op<'a> {
    UpsertUser(&'a EntraUser),
    DeleteUser(String),
    UpsertGroup(&'a EntraGroup),
    DeleteGroup(String),
    AddMember(ObjectId, ObjectId, MemberType),
    /// group, member, member type as stored.
    RemoveMember(String, String, String),
}

/// A stored mirror key and its id; `None` when it is not a GUID (then it is only ever deleted).
fn keyed(text: String) -> (Option<ObjectId>, String) {
    (ObjectId::parse(&text).ok(), text)
}

/// The mirror rows that differ from `new`, found by streaming the stored rows in key order
/// (the stored mirror is never held in memory whole).
fn mirror_diff<'a>(
    tx: &Transaction<'_>,
    tenant: &str,
    new: &'a Snapshot,
) -> Result<Vec<Op<'a>>, StoreError> {
    let mut ops = Vec::new();
    let mut error = None;
    let mut buf = Vec::new();

    let mut stmt =
        tx.prepare("SELECT object_id, data FROM entra_users WHERE tenant = ?1 ORDER BY object_id")?;
    let stored = stmt.query_map([tenant], |r| {
        Ok((keyed(r.get::<_, String>(0)?), r.get::<_, String>(1)?))
    })?;
    merge(
        rows_until_error(stored, &mut error),
        new.users.iter(),
        |((a, _), _), (b, _)| a.cmp(&Some(**b)),
        |old, new| match (old, new) {
            (Some(((_, id), _)), None) => ops.push(Op::DeleteUser(id)),
            (old, Some((_, user))) => {
                buf.clear();
                if serde_json::to_writer(&mut buf, user).is_err()
                    || old.is_none_or(|(_, stored)| stored.as_bytes() != buf.as_slice())
                {
                    ops.push(Op::UpsertUser(user));
                }
            }
            (None, None) => {}
        },
    );
    if let Some(e) = error.take() {
        return Err(e.into());
    }

    let mut stmt = tx.prepare(
        "SELECT object_id, display_name, created FROM entra_groups WHERE tenant = ?1 ORDER BY object_id",
    )?;
    let stored = stmt.query_map([tenant], |r| {
        Ok((
            keyed(r.get::<_, String>(0)?),
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    merge(
        rows_until_error(stored, &mut error),
        new.groups.values(),
        |((a, _), _, _), b| a.cmp(&Some(b.id)),
        |old, new| match (old, new) {
            (Some(((_, id), _, _)), None) => ops.push(Op::DeleteGroup(id)),
            (old, Some(group)) => {
                let created = group.created.map(|c| c.to_rfc3339());
                if old.is_none_or(|(_, name, at)| name != group.display_name || at != created) {
                    ops.push(Op::UpsertGroup(group));
                }
            }
            (None, None) => {}
        },
    );
    if let Some(e) = error.take() {
        return Err(e.into());
    }

    // Members of the groups still tracked (a dropped group's members go with DeleteGroup).
    let mut stmt = tx.prepare(
        "SELECT group_id, member_id, member_type FROM entra_members WHERE tenant = ?1
         ORDER BY group_id, member_id",
    )?;
    let stored = stmt.query_map([tenant], |r| {
        Ok((
            keyed(r.get::<_, String>(0)?),
            keyed(r.get::<_, String>(1)?),
            r.get::<_, String>(2)?,
        ))
    })?;
    let wanted = new
        .groups
        .iter()
        .flat_map(|(g, group)| group.members.iter().map(move |(m, kind)| (*g, *m, *kind)));
    merge(
        rows_until_error(stored, &mut error)
            .filter(|((g, _), _, _)| g.is_some_and(|g| new.groups.contains_key(&g))),
        wanted,
        |((g1, _), (m1, _), _), (g2, m2, _)| (*g1, *m1).cmp(&(Some(*g2), Some(*m2))),
        |old, new| match (old, new) {
            (Some(((_, g), (_, m), kind)), None) => ops.push(Op::RemoveMember(g, m, kind)),
            (old, Some((g, m, kind))) => {
                if old.is_none_or(|(_, _, stored)| stored != kind.as_str()) {
                    ops.push(Op::AddMember(g, m, kind));
                }
            }
            (None, None) => {}
        },
    );
    if let Some(e) = error.take() {
        return Err(e.into());
    }
    Ok(ops)
}

/// The mirror rows of `users` that differ from `new`, which holds only them, read by key.
fn users_diff<'a>(
    tx: &Transaction<'_>,
    tenant: &str,
    new: &'a Snapshot,
    users: &BTreeSet<ObjectId>,
) -> Result<Vec<Op<'a>>, StoreError> {
    let mut ops = Vec::new();
    let mut row =
        tx.prepare_cached("SELECT data FROM entra_users WHERE tenant = ?1 AND object_id = ?2")?;
    let mut member = tx.prepare_cached(
        "SELECT member_type FROM entra_members
         WHERE tenant = ?1 AND group_id = ?2 AND member_id = ?3",
    )?;
    for user in users {
        let id = user.to_string();
        let stored: Option<String> = row
            .query_row(params![tenant, id], |r| r.get(0))
            .optional()?;
        match (stored, new.users.get(user)) {
            (Some(_), None) => ops.push(Op::DeleteUser(id.clone())),
            (stored, Some(now)) => {
                if serde_json::to_string(now).ok() != stored {
                    ops.push(Op::UpsertUser(now));
                }
            }
            (None, None) => {}
        }
        for (group_id, group) in &new.groups {
            let group_text = group_id.to_string();
            let stored: Option<String> = member
                .query_row(params![tenant, group_text, id], |r| r.get(0))
                .optional()?;
            match (stored, group.members.get(user)) {
                (Some(kind), None) => ops.push(Op::RemoveMember(group_text, id.clone(), kind)),
                (stored, Some(kind)) => {
                    if stored.as_deref() != Some(kind.as_str()) {
                        ops.push(Op::AddMember(*group_id, *user, *kind));
                    }
                }
                (None, None) => {}
            }
        }
    }
    Ok(ops)
}

/// Writes the mirror diff and the cursors; returns the number of mirror rows written. A user
/// who loses their last membership, or is deleted but restorable, is noted as departed
/// (`entra_departed`, forgotten after [`RESTORABLE_DAYS`]); one who gains a membership is no
/// longer.
pub(crate) fn write_mirror(
    tx: &Transaction<'_>,
    tenant: &str,
    write: &MirrorWrite<'_>,
    now: &str,
) -> Result<u64, StoreError> {
    let mut rows = 0u64;
    if let Some(new) = write.snapshot {
        let ops = match write.only {
            Some(users) => users_diff(tx, tenant, new, users)?,
            None => mirror_diff(tx, tenant, new)?,
        };
        rows = ops.len() as u64;
        // Prepared once: there is a statement per user and per membership.
        let mut upsert_user = tx.prepare_cached(
            "INSERT OR REPLACE INTO entra_users (tenant, object_id, data) VALUES (?1, ?2, ?3)",
        )?;
        let mut delete_user =
            tx.prepare_cached("DELETE FROM entra_users WHERE tenant = ?1 AND object_id = ?2")?;
        let mut add_member = tx.prepare_cached(
            "INSERT OR REPLACE INTO entra_members (tenant, group_id, member_id, member_type) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut remove_member = tx.prepare_cached(
            "DELETE FROM entra_members WHERE tenant = ?1 AND group_id = ?2 AND member_id = ?3",
        )?;
        let mut arrived =
            tx.prepare_cached("DELETE FROM entra_departed WHERE tenant = ?1 AND object_id = ?2")?;
        // Users who lost a membership: departed if it was their last.
        let mut losing: Vec<String> = Vec::new();
        for op in ops {
            match op {
                Op::UpsertUser(user) => {
                    let data = serde_json::to_string(user).unwrap_or_default();
                    upsert_user.execute(params![tenant, IdText::of(user.id), data])?;
                }
                Op::DeleteUser(id) => {
                    delete_user.execute(params![tenant, id])?;
                }
                Op::UpsertGroup(group) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO entra_groups (tenant, object_id, display_name, created) VALUES (?1, ?2, ?3, ?4)",
                        params![tenant, IdText::of(group.id), group.display_name, group.created.map(|c| c.to_rfc3339())],
                    )?;
                }
                Op::DeleteGroup(id) => {
                    let mut members = tx.prepare_cached(
                        "SELECT member_id FROM entra_members
                         WHERE tenant = ?1 AND group_id = ?2 AND member_type = 'user'",
                    )?;
                    let rows = members.query_map(params![tenant, id], |r| r.get(0))?;
                    for member in rows {
                        losing.push(member?);
                    }
                    tx.execute(
                        "DELETE FROM entra_members WHERE tenant = ?1 AND group_id = ?2",
                        params![tenant, id],
                    )?;
                    tx.execute(
                        "DELETE FROM entra_groups WHERE tenant = ?1 AND object_id = ?2",
                        params![tenant, id],
                    )?;
                }
                Op::AddMember(group, member, kind) => {
                    add_member.execute(params![
                        tenant,
                        IdText::of(group),
                        IdText::of(member),
                        kind.as_str()
                    ])?;
                    if kind == MemberType::User {
                        arrived.execute(params![tenant, IdText::of(member)])?;
                    }
                }
                Op::RemoveMember(group, member, kind) => {
                    remove_member.execute(params![tenant, group, member])?;
                    if kind == MemberType::User.as_str() {
                        losing.push(member);
                    }
                }
            }
        }
        let mut departed = tx.prepare_cached(
            "INSERT OR IGNORE INTO entra_departed (tenant, object_id, since) VALUES (?1, ?2, ?3)",
        )?;
        // The snapshot's users are exactly the members of a tracked group: one who is not
        // there lost their last membership. (Asked of `entra_members` instead, it was a scan
        // of the tenant's memberships per user: 3.8 s for 1,000 removals at 100k users.)
        for user in losing {
            let still_member = ObjectId::parse(&user).is_ok_and(|id| new.users.contains_key(&id));
            if !still_member {
                departed.execute(params![tenant, user, now])?;
            }
        }
    }
    if !write.deleted.is_empty() {
        let mut deleted = tx.prepare_cached(
            "INSERT INTO entra_departed (tenant, object_id, since) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, object_id) DO UPDATE SET since = excluded.since",
        )?;
        for user in write.deleted {
            deleted.execute(params![tenant, IdText::of(*user), now])?;
        }
    }
    if let Ok(now) = chrono::DateTime::parse_from_rfc3339(now) {
        let before = now - chrono::Duration::days(RESTORABLE_DAYS);
        tx.execute(
            "DELETE FROM entra_departed WHERE tenant = ?1 AND since < ?2",
            params![tenant, crate::clock::rfc3339(before.to_utc())],
        )?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `u1`, `g2`: the digit after the letter tells ids apart, the letter says what it is.
    fn id(name: &str) -> ObjectId {
        let n: u128 = name[1..].parse().unwrap();
        ObjectId::from_u128(if name.starts_with('g') { 0x100 + n } else { n })
    }

    fn user(name: &str, title: &str) -> EntraUser {
        EntraUser {
            user_principal_name: Some(format!("{name}@contoso.com")),
            job_title: Some(title.into()),
            account_enabled: Some(true),
            ..EntraUser::new(id(name))
        }
    }

    fn group(name: &str, display: &str, members: &[(&str, MemberType)]) -> EntraGroup {
        EntraGroup {
            display_name: Some(display.into()),
            members: members.iter().map(|(m, k)| (id(m), *k)).collect(),
            ..EntraGroup::new(id(name))
        }
    }

    fn snapshot(users: Vec<EntraUser>, groups: Vec<EntraGroup>) -> Snapshot {
        Snapshot {
            users: users.into_iter().map(|u| (u.id, u)).collect(),
            groups: groups.into_iter().map(|g| (g.id, g)).collect(),
        }
    }

    /// u1–u3; g1 holds u1, u2 and the group g2, which holds `g2_members`.
    fn three_users_in_nested_groups(g2_members: &[(&str, MemberType)]) -> Snapshot {
        let user_kind = MemberType::User;
        snapshot(
            vec![user("u1", "Dev"), user("u2", "Ops"), user("u3", "QA")],
            vec![
                group(
                    "g1",
                    "One",
                    &[
                        ("u1", user_kind),
                        ("u2", user_kind),
                        ("g2", MemberType::Group),
                    ],
                ),
                group("g2", "Two", g2_members),
            ],
        )
    }

    fn write(store: &mut Store, tenant: &str, s: &Snapshot) -> u64 {
        write_only(store, tenant, s, None)
    }

    fn write_only(
        store: &mut Store,
        tenant: &str,
        s: &Snapshot,
        only: Option<&BTreeSet<ObjectId>>,
    ) -> u64 {
        let cursors = Cursors::default();
        let tx = store.conn.transaction().unwrap();
        let rows = write_mirror(
            &tx,
            tenant,
            &MirrorWrite {
                snapshot: Some(s),
                only,
                cursors: &cursors,
                deleted: &BTreeSet::new(),
            },
            "2026-11-23T00:00:00Z",
        )
        .unwrap();
        tx.commit().unwrap();
        rows
    }

    #[test]
    fn the_mirror_diff_writes_only_what_changed_and_reads_back_the_new_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let user_kind = MemberType::User;
        let a = three_users_in_nested_groups(&[("u3", user_kind)]);
        // Another tenant's mirror must not be touched by this tenant's diff.
        assert_eq!(write(&mut store, "other", &a), 3 + 2 + 4);
        assert_eq!(write(&mut store, "t", &a), 9);
        assert_eq!(write(&mut store, "t", &a), 0, "nothing new writes nothing");

        let b = snapshot(
            // u1 changed, u2 gone, u4 new
            vec![user("u1", "Lead"), user("u3", "QA"), user("u4", "New")],
            // g1 renamed, loses u2, gains u4; g2 dropped with its members
            vec![group("g1", "Uno", &[("u1", user_kind), ("u4", user_kind)])],
        );
        // users: u1 upsert, u2 delete, u4 upsert → 3
        // groups: g1 upsert, g2 delete → 2; members: g1 -u2 -g2 +u4 → 3
        assert_eq!(write(&mut store, "t", &b), 3 + 2 + 3);
        assert_eq!(store.load_mirror("t").unwrap(), b);
        assert_eq!(store.load_mirror("other").unwrap(), a);
        assert_eq!(write(&mut store, "t", &b), 0);
    }

    #[test]
    fn a_mirror_of_some_users_is_read_and_written_by_key_and_leaves_everyone_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let user_kind = MemberType::User;
        let whole = three_users_in_nested_groups(&[("u2", user_kind), ("u3", user_kind)]);
        write(&mut store, "t", &whole);
        let touched: BTreeSet<ObjectId> = ["u2", "u4"].into_iter().map(id).collect();
        // What the round starts from: the groups (nested: which holds which) and u2 (u4 is
        // not in the mirror yet).
        let mut part = store.load_mirror_of("t", &touched, true).unwrap();
        assert_eq!(
            part.users.keys().copied().collect::<Vec<_>>(),
            vec![id("u2")]
        );
        assert_eq!(
            part.groups[&id("g1")].members,
            [(id("u2"), user_kind), (id("g2"), MemberType::Group)].into()
        );
        assert_eq!(
            part.groups[&id("g2")].members,
            [(id("u2"), user_kind)].into()
        );
        // Then: u2 retitled and out of g2, u4 new in g2.
        part.users.insert(id("u2"), user("u2", "Lead"));
        part.users.insert(id("u4"), user("u4", "New"));
        let g2 = part.groups.get_mut(&id("g2")).unwrap();
        g2.members.remove(&id("u2"));
        g2.members.insert(id("u4"), user_kind);
        // u2 upsert, u4 upsert; g2 -u2 +u4.
        assert_eq!(write_only(&mut store, "t", &part, Some(&touched)), 4);
        let mut expected = whole.clone();
        expected.replace_users(&part, &touched);
        assert_eq!(store.load_mirror("t").unwrap(), expected);
        assert_eq!(write_only(&mut store, "t", &part, Some(&touched)), 0);
    }
}
