//! Bringing a tenant's view of Entra up to date: a full read of every tracked group, the delta
//! rounds since the stored cursors applied to the stored mirror (SPEC 5.1), or, for `--user`,
//! the stored mirror with the named people read fresh.
//!
//! Owns the choice between them (no cursors, changed scope, an expired cursor, a new nested
//! group → full) and the new cursors. Talks to Graph through [`crate::graph`]; reads nothing
//! from the store itself and writes nothing — the caller passes the mirror in and commits the
//! result with the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use entra_sync_core::ObjectId;
use entra_sync_core::directory::{EntraUser, MemberType, Snapshot};
use entra_sync_core::rules::Rules;
use entra_sync_core::run::RunMode;

use crate::graph::delta::{self, GroupChanges};
use crate::graph::wire::{USER_SELECT, merge_user, parse_user};
use crate::graph::{GraphClient, GraphError, fetch};
use crate::store::Cursors;

pub struct Refreshed {
    /// [`RunMode::Full`] or [`RunMode::Incremental`].
    pub mode: RunMode,
    /// The tenant's directory now. `None` when an incremental round brought nothing at all:
    /// the stored mirror is still current and need not even be loaded.
    pub snapshot: Option<Snapshot>,
    pub cursors: Cursors,
    /// Users this read learned are deleted but restorable (a full read lists deletedItems; an
    /// incremental one sees them removed in users delta). A restore brings a user back with
    /// their memberships but without a membership change in groups delta, so the store keeps
    /// them to recognise one (`entra_departed`).
    pub deleted: BTreeSet<ObjectId>,
    /// `Some`: the snapshot holds only these users (every one an incremental round touched,
    /// with all their memberships) and the tracked groups, which the round did not change;
    /// the rest of the tenant is as the stored mirror has it.
    pub touched: Option<BTreeSet<ObjectId>>,
}

/// At most this many users touched by one incremental round are read from the mirror on
/// their own; a larger round loads the whole mirror (it costs about as much).
pub const TOUCHED_LIMIT: usize = 5_000;

/// The users (and other members) an incremental round touched, when that is all it changed:
/// no tracked group deleted, or joining or leaving another group (a group's name comes with
/// every change of it: whether it was renamed is known once the mirror's groups are read).
/// `None`: the round changed the groups themselves, or touched more than [`TOUCHED_LIMIT`].
fn touched_only(
    users: &delta::UserChanges,
    groups: &GroupChanges,
    tracked: &BTreeSet<ObjectId>,
) -> Option<BTreeSet<ObjectId>> {
    if !groups.deleted.is_empty() {
        return None;
    }
    let mut touched: BTreeSet<ObjectId> = users.changed.keys().copied().collect();
    touched.extend(users.removed.iter().copied());
    for members in groups.members.values() {
        for (member, change) in members {
            if tracked.contains(member) || *change == Some(MemberType::Group) {
                return None;
            }
            touched.insert(*member);
        }
    }
    (touched.len() <= TOUCHED_LIMIT).then_some(touched)
}

/// What the cursors track: the rule groups, nesting and the user `$select`.
pub fn scope_fingerprint(rules: &Rules) -> String {
    let mut groups: Vec<String> = rules.group_ids().map(|g| g.to_string()).collect();
    groups.sort_unstable();
    format!(
        "v1;nested={};select={USER_SELECT};groups={}",
        rules.nested_groups,
        groups.join(",")
    )
}

/// What [`for_user`] found.
pub enum ForUser {
    /// The mirror with the named people read fresh.
    Read(Refreshed),
    /// Graph knows nobody by that name in this tenant, and neither does the store.
    Nobody,
    /// Only a full read can say (the scope changed, or a membership the mirror cannot place).
    Full,
}

/// What a `--user` run reads: the stored mirror, with the people the query names read fresh —
/// those the mirror or the store know, and whoever Graph knows by that object id, UPN or mail
/// (in the same `$batch`) — their attributes and their direct memberships among the tracked
/// groups: a handful of requests whatever the tenant's size (SPEC 8). The cursors do not
/// move. Whoever holds a name one of them wants (`holders`) is read fresh too, so that a name
/// about to be freed by someone else's pending change is seen as such ("run a full sync",
/// SPEC 1) rather than as taken. With nested groups, a person in a rule group through a group
/// the mirror does not know sends the run to a full read.
pub async fn for_user(
    client: &GraphClient,
    rules: &Rules,
    cursors: &Cursors,
    mut mirror: Snapshot,
    known: BTreeSet<ObjectId>,
    query: &str,
    holders: impl FnOnce(&[&EntraUser]) -> BTreeSet<ObjectId>,
) -> Result<ForUser, GraphError> {
    if cursors.scope != scope_fingerprint(rules) {
        return Ok(ForUser::Full);
    }
    let mut paths: Vec<String> = known.iter().map(|id| user_path(*id)).collect();
    // Graph finds users by id or UPN, and by mail with a filter: all in the same `$batch`.
    let encoded = percent_encoding::utf8_percent_encode(query, PATH_SEGMENT).to_string();
    paths.push(format!("/users/{encoded}?$select={USER_SELECT}"));
    let by_mail = query.contains('@');
    if by_mail {
        let filter = format!("mail eq '{}'", query.replace('\'', "''"));
        let filter = percent_encoding::utf8_percent_encode(&filter, PATH_SEGMENT);
        paths.push(format!("/users?$filter={filter}&$select={USER_SELECT}"));
    }
    let (mut fresh, complete) = read_users(client, &paths, "reading the user").await?;
    let people: BTreeSet<ObjectId> = known.iter().chain(fresh.keys()).copied().collect();
    if people.is_empty() {
        // A lookup Graph could not answer leaves only a full read to say.
        return Ok(if complete {
            ForUser::Nobody
        } else {
            ForUser::Full
        });
    }
    let wanted: Vec<&EntraUser> = fresh.values().collect();
    let others: Vec<ObjectId> = holders(&wanted)
        .into_iter()
        .filter(|h| !people.contains(h))
        .collect();
    if !others.is_empty() {
        let paths: Vec<String> = others.iter().map(|id| user_path(*id)).collect();
        let (holders, _) = read_users(client, &paths, "reading who holds the user's names").await?;
        fresh.extend(holders);
    }
    let everyone: BTreeSet<ObjectId> = people.iter().chain(&others).copied().collect();
    let nested = rules.nested_groups;
    let memberships = futures_util::future::try_join_all(everyone.iter().map(|id| async move {
        let gone = |e: GraphError| match e {
            GraphError::NotFound { .. } => Ok(BTreeSet::new()),
            e => Err(e),
        };
        let direct = fetch::member_of(client, *id).await.or_else(gone)?;
        let all = if nested {
            fetch::transitive_member_of(client, *id)
                .await
                .or_else(gone)?
        } else {
            BTreeSet::new()
        };
        Ok::<_, GraphError>((*id, direct, all))
    }))
    .await?;
    let rule_groups: BTreeSet<ObjectId> = rules.group_ids().collect();
    for (id, groups, all) in memberships {
        // In a rule group through a group the mirror does not know: the mirror cannot place
        // them (a group nested since the last run).
        if nested
            && all
                .iter()
                .filter(|g| rule_groups.contains(*g))
                .any(|g| !reaches(&mirror, *g, &groups))
        {
            return Ok(ForUser::Full);
        }
        let mut member = false;
        for (group_id, group) in mirror.groups.iter_mut() {
            if groups.contains(group_id) {
                group.members.insert(id, MemberType::User);
                member = true;
            } else {
                group.members.remove(&id);
            }
        }
        match fresh.remove(&id) {
            Some(user) if member => {
                mirror.users.insert(id, user);
            }
            _ => {
                mirror.users.remove(&id);
                for group in mirror.groups.values_mut() {
                    group.members.remove(&id);
                }
            }
        }
    }
    fetch::check_permissions(&mirror)?;
    Ok(ForUser::Read(Refreshed {
        mode: RunMode::User,
        snapshot: Some(mirror),
        cursors: cursors.clone(),
        deleted: BTreeSet::new(),
        touched: None,
    }))
}

/// Whether `group`, through the groups nested in it as the mirror knows them, contains one
/// of `direct`.
fn reaches(mirror: &Snapshot, group: ObjectId, direct: &BTreeSet<ObjectId>) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![group];
    while let Some(g) = stack.pop() {
        if direct.contains(&g) {
            return true;
        }
        if !seen.insert(g) {
            continue;
        }
        if let Some(known) = mirror.groups.get(&g) {
            stack.extend(
                known
                    .members
                    .iter()
                    .filter(|(_, k)| **k == MemberType::Group)
                    .map(|(id, _)| *id),
            );
        }
    }
    false
}

fn user_path(id: ObjectId) -> String {
    format!("/users/{id}?$select={USER_SELECT}")
}

/// Users read by `$batch`: single users or a filtered list (`value`). A 404 is someone
/// deleted, or nobody by that name; the flag is false when a lookup got another error (a
/// filter this Graph does not take), so nobody found is not proof of nobody there.
async fn read_users(
    client: &GraphClient,
    paths: &[String],
    what: &str,
) -> Result<(BTreeMap<ObjectId, EntraUser>, bool), GraphError> {
    let mut users = BTreeMap::new();
    let mut complete = true;
    for (status, body) in client.batch_get(paths, what).await? {
        match status {
            200..=299 => {
                let items = match body.get("value").and_then(serde_json::Value::as_array) {
                    Some(list) => list.clone(),
                    None => vec![body],
                };
                for item in items {
                    if let Some(user) =
                        parse_user(&item).map_err(|e| GraphError::not_a_guid(what, e))?
                    {
                        users.insert(user.id, user);
                    }
                }
            }
            404 => {}
            400 => complete = false,
            other => return Err(GraphError::from_answer(what, other, &body)),
        }
    }
    Ok((users, complete))
}

/// What a path segment may not carry unescaped (`#EXT#` in guests' UPNs, `/`, `?`).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@')
    .remove(b'\'');

/// A full read, with cursors taken *before* it so changes made during the read are replayed
/// by the next incremental round rather than lost.
pub async fn full(
    client: &Arc<GraphClient>,
    rules: &Rules,
    mirror_groups: &BTreeSet<ObjectId>,
) -> Result<Refreshed, GraphError> {
    let rule_groups: Vec<ObjectId> = rules.group_ids().collect();
    let mut tracked: BTreeSet<ObjectId> = rule_groups.iter().copied().collect();
    if rules.nested_groups {
        tracked.extend(mirror_groups.iter().copied());
    }
    let chains = fetch::chains(&tracked);
    let reading = async {
        let mut links = BTreeMap::new();
        // The cursors first (both at once), then the read and the deleted users (at once).
        let (users, group_links) = futures_util::future::try_join(
            delta::round(client, &delta::users_latest(client), "users delta"),
            latest_group_links(client, &tracked, 0),
        )
        .await?;
        links.insert("users".to_string(), users.delta_link);
        links.extend(group_links);
        // Nested groups found by this read get cursors of their own, each taken before its
        // members are read; the groups tracked before keep the ones taken before the read, so
        // what changed in either during the read is replayed by the next round. A group no
        // longer nested keeps its cursor until the next full sync: changes to groups missing
        // from the mirror are ignored.
        let first = links.keys().filter(|k| k.starts_with("groups:")).count();
        // Deleted before the users cursor was taken: its rounds will only ever show the restore.
        let ((snapshot, found_links), deleted) = futures_util::future::try_join(
            fetch::full_snapshot(
                client,
                &rule_groups,
                rules.nested_groups.then_some(&tracked),
                &chains,
            ),
            fetch::deleted_users(client),
        )
        .await?;
        links.extend(named_group_links(found_links, first));
        Ok(Refreshed {
            mode: RunMode::Full,
            snapshot: Some(snapshot),
            cursors: Cursors {
                scope: scope_fingerprint(rules),
                rules: rules.fingerprint(),
                links,
            },
            deleted,
            touched: None,
        })
    };
    // The member counts go out beside the cursors; they only order the read, which never
    // waits for them.
    let counting = fetch::count_members(client, &chains);
    let (reading, counting) = (std::pin::pin!(reading), std::pin::pin!(counting));
    match futures_util::future::select(reading, counting).await {
        futures_util::future::Either::Left((read, _)) => read,
        futures_util::future::Either::Right(((), reading)) => reading.await,
    }
}

/// Current cursors for `groups`, one per 50 groups, stored as `groups:{first}`, `groups:{first+1}`….
async fn latest_group_links(
    client: &GraphClient,
    groups: &BTreeSet<ObjectId>,
    first: usize,
) -> Result<BTreeMap<String, String>, GraphError> {
    Ok(named_group_links(
        delta::latest_group_links(client, groups).await?,
        first,
    ))
}

/// Delta links named `groups:{first}`, `groups:{first+1}`… in the stored cursors.
fn named_group_links(links: Vec<String>, first: usize) -> BTreeMap<String, String> {
    links
        .into_iter()
        .enumerate()
        .map(|(i, link)| (format!("groups:{}", first + i), link))
        .collect()
}

/// The delta rounds since `cursors`. `Ok(None)` when only a full read can be trusted (the
/// scope changed, or a nested group appeared); `Err(CursorExpired)` likewise, said by Graph.
/// `mirror` is loaded only when a round brought something: with `touched_only`, and when
/// the round changed no group, only the users it touched (`mirror(Some(users))`, see
/// [`Refreshed::touched`]); else whole (`mirror(None)`).
pub async fn incremental(
    client: &GraphClient,
    rules: &Rules,
    cursors: &Cursors,
    mirror_groups: &BTreeSet<ObjectId>,
    touched_only: bool,
    mirror: impl Fn(Option<&BTreeSet<ObjectId>>) -> Result<Snapshot, String>,
    linked: impl FnOnce(&[ObjectId]) -> Result<BTreeSet<ObjectId>, String>,
) -> Result<Option<Refreshed>, GraphError> {
    if cursors.scope != scope_fingerprint(rules) || !cursors.links.contains_key("users") {
        return Ok(None);
    }
    let mut links = BTreeMap::new();
    let mut items = 0usize;
    let users_link = cursors.links.get("users").cloned().unwrap_or_default();
    let group_cursors: Vec<(&String, &String)> = cursors
        .links
        .iter()
        .filter(|(r, _)| r.starts_with("groups:"))
        .collect();
    // Nested groups a full read found got cursors of their own, taken as it found them: more
    // groups delta rounds than the tracked groups need (one per 50). Fresh cursors for all of
    // them, taken *before* this run's rounds are read, replace those: whatever changed since
    // is then replayed by the next round (delta items are merged by state, so a replay is
    // harmless), and idle rounds cost two requests again (SPEC 8).
    let mut tracked: BTreeSet<ObjectId> = rules.group_ids().collect();
    if rules.nested_groups {
        tracked.extend(mirror_groups.iter().copied());
    }
    let folded = if group_cursors.len() > tracked.len().div_ceil(delta::MAX_FILTER_IDS).max(1) {
        Some(latest_group_links(client, &tracked, 0).await?)
    } else {
        None
    };
    // Every round at once (an idle run is then one Graph round trip, not two or more).
    let (users, group_rounds) = futures_util::future::try_join(
        delta::round(client, &users_link, "users delta"),
        futures_util::future::try_join_all(
            group_cursors
                .iter()
                .map(|(_, link)| delta::round(client, link, "groups delta")),
        ),
    )
    .await?;
    items += users.items.len();
    links.insert("users".to_string(), users.delta_link);
    let mut groups = GroupChanges::default();
    for ((resource, _), round) in group_cursors.into_iter().zip(group_rounds) {
        items += round.items.len();
        let changes = delta::group_changes(&round.items)?;
        for (g, members) in changes.members {
            groups.members.entry(g).or_default().extend(members);
        }
        groups.renamed.extend(changes.renamed);
        groups.deleted.extend(changes.deleted);
        links.insert(resource.clone(), round.delta_link);
    }
    if let Some(folded) = folded {
        links.retain(|resource, _| !resource.starts_with("groups:"));
        links.extend(folded);
    }
    let new_cursors = Cursors {
        scope: cursors.scope.clone(),
        rules: rules.fingerprint(),
        links,
    };
    if items == 0 {
        return Ok(Some(Refreshed {
            mode: RunMode::Incremental,
            snapshot: None,
            cursors: new_cursors,
            deleted: BTreeSet::new(),
            touched: None,
        }));
    }
    let users = delta::user_changes(&users.items)?;
    let mut touched = touched_only
        .then(|| self::touched_only(&users, &groups, mirror_groups))
        .flatten();
    let read = |only: Option<&BTreeSet<ObjectId>>| {
        mirror(only).map_err(|reason| GraphError::BadResponse {
            what: "the stored mirror".into(),
            reason,
        })
    };
    let mut snapshot = read(touched.as_ref())?;
    let renamed = groups.renamed.iter().any(|(g, name)| {
        snapshot
            .groups
            .get(g)
            .is_some_and(|group| group.display_name.as_ref() != Some(name))
    });
    if touched.is_some() && renamed {
        touched = None;
        snapshot = read(None)?;
    }
    let rule_groups: BTreeSet<ObjectId> = rules.group_ids().collect();
    if let Some(deleted) = groups.deleted.iter().find(|g| rule_groups.contains(g)) {
        return Err(GraphError::NotFound {
            what: format!("group {deleted} (deleted in Entra)"),
            code: "Request_ResourceNotFound".into(),
        });
    }
    for g in &groups.deleted {
        snapshot.groups.remove(g);
    }
    for (g, name) in &groups.renamed {
        if let Some(group) = snapshot.groups.get_mut(g) {
            group.display_name = Some(name.clone());
        }
    }
    let mut added_users = BTreeSet::new();
    let known_groups: BTreeSet<ObjectId> = snapshot.groups.keys().copied().collect();
    for (g, members) in &groups.members {
        let Some(group) = snapshot.groups.get_mut(g) else {
            continue;
        };
        for (member, change) in members {
            match change {
                Some(kind) => {
                    group.members.insert(*member, *kind);
                    match kind {
                        MemberType::User => {
                            added_users.insert(*member);
                        }
                        MemberType::Group
                            if rules.nested_groups && !known_groups.contains(member) =>
                        {
                            return Ok(None);
                        }
                        _ => {}
                    }
                }
                None => {
                    group.members.remove(member);
                }
            }
        }
    }
    let mut members: BTreeSet<ObjectId> = snapshot
        .groups
        .values()
        .flat_map(|g| g.members.iter())
        .filter(|(_, k)| **k == MemberType::User)
        .map(|(id, _)| *id)
        .collect();
    // A user restored after a full read missed them (listings hide soft-deleted users, and
    // groups delta never said they left) comes back without a membership change: read the
    // groups of changed users the mirror has no membership for but the store has a record of.
    let strangers: Vec<ObjectId> = users
        .changed
        .keys()
        .filter(|id| !members.contains(*id))
        .copied()
        .collect();
    if !strangers.is_empty() {
        let returning = linked(&strangers).map_err(|reason| GraphError::BadResponse {
            what: "the store's links".into(),
            reason,
        })?;
        for user in returning {
            for group in fetch::member_of(client, user).await? {
                if let Some(g) = snapshot.groups.get_mut(&group) {
                    g.members.insert(user, MemberType::User);
                    members.insert(user);
                }
            }
        }
    }
    for (id, props) in &users.changed {
        if members.contains(id) {
            let user = merge_user(*id, snapshot.users.get(id), props);
            snapshot.users.insert(*id, user);
        }
    }
    for id in &users.removed {
        snapshot.users.remove(id);
    }
    // Members added this round that Graph did not describe in users delta: read them.
    let missing: Vec<ObjectId> = added_users
        .into_iter()
        .filter(|id| !snapshot.users.contains_key(id) && !users.removed.contains(id))
        .collect();
    if !missing.is_empty() {
        let paths: Vec<String> = missing
            .iter()
            .map(|id| format!("/users/{id}?$select={USER_SELECT}"))
            .collect();
        for (status, body) in client.batch_get(&paths, "reading added members").await? {
            match status {
                200..=299 => {
                    let user = parse_user(&body)
                        .map_err(|e| GraphError::not_a_guid("reading added members", e))?;
                    if let Some(user) = user {
                        snapshot.users.insert(user.id, user);
                    }
                }
                404 => {} // deleted since: out of scope
                other => {
                    return Err(GraphError::from_answer(
                        "reading added members",
                        other,
                        &body,
                    ));
                }
            }
        }
    }
    snapshot.users.retain(|id, _| members.contains(id));
    if touched.is_none() {
        // (Of a few users, all of them can lack their properties without the app lacking
        // the permission: they are reported instead, as the whole tenant would report them.)
        fetch::check_permissions(&snapshot)?;
    }
    Ok(Some(Refreshed {
        mode: RunMode::Incremental,
        snapshot: Some(snapshot),
        cursors: new_cursors,
        deleted: users.removed,
        touched,
    }))
}
