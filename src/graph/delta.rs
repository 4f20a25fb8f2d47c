//! Delta queries: `/users/delta` (attribute changes, soft/hard deletes) and `/groups/delta`
//! filtered to the tracked groups (direct membership changes), rounds followed to their
//! `@odata.deltaLink`, and the cursors that let the next round start where this one ended.
//!
//! A round's new cursor is only returned once every page of it was read; the caller stores it
//! in the same transaction as the changes it produced (SPEC 5.1, 5.4).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use entra_sync_core::ObjectId;
use entra_sync_core::directory::MemberType;

use super::wire::{USER_SELECT, member_type, object_id};
use super::{GraphClient, GraphError};

/// Graph accepts at most 50 ids in a delta `$filter`.
pub const MAX_FILTER_IDS: usize = 50;

/// Start of a users round at "now": no data, only a cursor.
pub fn users_latest(client: &GraphClient) -> String {
    client.url(&format!(
        "/users/delta?$select={USER_SELECT}&$deltatoken=latest"
    ))
}

/// Cursors at "now" for `groups` (one round per 50 ids): their delta links, in order.
pub async fn latest_group_links(
    client: &GraphClient,
    groups: &BTreeSet<ObjectId>,
) -> Result<Vec<String>, GraphError> {
    let mut links = Vec::new();
    for url in groups_latest(client, groups) {
        links.push(round(client, &url, "groups delta").await?.delta_link);
    }
    Ok(links)
}

/// Starts of groups rounds at "now" for `groups`, one per 50 ids.
pub fn groups_latest(client: &GraphClient, groups: &BTreeSet<ObjectId>) -> Vec<String> {
    let ids: Vec<&ObjectId> = groups.iter().collect();
    ids.chunks(MAX_FILTER_IDS)
        .map(|chunk| {
            let filter: Vec<String> = chunk.iter().map(|id| format!("id eq '{id}'")).collect();
            let filter = filter.join(" or ");
            let filter = percent_encoding::utf8_percent_encode(&filter, QUERY).to_string();
            client.url(&format!(
                "/groups/delta?$select=id,displayName,members&$filter={filter}&$deltatoken=latest"
            ))
        })
        .collect()
}

const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'\'');

/// Every item of one round and the cursor for the next.
pub struct Round {
    pub items: Vec<Value>,
    pub delta_link: String,
}

/// Follows `@odata.nextLink`s from `url` until the page with `@odata.deltaLink`.
pub async fn round(client: &GraphClient, url: &str, what: &str) -> Result<Round, GraphError> {
    let mut items = Vec::new();
    let mut next = url.to_string();
    loop {
        let page = client.get_page::<Value>(&next, what).await?;
        items.extend(page.value);
        match (page.next_link, page.delta_link) {
            (Some(n), _) => next = n,
            (None, Some(d)) => {
                return Ok(Round {
                    items,
                    delta_link: d,
                });
            }
            (None, None) => {
                return Err(GraphError::BadResponse {
                    what: what.to_string(),
                    reason: "a delta page has neither @odata.nextLink nor @odata.deltaLink".into(),
                });
            }
        }
    }
}

/// What a users round says, merged in order (an entity can appear several times).
#[derive(Debug, Default)]
pub struct UserChanges {
    /// Latest properties seen per user (only the keys Graph sent).
    pub changed: BTreeMap<ObjectId, serde_json::Map<String, Value>>,
    /// Users deleted (soft: restorable, or hard) and not restored later in the round.
    pub removed: BTreeSet<ObjectId>,
}

/// The users round's items merged; an item whose id is not a GUID fails the round.
pub fn user_changes(items: &[Value]) -> Result<UserChanges, GraphError> {
    let mut out = UserChanges::default();
    for item in items {
        let id = match object_id(item) {
            Ok(Some(id)) => id,
            Ok(None) => continue,
            Err(e) => return Err(GraphError::not_a_guid("users delta", e)),
        };
        if item.get("@removed").is_some() {
            out.changed.remove(&id);
            out.removed.insert(id);
            continue;
        }
        out.removed.remove(&id);
        let entry = out.changed.entry(id).or_default();
        if let Some(obj) = item.as_object() {
            for (k, v) in obj {
                if !k.starts_with('@') {
                    entry.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Ok(out)
}

/// What a groups round says about the tracked groups' direct members.
#[derive(Debug, Default)]
pub struct GroupChanges {
    /// group → member → `Some(type)` added, `None` removed (last word wins).
    pub members: BTreeMap<ObjectId, BTreeMap<ObjectId, Option<MemberType>>>,
    pub renamed: BTreeMap<ObjectId, String>,
    pub deleted: BTreeSet<ObjectId>,
}

/// The groups round's items merged. An id that is not a GUID fails the round, except on a
/// member's removal: nothing stored can have such an id, so there is nothing to remove (one of
/// Microsoft's own documented examples has such a typo).
pub fn group_changes(items: &[Value]) -> Result<GroupChanges, GraphError> {
    let refuse = |e| GraphError::not_a_guid("groups delta", e);
    let mut out = GroupChanges::default();
    for item in items {
        let Some(id) = object_id(item).map_err(refuse)? else {
            continue;
        };
        if item.get("@removed").is_some() {
            out.deleted.insert(id);
            continue;
        }
        if let Some(name) = item.get("displayName").and_then(Value::as_str) {
            out.renamed.insert(id, name.to_string());
        }
        // One group's members@delta can be split across pages: merge by group id.
        if let Some(members) = item.get("members@delta").and_then(Value::as_array) {
            let entry = out.members.entry(id).or_default();
            for m in members {
                let removed = m.get("@removed").is_some();
                let mid = match object_id(m) {
                    Ok(Some(mid)) => mid,
                    Ok(None) => continue,
                    Err(_) if removed => continue,
                    Err(e) => return Err(refuse(e)),
                };
                entry.insert(mid, (!removed).then(|| member_type(m)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::wire::parse_page;

    fn fixture(name: &str) -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/graph-sim/fixtures/");
        let bytes = std::fs::read(format!("{path}{name}")).unwrap();
        parse_page(&bytes).unwrap().value
    }

    #[test]
    fn a_large_groups_members_split_over_pages_are_merged() {
        let mut items = fixture("groups-delta-large-group-page1.json");
        items.extend(fixture("groups-delta-large-group-page2.json"));
        let changes = group_changes(&items).unwrap();
        assert_eq!(changes.members.len(), 1, "one group, seen on two pages");
        let members = changes.members.values().next().unwrap();
        assert!(members.len() >= 2);
    }

    fn id(text: &str) -> ObjectId {
        ObjectId::parse(text).unwrap()
    }

    #[test]
    fn member_removals_and_additions_are_told_apart() {
        let changes = group_changes(&fixture("groups-delta-members-changes.json")).unwrap();
        let members = &changes.members[&id("2e5807ce-58f3-4a94-9b37-ffff2e085957")];
        assert_eq!(
            members[&id("37de1ae3-408f-4702-8636-20824abda004")],
            Some(MemberType::User)
        );
        // The example's removed member has an 11-digit last block: no GUID, nothing to remove.
        assert_eq!(members.len(), 1);
    }

    #[test]
    fn an_added_member_or_user_whose_id_is_not_a_guid_fails_the_round() {
        let hostile = "x/../../../users/someone?$select=signInActivity#";
        let group = serde_json::json!({
            "id": "2e5807ce-58f3-4a94-9b37-ffff2e085957",
            "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": hostile}]
        });
        let e = group_changes(&[group]).unwrap_err().to_string();
        assert!(
            e.contains("groups delta") && e.contains("is not a GUID"),
            "{e}"
        );
        let user = serde_json::json!({"id": hostile, "mail": "a@b.c"});
        let e = user_changes(&[user]).unwrap_err().to_string();
        assert!(
            e.contains("users delta") && e.contains("is not a GUID"),
            "{e}"
        );
    }

    #[test]
    fn soft_deleted_users_are_removed_and_changed_users_keep_only_sent_keys() {
        let changes = user_changes(&fixture("users-delta-changes.json")).unwrap();
        assert!(
            changes
                .removed
                .contains(&id("8ffff70c-1c63-4860-b963-e34ec660931d"))
        );
        let changed = &changes.changed[&id("25dcffff-959e-4ece-9973-e5d9b800e8cc")];
        assert_eq!(changed["surname"], "Administrator");
        assert!(!changed.contains_key("mail"));
    }

    #[test]
    fn a_user_deleted_then_restored_in_one_round_is_present() {
        let a = "0000000a-0000-0000-0000-000000000000";
        let items = vec![
            serde_json::json!({"id": a, "@removed": {"reason": "changed"}}),
            serde_json::json!({"id": a, "mail": "a@b.c"}),
        ];
        let c = user_changes(&items).unwrap();
        assert!(c.removed.is_empty());
        assert_eq!(c.changed[&id(a)]["mail"], "a@b.c");
    }
}
