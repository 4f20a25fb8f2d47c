//! Reading a tenant's directory [`Snapshot`] through Graph: the rule groups (in `$batch`es),
//! their members page by page with `$select` and `$top=999`, and nested groups reached from
//! them, read once each even when nesting has cycles.
//!
//! Any group that cannot be read fails the whole snapshot: a partial snapshot would look like
//! users leaving and must never reach the planner (SPEC 5.2).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::task::JoinSet;

use entra_sync_core::ObjectId;
use entra_sync_core::directory::{EntraGroup, EntraUser, MemberType, Snapshot};

use super::gate::{Chain, Rank};
use super::wire::{Member, USER_SELECT};
use super::{GraphClient, GraphError};

const GROUP_SELECT: &str = "id,displayName,createdDateTime,securityEnabled";

/// The rule groups' metadata (display name, `createdDateTime`) by id.
pub async fn group_infos(
    client: &GraphClient,
    group_ids: &[ObjectId],
) -> Result<BTreeMap<ObjectId, EntraGroup>, GraphError> {
    let paths: Vec<String> = group_ids
        .iter()
        .map(|id| format!("/groups/{id}?$select={GROUP_SELECT}"))
        .collect();
    let answers = client.batch_get(&paths, "reading the rule groups").await?;
    let mut out = BTreeMap::new();
    for (id, (status, body)) in group_ids.iter().zip(answers) {
        if !(200..=299).contains(&status) {
            return Err(GraphError::from_answer(
                format!("group {id}"),
                status,
                &body,
            ));
        }
        let created = body
            .get("createdDateTime")
            .and_then(Value::as_str)
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&chrono::Utc));
        if body.get("securityEnabled").and_then(Value::as_bool) == Some(false) {
            tracing::warn!(tenant = client.tenant(), group = %id, "group is not a security group; synced anyway");
        }
        out.insert(
            *id,
            EntraGroup {
                display_name: body
                    .get("displayName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                created,
                ..EntraGroup::new(*id)
            },
        );
    }
    Ok(out)
}

/// One group's direct members (member id → type). The user objects among them go into
/// `users`, shared by every group read of a snapshot, so a user in many groups is kept once.
/// `chain` ranks its pages among the read's others, and learns how far it has come.
pub async fn group_members(
    client: &GraphClient,
    group_id: ObjectId,
    users: &Mutex<BTreeMap<ObjectId, EntraUser>>,
    chain: Arc<Chain>,
) -> Result<BTreeMap<ObjectId, MemberType>, GraphError> {
    let url = client.url(&format!(
        "/groups/{group_id}/members?$select={USER_SELECT}&$top=999"
    ));
    let what = format!("members of group {group_id}");
    let mut members = BTreeMap::new();
    // Page by page: a large group's raw JSON is never held all at once.
    let mut next = Some(url);
    let rank = Rank::Members(Arc::clone(&chain));
    // The slot in flight the chain keeps from one page to the next.
    let mut slot = None;
    while let Some(url) = next.take() {
        let page = client
            .get_chained_page::<Member>(&url, &what, &rank, &mut slot)
            .await?;
        next = page.next_link;
        chain.add_read(page.value.len() as u64);
        let mut known = users.lock().unwrap_or_else(PoisonError::into_inner);
        for item in page.value {
            let id = match item.id() {
                Ok(Some(id)) => id,
                Ok(None) => {
                    tracing::warn!(
                        tenant = client.tenant(),
                        group = %group_id,
                        "a member without an id was ignored"
                    );
                    continue;
                }
                Err(e) => return Err(GraphError::not_a_guid(&what, e)),
            };
            let kind = item.kind();
            if kind == MemberType::User
                && !known.contains_key(&id)
                && let Ok(Some(user)) = item.into_user()
            {
                known.insert(id, user);
            }
            members.insert(id, kind);
        }
    }
    Ok(members)
}

/// The read chain of each group a full read knows it will read (the rule groups, and the
/// nested groups the mirror has), by group: how many members each has (once
/// [`count_members`] has asked) and how many were read, which ranks their pages.
pub type Chains = BTreeMap<ObjectId, Arc<Chain>>;

pub fn chains<'a>(groups: impl IntoIterator<Item = &'a ObjectId>) -> Chains {
    groups
        .into_iter()
        .map(|g| (*g, Arc::new(Chain::default())))
        .collect()
}

/// Groups counted at most: the `$batch`es of counts go out at once, ahead of every member
/// page; past this many groups they would cost the read more than the order saves.
const COUNTED_GROUPS: usize = 100;

/// Asks Graph how many members each of `chains`' groups has (`/members/$count`, in `$batch`es
/// of 20 at once), so the read serves the longest chains of pages first. Only when there are
/// more groups than requests in flight (with fewer, every chain always has a slot), and at
/// most `COUNTED_GROUPS`. Nested groups the read finds that the mirror did not have are not
/// counted: they rank first among member pages. A hint: `ConsistencyLevel: eventual` may lag, and an answer
/// that fails or does not parse only leaves the order as it was.
pub async fn count_members(client: &GraphClient, chains: &Chains) {
    if chains.len() <= client.max_concurrency() || chains.len() > COUNTED_GROUPS {
        return;
    }
    let groups: Vec<(&ObjectId, &Arc<Chain>)> = chains.iter().collect();
    let batches = groups.chunks(20).map(|batch| async move {
        let paths: Vec<String> = batch
            .iter()
            .map(|(id, _)| format!("/groups/{id}/members/$count"))
            .collect();
        let answers = client
            .batch_get_with(
                &paths,
                &[("ConsistencyLevel", "eventual")],
                "counting the groups' members",
            )
            .await;
        match answers {
            Ok(answers) => {
                for ((id, chain), (status, body)) in batch.iter().zip(answers) {
                    match (status, count_of(&body)) {
                        (200..=299, Some(count)) => chain.set_total(count),
                        _ => tracing::debug!(
                            tenant = client.tenant(),
                            group = %id,
                            status,
                            "no member count; the group is read in arrival order"
                        ),
                    }
                }
            }
            Err(e) => tracing::debug!(
                tenant = client.tenant(),
                "{e}; the groups are read in arrival order"
            ),
        }
    });
    futures_util::future::join_all(batches).await;
}

/// A `$count` answer inside a `$batch`: plain text, which arrives as a JSON string (as
/// graph-sim sends it), a number, or base64 (as `$batch` carries bodies that are not JSON).
fn count_of(body: &Value) -> Option<u64> {
    use base64::Engine;
    match body {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok().or_else(|| {
            let text = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()?;
            std::str::from_utf8(&text).ok()?.trim().parse().ok()
        }),
        _ => None,
    }
}

/// What a full read's tasks bring back.
enum Read {
    Members(ObjectId, Result<BTreeMap<ObjectId, MemberType>, GraphError>),
    /// Cursors for nested groups the read found, taken before their members are read.
    Cursors(BTreeSet<ObjectId>, Result<Vec<String>, GraphError>),
}

/// The whole snapshot of `rule_groups` and, with `nested` (the groups that have cursors
/// already), the groups inside them; and the delta links of cursors taken for the nested
/// groups found that had none, each before its members were read.
pub async fn full_snapshot(
    client: &Arc<GraphClient>,
    rule_groups: &[ObjectId],
    nested: Option<&BTreeSet<ObjectId>>,
    chains: &Chains,
) -> Result<(Snapshot, Vec<String>), GraphError> {
    let users = Arc::new(Mutex::new(BTreeMap::new()));
    // Every group's pages are read at once (bounded by the client's `max_concurrency`, the
    // longest chains first), and a nested group as soon as it is found, not after the slowest
    // group of its level: the read takes about as long as the longest chain of pages. The
    // groups' metadata (one `$batch`) is read beside them.
    let members = async {
        let mut tasks = JoinSet::new();
        let read_members = |tasks: &mut JoinSet<_>, group: ObjectId| {
            let client = Arc::clone(client);
            let users = Arc::clone(&users);
            let chain = chains.get(&group).cloned().unwrap_or_default();
            tasks.spawn(async move {
                Read::Members(group, group_members(&client, group, &users, chain).await)
            });
        };
        let mut read: BTreeSet<ObjectId> = rule_groups.iter().copied().collect();
        for group in &read {
            read_members(&mut tasks, *group);
        }
        let mut by_group = BTreeMap::new();
        let mut links = Vec::new();
        // Nested groups found that wait for their cursors, and whether a round is out.
        let mut waiting = BTreeSet::new();
        let mut taking = false;
        while let Some(joined) = tasks.join_next().await {
            let joined = joined.map_err(|e| GraphError::BadResponse {
                what: "reading group members".into(),
                reason: format!("a reader task failed: {e}"),
            })?;
            match joined {
                Read::Members(group, result) => {
                    let members = result?;
                    let mut found = BTreeSet::new();
                    for (id, kind) in &members {
                        if let Some(tracked) = nested
                            && *kind == MemberType::Group
                            && read.insert(*id)
                        {
                            if tracked.contains(id) {
                                read_members(&mut tasks, *id);
                            } else {
                                found.insert(*id);
                            }
                        }
                    }
                    waiting.extend(found);
                    by_group.insert(group, members);
                }
                Read::Cursors(found, result) => {
                    links.extend(result?);
                    for group in found {
                        read_members(&mut tasks, group);
                    }
                    taking = false;
                }
            }
            // One round of cursors at a time, for every group found meanwhile (one request
            // per 50): a read that finds many nested groups leaves a few cursors, not one
            // per group, for the next incremental run to fold.
            if !taking && !waiting.is_empty() {
                let found = std::mem::take(&mut waiting);
                let client = Arc::clone(client);
                tasks.spawn(async move {
                    let links = super::delta::latest_group_links(&client, &found).await;
                    Read::Cursors(found, links)
                });
                taking = true;
            }
        }
        Ok::<_, GraphError>((by_group, links))
    };
    let (mut groups, (by_group, links)) =
        futures_util::future::try_join(group_infos(client, rule_groups), members).await?;
    for (group, members) in by_group {
        groups
            .entry(group)
            .or_insert_with(|| EntraGroup::new(group))
            .members = members;
    }
    // Every reader task has been joined: the map is complete.
    let users = std::mem::take(&mut *users.lock().unwrap_or_else(PoisonError::into_inner));
    let snapshot = Snapshot { users, groups };
    check_permissions(&snapshot)?;
    Ok((snapshot, links))
}

/// The groups `user` is a direct member of (`/users/{id}/memberOf`, every page).
pub async fn member_of(
    client: &GraphClient,
    user: ObjectId,
) -> Result<BTreeSet<ObjectId>, GraphError> {
    groups_of(client, user, "memberOf").await
}

/// The groups `user` is in directly or through others (`/users/{id}/transitiveMemberOf`).
pub async fn transitive_member_of(
    client: &GraphClient,
    user: ObjectId,
) -> Result<BTreeSet<ObjectId>, GraphError> {
    groups_of(client, user, "transitiveMemberOf").await
}

async fn groups_of(
    client: &GraphClient,
    user: ObjectId,
    relation: &str,
) -> Result<BTreeSet<ObjectId>, GraphError> {
    let what = format!("groups of user {user}");
    let mut next = Some(client.url(&format!("/users/{user}/{relation}?$select=id&$top=999")));
    let mut groups = BTreeSet::new();
    while let Some(url) = next.take() {
        let page = client.get_page::<Member>(&url, &what).await?;
        next = page.next_link;
        for item in page.value {
            if item.kind() != MemberType::Group {
                continue; // directory roles, administrative units
            }
            match item.id() {
                Ok(Some(id)) => {
                    groups.insert(id);
                }
                Ok(None) => {}
                Err(e) => return Err(GraphError::not_a_guid(&what, e)),
            }
        }
    }
    Ok(groups)
}

/// The users in the tenant's deletedItems (`/directory/deletedItems/microsoft.graph.user`,
/// every page): deleted within the last 30 days, so they may still be restored.
pub async fn deleted_users(client: &GraphClient) -> Result<BTreeSet<ObjectId>, GraphError> {
    let what = "deleted users";
    let mut next =
        Some(client.url("/directory/deletedItems/microsoft.graph.user?$select=id&$top=999"));
    let mut users = BTreeSet::new();
    while let Some(url) = next.take() {
        let page = client.get_page::<Member>(&url, what).await?;
        next = page.next_link;
        for item in page.value {
            match item.id() {
                Ok(Some(id)) => {
                    users.insert(id);
                }
                Ok(None) => {}
                Err(e) => return Err(GraphError::not_a_guid(what, e)),
            }
        }
    }
    Ok(users)
}

/// SPEC 5.6: with too narrow a permission Graph returns every user with null properties.
/// Such a snapshot must fail the run, not look like users losing their email.
pub fn check_permissions(snapshot: &Snapshot) -> Result<(), GraphError> {
    if lacks_user_read_all(snapshot.users.values()) {
        return Err(GraphError::BadResponse {
            what: "reading group members".into(),
            reason: "Graph returned every user without its properties (userPrincipalName, accountEnabled are null): \
                     the app lacks the User.Read.All Application permission; grant it with admin consent"
                .into(),
        });
    }
    Ok(())
}

/// Whether Graph returned `users` (at least one) all without their properties: the sign that
/// the app lacks User.Read.All.
pub fn lacks_user_read_all<'a>(users: impl IntoIterator<Item = &'a EntraUser>) -> bool {
    let mut any = false;
    for user in users {
        if !user.is_limited() {
            return false;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_member_count_is_read_as_text_a_number_or_base64_and_nothing_else() {
        assert_eq!(count_of(&json!("22832")), Some(22_832));
        assert_eq!(count_of(&json!(" 7\n")), Some(7));
        assert_eq!(count_of(&json!(7)), Some(7));
        assert_eq!(count_of(&json!("MjI4MzI=")), Some(22_832));
        for hostile in [
            json!("seven"),
            json!("-1"),
            json!(-1),
            json!(1.5),
            json!("99999999999999999999999"),
            json!(null),
            json!({"value": 7}),
            json!("////"),
        ] {
            assert_eq!(count_of(&hostile), None, "{hostile}");
        }
    }
}
