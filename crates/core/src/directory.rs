//! What entra-sync knows of one tenant's Entra directory at one moment: the users and the
//! direct memberships of the groups it tracks.
//!
//! Plain data, built by the Graph client (full listing or delta rounds) and read by
//! [`crate::resolve`]. It must not do I/O or decide anything about records.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::ObjectId;

/// The Entra attributes of a user that the sync reads (`$select`). `None` = null or absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntraUser {
    pub id: ObjectId,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub business_phone: Option<String>,
    pub account_enabled: Option<bool>,
    pub user_type: Option<String>,
}

impl EntraUser {
    /// A user with only an id: every property null.
    pub fn new(id: ObjectId) -> EntraUser {
        EntraUser {
            id,
            user_principal_name: None,
            mail: None,
            given_name: None,
            surname: None,
            job_title: None,
            department: None,
            business_phone: None,
            account_enabled: None,
            user_type: None,
        }
    }

    /// Graph returns users with every property null when the app lacks User.Read.All.
    pub fn is_limited(&self) -> bool {
        self.user_principal_name.is_none() || self.account_enabled.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberType {
    User,
    Group,
    /// Devices, service principals, org contacts: not synced.
    Other,
}

impl MemberType {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberType::User => "user",
            MemberType::Group => "group",
            MemberType::Other => "other",
        }
    }

    /// The stored form back; anything unknown is `Other`.
    pub fn parse(s: &str) -> MemberType {
        match s {
            "user" => MemberType::User,
            "group" => MemberType::Group,
            _ => MemberType::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntraGroup {
    pub id: ObjectId,
    pub display_name: Option<String>,
    pub created: Option<DateTime<Utc>>,
    /// Direct members by object id.
    pub members: BTreeMap<ObjectId, MemberType>,
}

impl EntraGroup {
    /// A group known only by its id (no name, no creation date, no members yet).
    pub fn new(id: ObjectId) -> EntraGroup {
        EntraGroup {
            id,
            display_name: None,
            created: None,
            members: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Users that are direct members of a tracked group, by object id.
    pub users: BTreeMap<ObjectId, EntraUser>,
    /// The rule groups and the nested groups reached from them, by object id.
    pub groups: BTreeMap<ObjectId, EntraGroup>,
}

impl Snapshot {
    /// Users that are members of `group` (directly, or through nested groups when `nested`).
    /// Cycles in nesting are followed once.
    pub fn members_of(&self, group: ObjectId, nested: bool) -> BTreeSet<ObjectId> {
        let mut users = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![group];
        while let Some(g) = stack.pop() {
            if !seen.insert(g) {
                continue;
            }
            let Some(group) = self.groups.get(&g) else {
                continue;
            };
            for (id, kind) in &group.members {
                match kind {
                    MemberType::User => {
                        users.insert(*id);
                    }
                    MemberType::Group if nested => stack.push(*id),
                    _ => {}
                }
            }
        }
        users
    }

    /// Replaces what `self` says of `users` (their attributes, and their membership in each of
    /// `self`'s groups) with what `other` says: `other` holds those users as they are now.
    pub fn replace_users(&mut self, other: &Snapshot, users: &BTreeSet<ObjectId>) {
        for id in users {
            match other.users.get(id) {
                Some(user) => {
                    self.users.insert(*id, user.clone());
                }
                None => {
                    self.users.remove(id);
                }
            }
            for (group_id, group) in &mut self.groups {
                match other.groups.get(group_id).and_then(|g| g.members.get(id)) {
                    Some(kind) => {
                        group.members.insert(*id, *kind);
                    }
                    None => {
                        group.members.remove(id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u128, members: &[(u128, MemberType)]) -> EntraGroup {
        EntraGroup {
            members: members
                .iter()
                .map(|(m, k)| (ObjectId::from_u128(*m), *k))
                .collect(),
            ..EntraGroup::new(ObjectId::from_u128(id))
        }
    }

    #[test]
    fn nested_membership_follows_cycles_once() {
        let (a, b, u1, u2) = (0xa, 0xb, 1, 2);
        let mut s = Snapshot::default();
        for g in [
            group(a, &[(u1, MemberType::User), (b, MemberType::Group)]),
            group(b, &[(u2, MemberType::User), (a, MemberType::Group)]),
        ] {
            s.groups.insert(g.id, g);
        }
        let id = ObjectId::from_u128;
        let all: Vec<_> = s.members_of(id(a), true).into_iter().collect();
        assert_eq!(all, vec![id(u1), id(u2)]);
        let direct: Vec<_> = s.members_of(id(a), false).into_iter().collect();
        assert_eq!(direct, vec![id(u1)]);
    }

    #[test]
    fn replacing_users_takes_their_attributes_and_memberships_and_leaves_the_rest() {
        let id = ObjectId::from_u128;
        let user = |n: u128, title: &str| EntraUser {
            job_title: Some(title.into()),
            ..EntraUser::new(id(n))
        };
        let mut whole = Snapshot::default();
        for g in [
            group(0xa, &[(1, MemberType::User), (2, MemberType::User)]),
            group(0xb, &[(2, MemberType::User), (3, MemberType::User)]),
        ] {
            whole.groups.insert(g.id, g);
        }
        for u in [user(1, "old"), user(2, "old"), user(3, "old")] {
            whole.users.insert(u.id, u);
        }
        // Now: 1 left every group (and the mirror), 2 moved from a to b only and was
        // retitled, 4 joined a; 3 was not touched (the partial snapshot does not know them).
        let mut part = Snapshot::default();
        for g in [
            group(0xa, &[(4, MemberType::User)]),
            group(0xb, &[(2, MemberType::User)]),
        ] {
            part.groups.insert(g.id, g);
        }
        for u in [user(2, "new"), user(4, "new")] {
            part.users.insert(u.id, u);
        }
        whole.replace_users(&part, &[1, 2, 4].into_iter().map(id).collect());
        let members =
            |g: u128| -> Vec<ObjectId> { whole.groups[&id(g)].members.keys().copied().collect() };
        assert_eq!(members(0xa), vec![id(4)]);
        assert_eq!(members(0xb), vec![id(2), id(3)]);
        let titles: Vec<(ObjectId, Option<&str>)> = whole
            .users
            .values()
            .map(|u| (u.id, u.job_title.as_deref()))
            .collect();
        assert_eq!(
            titles,
            vec![
                (id(2), Some("new")),
                (id(3), Some("old")),
                (id(4), Some("new"))
            ]
        );
    }
}
