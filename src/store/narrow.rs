//! Reads for an incremental run planned from the users its changes touch (`crate::narrow`):
//! their mirror rows and memberships, the records they are linked to or whose names they want,
//! and the count the percent guard needs — each by key through the indexes, never a scan of
//! the tenant, so the run's local work follows the change, not the tenant's size (SPEC 8).
//! Decides nothing: which users and names to read is the caller's.

use std::collections::BTreeSet;

use entra_sync_core::ObjectId;
use entra_sync_core::directory::{EntraUser, MemberType, Snapshot};
use entra_sync_core::plan::StoreView;
use entra_sync_core::record::{RecordKind, Values};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    CONTACT_COLUMNS, EMPLOYEE_COLUMNS, IdText, LINK_COLUMNS, StoreError, contact_row,
    directories_and_groups, employee_row, link_row,
};

/// Names as the sync compares them (trimmed, lower case): the emails and usernames a run's
/// users want.
#[derive(Debug, Default)]
pub struct Names {
    pub emails: BTreeSet<String>,
    pub usernames: BTreeSet<String>,
}

impl Names {
    /// Adds the names of `values` that `seen` does not hold yet (which then holds them too).
    /// A blank name is nobody's: looking it up would read every record without one.
    pub fn add_new(&mut self, values: &Values, seen: &mut Names) {
        if let Some(email) = values.email_key()
            && !email.as_str().is_empty()
            && seen.emails.insert(email.as_str().to_string())
        {
            self.emails.insert(email.as_str().to_string());
        }
        if let Some(username) = values.username_key()
            && !username.as_str().is_empty()
            && seen.usernames.insert(username.as_str().to_string())
        {
            self.usernames.insert(username.as_str().to_string());
        }
    }
}

/// The tenant's tracked groups (their names and creation times) and, with nested groups,
/// which contains which; no user is a member yet ([`mirror_users`] adds them).
pub(crate) fn mirror_groups(
    conn: &Connection,
    tenant: &str,
    nested: bool,
) -> Result<Snapshot, StoreError> {
    let mut snapshot = Snapshot::default();
    super::mirror::load_groups(conn, tenant, &mut snapshot)?;
    if nested {
        let ids: Vec<ObjectId> = snapshot.groups.keys().copied().collect();
        let mut edge = conn.prepare_cached(
            "SELECT member_type FROM entra_members
             WHERE tenant = ?1 AND group_id = ?2 AND member_id = ?3",
        )?;
        for parent in &ids {
            for child in &ids {
                let kind: Option<String> = edge
                    .query_row(
                        params![tenant, IdText::of(*parent), IdText::of(*child)],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let (Some(kind), Some(group)) = (kind, snapshot.groups.get_mut(parent)) {
                    group.members.insert(*child, MemberType::parse(&kind));
                }
            }
        }
    }
    Ok(snapshot)
}

/// Adds `users`' mirror rows and their memberships in `snapshot`'s groups (a user who is in
/// none of them is not in the mirror: out of scope).
pub(crate) fn mirror_users(
    conn: &Connection,
    tenant: &str,
    users: &BTreeSet<ObjectId>,
    snapshot: &mut Snapshot,
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    // One statement per table (and per group), each looking the users up in key order.
    let ids = serde_json::Value::from(users.iter().map(ToString::to_string).collect::<Vec<_>>())
        .to_string();
    let mut rows = conn.prepare_cached(
        "SELECT data FROM entra_users
         WHERE tenant = ?1 AND object_id IN (SELECT value FROM json_each(?2))",
    )?;
    for data in rows.query_map(params![tenant, ids], |r| r.get::<_, String>(0))? {
        if let Ok(user) = serde_json::from_str::<EntraUser>(&data?) {
            snapshot.users.insert(user.id, user);
        }
    }
    let mut members = conn.prepare_cached(
        "SELECT member_id, member_type FROM entra_members
         WHERE tenant = ?1 AND group_id = ?2 AND member_id IN (SELECT value FROM json_each(?3))",
    )?;
    for (group_id, group) in &mut snapshot.groups {
        let found = members.query_map(params![tenant, IdText::of(*group_id), ids], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in found {
            let (member, kind) = row?;
            if let Ok(member) = ObjectId::parse(&member) {
                group.members.insert(member, MemberType::parse(&kind));
            }
        }
    }
    Ok(())
}

/// Adds to `view` what the planner needs of `users` of `directory` and the names they want:
/// the records linked to them, the records holding one of the names (an email on any
/// record, a username on any employee; the NOCASE indexes find ASCII case variants), the
/// employees holding a name such a record would be archived under, and every link of those
/// records. With `unusual`, also the few records whose names are not
/// plain ASCII, which the indexes cannot compare as the sync does (migration 06): read them
/// once per view. Records already in `view` are not read again.
pub(crate) fn records_around(
    conn: &Connection,
    directory: &str,
    users: &BTreeSet<ObjectId>,
    names: &Names,
    unusual: bool,
    view: &mut StoreView,
) -> Result<(), StoreError> {
    let mut keys: BTreeSet<(RecordKind, i64)> = BTreeSet::new();
    let mut linked = conn.prepare_cached(&format!(
        "SELECT {LINK_COLUMNS} FROM sync_links WHERE directory = ?1 AND object_id = ?2"
    ))?;
    for user in users {
        for link in linked.query_map(params![directory, IdText::of(*user)], link_row)? {
            if let Some(link) = link? {
                keys.insert((link.kind, link.record_id));
            }
        }
    }
    let mut ids = |sql: &str, kind: RecordKind, values: &BTreeSet<String>| {
        let mut stmt = conn.prepare_cached(sql)?;
        for value in values {
            for id in stmt.query_map([value], |r| r.get::<_, i64>(0))? {
                keys.insert((kind, id?));
            }
        }
        Ok::<_, StoreError>(())
    };
    let employee = RecordKind::Employee;
    let contact = RecordKind::Contact;
    ids(
        "SELECT id FROM employees WHERE email = ?1 COLLATE NOCASE",
        employee,
        &names.emails,
    )?;
    ids(
        "SELECT id FROM employees WHERE username = ?1 COLLATE NOCASE",
        employee,
        &names.usernames,
    )?;
    ids(
        "SELECT id FROM contacts WHERE email = ?1 COLLATE NOCASE",
        contact,
        &names.emails,
    )?;
    // Exactly the partial indexes' conditions (migration 06): SQLite reads only them (and
    // fails the statement if it could not).
    let unusual_names = [
        (
            "SELECT id FROM employees INDEXED BY employees_unusual_names
             WHERE email <> trim(email) OR username <> trim(username)
                OR email GLOB '*[^ -~]*' OR username GLOB '*[^ -~]*'",
            employee,
        ),
        (
            "SELECT id FROM contacts INDEXED BY contacts_unusual_email
             WHERE email <> trim(email) OR email GLOB '*[^ -~]*'",
            contact,
        ),
    ];
    for (sql, kind) in unusual_names.iter().filter(|_| unusual) {
        let mut stmt = conn.prepare_cached(sql)?;
        for id in stmt.query_map([], |r| r.get::<_, i64>(0))? {
            keys.insert((*kind, id?));
        }
    }
    let new = read_records(conn, keys, view)?;
    // An employee archived by a kind change is renamed `…_Archived`, `…_Archived2`, … : the
    // first no employee has. Whoever has one must be in the view.
    let mut archived = conn.prepare_cached(
        "SELECT id FROM employees
         WHERE username >= ?1 COLLATE NOCASE AND username < ?2 COLLATE NOCASE",
    )?;
    let mut taken = BTreeSet::new();
    for key in new {
        let Some(name) = view.records.get(&key).and_then(|r| r.values.username()) else {
            continue;
        };
        // (Compared as the sync compares names: trimmed.)
        let name = name.trim();
        let from = format!("{name}_archived");
        let to = format!("{name}_archivee");
        for id in archived.query_map([&from, &to], |r| r.get::<_, i64>(0))? {
            taken.insert((RecordKind::Employee, id?));
        }
    }
    read_records(conn, taken, view)?;
    Ok(())
}

/// Users of `tenant` who want one of `names` although no record of theirs says so: with an
/// open report about it (migration 09: a change to who holds or wants the name can settle
/// it), or whose record an admin renamed away from it (`unheld_names`, migration 10: they
/// still want it, SPEC 4.6).
pub(crate) fn users_wanting(
    conn: &Connection,
    tenant: &str,
    names: &Names,
) -> Result<BTreeSet<ObjectId>, StoreError> {
    let mut users = BTreeSet::new();
    for table in ["open_reports", "unheld_names"] {
        let mut add = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
            let mut stmt = conn.prepare_cached(sql)?;
            for id in stmt.query_map(params, |r| r.get::<_, String>(0))? {
                users.extend(ObjectId::parse(&id?).ok());
            }
            Ok::<_, StoreError>(())
        };
        let by_email =
            format!("SELECT object_id FROM {table} WHERE tenant = ?1 AND wants_email = ?2");
        for email in &names.emails {
            add(&by_email, params![tenant, email])?;
        }
        // A username, and the names an employee holding it would be archived under
        // (`…_archived`, `…_archived2`, …: the planner gives the first nobody wants).
        let by_username =
            format!("SELECT object_id FROM {table} WHERE tenant = ?1 AND wants_username = ?2");
        let archived = format!(
            "SELECT object_id FROM {table}
             WHERE tenant = ?1 AND wants_username >= ?2 AND wants_username < ?3"
        );
        for username in &names.usernames {
            add(&by_username, params![tenant, username])?;
            let (from, to) = (
                format!("{username}_archived"),
                format!("{username}_archivee"),
            );
            add(&archived, params![tenant, from, to])?;
        }
    }
    Ok(users)
}

/// Reads the records `keys` names that `view` does not hold yet, and every link of them;
/// returns the employees read.
fn read_records(
    conn: &Connection,
    keys: BTreeSet<(RecordKind, i64)>,
    view: &mut StoreView,
) -> Result<Vec<(RecordKind, i64)>, StoreError> {
    let mut employees = conn.prepare_cached(&format!(
        "SELECT {EMPLOYEE_COLUMNS} FROM employees WHERE id = ?1"
    ))?;
    let mut contacts = conn.prepare_cached(&format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = ?1"
    ))?;
    let mut links = conn.prepare_cached(&format!(
        "SELECT {LINK_COLUMNS} FROM sync_links WHERE record_kind = ?1 AND record_id = ?2"
    ))?;
    let mut read = Vec::new();
    for (kind, id) in keys {
        if view.records.contains_key(&(kind, id)) {
            continue;
        }
        let record = match kind {
            RecordKind::Employee => employees.query_row([id], employee_row).optional()?,
            RecordKind::Contact => contacts.query_row([id], contact_row).optional()?,
        };
        let Some(record) = record else {
            continue; // deleted outside the sync: its link is stale
        };
        view.records.insert((kind, id), record);
        for link in links.query_map(params![kind.as_str(), id], link_row)? {
            view.links.extend(link?);
        }
        if kind == RecordKind::Employee {
            read.push((kind, id));
        }
    }
    Ok(read)
}

/// Completes a view [`records_around`] filled: the tenant's groups with the memberships of
/// the view's records, the directories' names and the tenant's pending deactivations. No
/// tickets: a run of some users purges nothing.
pub(crate) fn groups_around(
    conn: &Connection,
    tenant: &str,
    view: &mut StoreView,
) -> Result<(), StoreError> {
    let mut groups = directories_and_groups(conn, tenant, view)?;
    let mut members = conn.prepare_cached(
        "SELECT member_id FROM group_members
         WHERE group_id = ?1 AND member_kind = ?2 AND member_id IN (SELECT value FROM json_each(?3))",
    )?;
    for kind in [RecordKind::Employee, RecordKind::Contact] {
        let ids: Vec<i64> = view
            .records
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let ids = serde_json::Value::from(ids).to_string();
        for group in groups.values_mut() {
            for id in members.query_map(params![group.id, kind.as_str(), ids], |r| r.get(0))? {
                group.members.insert((kind, id?));
            }
        }
    }
    view.groups = groups.into_values().collect();
    Ok(())
}

/// `directory`'s active linked records: the percent guard's base (SPEC 5.3).
pub(crate) fn active_synced(conn: &Connection, directory: &str) -> Result<usize, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM sync_links l JOIN employees e ON e.id = l.record_id
                 WHERE l.directory = ?1 AND l.record_kind = 'employee' AND COALESCE(e.active, 0) <> 0)
              + (SELECT COUNT(*) FROM sync_links l JOIN contacts c ON c.id = l.record_id
                 WHERE l.directory = ?1 AND l.record_kind = 'contact' AND COALESCE(c.active, 0) <> 0)",
        [directory],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Users of `directory` linked to a record of `view` (who must be planned with the run's
/// users, since the records a run touches are theirs too).
pub fn linked_users(view: &StoreView, directory: &str) -> BTreeSet<ObjectId> {
    view.links
        .iter()
        .filter(|l| l.directory == directory)
        .map(|l| l.object_id)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;

    #[test]
    fn records_holding_a_wanted_name_are_found_by_key_in_any_case_or_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO employees (id, username, email) VALUES
                    (1, 'ada', 'ADA@Contoso.com'),
                    (2, 'bob', ' bob@contoso.com'),
                    (3, 'ÄRNE', 'arne@contoso.com'),
                    (4, 'cy', 'cy@contoso.com'),
                    (5, 'dee', 'dee@contoso.com'),
                    (6, 'Cy_Archived2', 'cy@contoso.com_Archived');
                 INSERT INTO contacts (id, email) VALUES
                    (7, 'Ada@contoso.com'),
                    (8, 'eve@contoso.com');",
            )
            .unwrap();
        let names = Names {
            emails: ["ada@contoso.com".to_string()].into(),
            usernames: ["cy".to_string()].into(),
        };
        let mut view = StoreView::default();
        records_around(&store.conn, "d", &BTreeSet::new(), &names, true, &mut view).unwrap();
        let keys: Vec<(RecordKind, i64)> = view.records.keys().copied().collect();
        // ada by email in either table whatever its case, cy by username and the name cy's
        // record would be archived under if cy changed kind (6); bob (spaces around
        // the email) and ÄRNE (not ASCII) because the NOCASE indexes cannot say; not dee, eve.
        // (The unusual ones are read `INDEXED BY` their partial indexes: had SQLite no use
        // for them, it would have refused the statement.)
        use RecordKind::{Contact, Employee};
        assert_eq!(
            keys,
            vec![
                (Employee, 1),
                (Employee, 2),
                (Employee, 3),
                (Employee, 4),
                (Employee, 6),
                (Contact, 7)
            ]
        );
    }

    #[test]
    fn users_wanting_a_name_no_record_of_theirs_carries_are_found_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO open_reports (tenant, object_id, kind, user, message, since,
                                           wants_email, wants_username) VALUES
                    ('t', '00000000-0000-0000-0000-000000000001', 'duplicate_email', 'u', 'm', 'x',
                     'ada@contoso.com', 'bob'),
                    ('t', '00000000-0000-0000-0000-000000000002', 'no_email', 'u', 'm', 'x', NULL, NULL),
                    ('other', '00000000-0000-0000-0000-000000000003', 'duplicate_email', 'u', 'm', 'x',
                     'ada@contoso.com', NULL);
                 INSERT INTO unheld_names (tenant, object_id, wants_email, wants_username) VALUES
                    ('t', '00000000-0000-0000-0000-000000000004', 'cy@contoso.com', 'ada'),
                    ('t', '00000000-0000-0000-0000-000000000005', 'dee@contoso.com', 'dee'),
                    ('t', '00000000-0000-0000-0000-000000000006', 'x@contoso.com', 'bob_archived2');",
            )
            .unwrap();
        let found = |emails: &[&str], usernames: &[&str]| {
            let names = Names {
                emails: emails.iter().map(|e| e.to_string()).collect(),
                usernames: usernames.iter().map(|u| u.to_string()).collect(),
            };
            let users = users_wanting(&store.conn, "t", &names).unwrap();
            users
                .iter()
                .map(|u| u.to_string()[35..].to_string())
                .collect::<Vec<_>>()
        };
        // The reported user by email, the renamed one by username; not another tenant's.
        assert_eq!(found(&["ada@contoso.com"], &["ada"]), vec!["1", "4"]);
        // bob, and who wants a name bob's employee would be archived under.
        assert_eq!(found(&[], &["bob", "dee"]), vec!["1", "5", "6"]);
        assert!(found(&["eve@contoso.com"], &["eve"]).is_empty());
    }
    #[test]
    fn names_in_play_are_folded_once_and_a_blank_name_is_none() {
        use entra_sync_core::record::EmployeeValues;
        let employee = |username: &str, email: &str| {
            Values::Employee(EmployeeValues {
                username: Some(username.into()),
                email: Some(email.into()),
                ..EmployeeValues::default()
            })
        };
        let mut seen = Names::default();
        let mut first = Names::default();
        first.add_new(&employee("Ada", " ADA@Contoso.com"), &mut seen);
        first.add_new(&employee(" ", ""), &mut seen);
        assert_eq!(first.emails, ["ada@contoso.com".to_string()].into());
        assert_eq!(first.usernames, ["ada".to_string()].into());
        let mut again = Names::default();
        again.add_new(&employee("ada", "ada@contoso.com"), &mut seen);
        assert!(again.emails.is_empty() && again.usernames.is_empty());
    }
}
