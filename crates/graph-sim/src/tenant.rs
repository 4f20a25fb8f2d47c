//! The simulated directory: users, groups, devices, contacts and the append-only change log.
//!
//! Owns every mutation (so each one is logged for delta queries exactly once, and only when
//! something really changed) and the membership queries (direct, transitive, reverse).
//! Knows nothing about HTTP, tokens or JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::generate::{runtime_epoch, runtime_id};
use super::model::{GroupPatch, NewUser, ObjectKind, SimError, SimGroup, SimUser, UserPatch};
use super::render::{ALL_BITS, group_bit, user_bit};

#[derive(Debug, Clone)]
pub(crate) struct GroupRec {
    pub id: Uuid,
    pub display_name: String,
    pub description: Option<String>,
    pub created: DateTime<Utc>,
    pub security_enabled: bool,
    pub mail_enabled: bool,
    pub mail: Option<String>,
    pub mail_nickname: String,
    pub group_types: Vec<String>,
    pub visibility: Option<String>,
    pub deleted: Option<DateTime<Utc>>,
    /// Direct members, ordered by id (the order listings and skip tokens follow).
    pub members: BTreeMap<Uuid, ObjectKind>,
}

impl GroupRec {
    pub(crate) fn security(id: Uuid, display_name: String, created: DateTime<Utc>) -> Self {
        let nick: String = display_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        GroupRec {
            id,
            display_name,
            description: None,
            created,
            security_enabled: true,
            mail_enabled: false,
            mail: None,
            mail_nickname: if nick.is_empty() {
                "group".to_owned()
            } else {
                nick
            },
            group_types: Vec::new(),
            visibility: None,
            deleted: None,
            members: BTreeMap::new(),
        }
    }

    pub(crate) fn unified(
        id: Uuid,
        display_name: String,
        mail_domain: &str,
        created: DateTime<Utc>,
    ) -> Self {
        let nick: String = display_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        GroupRec {
            mail: Some(format!("{nick}@{mail_domain}")),
            mail_enabled: true,
            security_enabled: false,
            group_types: vec!["Unified".to_owned()],
            visibility: Some("Public".to_owned()),
            mail_nickname: nick,
            ..GroupRec::security(id, display_name, created)
        }
    }

    /// A stable SID-looking string derived from the object id, as Entra derives it.
    pub(crate) fn security_identifier(&self) -> String {
        let b = self.id.as_bytes();
        let part = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        format!("S-1-12-1-{}-{}-{}-{}", part(0), part(4), part(8), part(12))
    }

    pub(crate) fn view(&self) -> SimGroup {
        SimGroup {
            id: self.id.to_string(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            created_date_time: self.created,
            security_enabled: self.security_enabled,
            mail_enabled: self.mail_enabled,
            mail: self.mail.clone(),
            mail_nickname: self.mail_nickname.clone(),
            group_types: self.group_types.clone(),
            visibility: self.visibility.clone(),
            deleted_date_time: self.deleted,
            members: self.members.keys().map(Uuid::to_string).collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub id: Uuid,
    pub device_id: Uuid,
    pub display_name: String,
    pub operating_system: String,
    pub operating_system_version: String,
    pub account_enabled: bool,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub id: Uuid,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub company_name: Option<String>,
    pub job_title: Option<String>,
}

/// One entry of the change log. Position `i` in the log has sequence number `i + 1`;
/// a delta cursor `s` has seen the entries `[0, s)`.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Created, restored or updated; `props` are the change bits (see `render::user_bit`).
    User {
        id: Uuid,
        props: u64,
    },
    /// Soft-deleted (`hard == false`, restorable) or permanently deleted.
    UserRemoved {
        id: Uuid,
    },
    Group {
        id: Uuid,
        props: u64,
    },
    GroupRemoved {
        id: Uuid,
    },
    Member {
        group: Uuid,
        member: Uuid,
        kind: ObjectKind,
        added: bool,
    },
}

/// Users by id: hashed for the lookups member listings make (one per member), with an ordered
/// key set for listings and delta rounds that walk users in id order.
#[derive(Debug, Default)]
pub(crate) struct UserTable {
    map: HashMap<Uuid, Box<SimUser>>,
    order: BTreeSet<Uuid>,
}

impl UserTable {
    pub(crate) fn get(&self, id: &Uuid) -> Option<&SimUser> {
        self.map.get(id).map(|u| &**u)
    }

    pub(crate) fn get_mut(&mut self, id: &Uuid) -> Option<&mut SimUser> {
        self.map.get_mut(id).map(|u| &mut **u)
    }

    pub(crate) fn insert(&mut self, id: Uuid, user: SimUser) {
        self.order.insert(id);
        self.map.insert(id, Box::new(user));
    }

    pub(crate) fn remove(&mut self, id: &Uuid) -> Option<SimUser> {
        self.order.remove(id);
        self.map.remove(id).map(|u| *u)
    }

    /// Users in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &SimUser> + '_ {
        self.order.iter().filter_map(|id| self.get(id))
    }

    /// Users in id order within `range`.
    pub(crate) fn range(
        &self,
        range: (Bound<Uuid>, Bound<Uuid>),
    ) -> impl Iterator<Item = (&Uuid, &SimUser)> + '_ {
        self.order
            .range(range)
            .filter_map(|id| self.get(id).map(|u| (id, u)))
    }
}

/// Which status an expired delta token answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeltaExpiry {
    /// Tokens minted before this epoch are expired.
    pub epoch: u64,
    pub status: u16,
}

#[derive(Debug, Default)]
pub(crate) struct Directory {
    /// Live and soft-deleted users (soft-deleted ones have `deleted_date_time`).
    pub users: UserTable,
    /// Live groups, plus soft-deleted Microsoft 365 groups (`deleted` set).
    pub groups: BTreeMap<Uuid, GroupRec>,
    pub devices: BTreeMap<Uuid, Device>,
    pub contacts: BTreeMap<Uuid, Contact>,
    pub log: Vec<Change>,
    /// Bumped on every membership change; keys the transitive-membership cache.
    pub membership_version: u64,
    pub rng_state: u64,
    pub expiry: Option<DeltaExpiry>,
}

pub(crate) fn parse_id(id: &str) -> Result<Uuid, SimError> {
    let malformed = || SimError::MalformedId { id: id.to_owned() };
    if id.len() != 36 {
        return Err(malformed());
    }
    Uuid::parse_str(id).map_err(|_| malformed())
}

impl Directory {
    pub(crate) fn seq(&self) -> u64 {
        self.log.len() as u64
    }

    /// Deterministic "now" for runtime mutations: the runtime epoch plus one minute per change.
    pub(crate) fn clock(&self) -> DateTime<Utc> {
        runtime_epoch() + Duration::minutes(self.log.len() as i64)
    }

    pub(crate) fn kind_of(&self, id: &Uuid) -> Option<ObjectKind> {
        if self
            .users
            .get(id)
            .is_some_and(|u| u.deleted_date_time.is_none())
        {
            Some(ObjectKind::User)
        } else if self.groups.get(id).is_some_and(|g| g.deleted.is_none()) {
            Some(ObjectKind::Group)
        } else if self.devices.contains_key(id) {
            Some(ObjectKind::Device)
        } else if self.contacts.contains_key(id) {
            Some(ObjectKind::OrgContact)
        } else {
            None
        }
    }

    pub(crate) fn live_user(&self, id: &Uuid) -> Option<&SimUser> {
        self.users.get(id).filter(|u| u.deleted_date_time.is_none())
    }

    pub(crate) fn live_group(&self, id: &Uuid) -> Option<&GroupRec> {
        self.groups.get(id).filter(|g| g.deleted.is_none())
    }

    /// Is this member visible in member listings? (Soft-deleted users are not.)
    pub(crate) fn member_visible(&self, id: &Uuid, kind: ObjectKind) -> bool {
        match kind {
            ObjectKind::User => self.live_user(id).is_some(),
            ObjectKind::Group => self.live_group(id).is_some(),
            ObjectKind::Device => self.devices.contains_key(id),
            ObjectKind::OrgContact => self.contacts.contains_key(id),
        }
    }

    /// A live user by object id or (case-insensitive) user principal name.
    pub(crate) fn find_user(&self, key: &str) -> Option<&SimUser> {
        if key.len() == 36
            && let Ok(id) = Uuid::parse_str(key)
        {
            return self.live_user(&id);
        }
        self.users.values().find(|u| {
            u.deleted_date_time.is_none() && u.user_principal_name.eq_ignore_ascii_case(key)
        })
    }

    /// Every member reached through nested groups, deduplicated, ordered by id, without the
    /// group itself (cycles are cut).
    pub(crate) fn transitive_members(&self, group: &Uuid) -> Vec<(Uuid, ObjectKind)> {
        let mut seen: BTreeMap<Uuid, ObjectKind> = BTreeMap::new();
        let mut visited: HashSet<Uuid> = HashSet::new();
        let mut stack = vec![*group];
        visited.insert(*group);
        while let Some(g) = stack.pop() {
            let Some(rec) = self.live_group(&g) else {
                continue;
            };
            for (id, kind) in &rec.members {
                if *id == *group {
                    continue;
                }
                seen.insert(*id, *kind);
                if *kind == ObjectKind::Group && visited.insert(*id) {
                    stack.push(*id);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Groups that have `member` as a direct member.
    pub(crate) fn member_of(&self, member: &Uuid) -> Vec<Uuid> {
        self.groups
            .values()
            .filter(|g| g.deleted.is_none() && g.members.contains_key(member))
            .map(|g| g.id)
            .collect()
    }

    /// The groups `member` is in directly or through nested groups, each once (sorted).
    pub(crate) fn transitive_member_of(&self, member: &Uuid) -> Vec<Uuid> {
        let mut seen = std::collections::BTreeSet::new();
        let mut queue = self.member_of(member);
        while let Some(group) = queue.pop() {
            if seen.insert(group) {
                queue.extend(self.member_of(&group));
            }
        }
        seen.into_iter().collect()
    }

    // --- mutations -------------------------------------------------------------------------

    pub(crate) fn add_user(&mut self, new: NewUser) -> SimUser {
        let id = runtime_id(&mut self.rng_state);
        let local = new
            .user_principal_name
            .split('@')
            .next()
            .unwrap_or_default()
            .replace('.', "");
        let user = SimUser {
            id: id.to_string(),
            user_principal_name: new.user_principal_name,
            mail: new.mail,
            given_name: new.given_name,
            surname: new.surname,
            display_name: Some(new.display_name),
            job_title: new.job_title,
            department: new.department,
            business_phones: new.business_phones,
            mobile_phone: new.mobile_phone,
            office_location: new.office_location,
            preferred_language: None,
            city: new.city,
            country: new.country,
            company_name: new.company_name,
            employee_id: new.employee_id,
            usage_location: None,
            account_enabled: new.account_enabled,
            creation_type: (new.user_type == "Guest").then(|| "Invitation".to_owned()),
            external_user_state: (new.user_type == "Guest").then(|| "Accepted".to_owned()),
            user_type: new.user_type,
            created_date_time: new.created_date_time.unwrap_or_else(|| self.clock()),
            other_mails: new.other_mails,
            mail_nickname: local,
            deleted_date_time: None,
        };
        self.users.insert(id, user.clone());
        self.log.push(Change::User {
            id,
            props: ALL_BITS,
        });
        user
    }

    pub(crate) fn update_user(&mut self, id: &str, patch: UserPatch) -> Result<SimUser, SimError> {
        let uid = parse_id(id)?;
        let not_found = || SimError::NotFound { id: id.to_owned() };
        let user = self
            .users
            .get_mut(&uid)
            .filter(|u| u.deleted_date_time.is_none())
            .ok_or_else(not_found)?;
        let mut bits = 0u64;
        fn set<T: PartialEq>(field: &mut T, new: Option<T>, bits: &mut u64, name: &str) {
            if let Some(v) = new
                && *field != v
            {
                *field = v;
                *bits |= user_bit(name);
            }
        }
        let mail_before = user.mail.clone();
        set(
            &mut user.user_principal_name,
            patch.user_principal_name,
            &mut bits,
            "userPrincipalName",
        );
        set(&mut user.mail, patch.mail, &mut bits, "mail");
        set(
            &mut user.given_name,
            patch.given_name,
            &mut bits,
            "givenName",
        );
        set(&mut user.surname, patch.surname, &mut bits, "surname");
        set(
            &mut user.display_name,
            patch.display_name,
            &mut bits,
            "displayName",
        );
        set(&mut user.job_title, patch.job_title, &mut bits, "jobTitle");
        set(
            &mut user.department,
            patch.department,
            &mut bits,
            "department",
        );
        set(
            &mut user.business_phones,
            patch.business_phones,
            &mut bits,
            "businessPhones",
        );
        set(
            &mut user.mobile_phone,
            patch.mobile_phone,
            &mut bits,
            "mobilePhone",
        );
        set(
            &mut user.office_location,
            patch.office_location,
            &mut bits,
            "officeLocation",
        );
        set(
            &mut user.preferred_language,
            patch.preferred_language,
            &mut bits,
            "preferredLanguage",
        );
        set(&mut user.city, patch.city, &mut bits, "city");
        set(&mut user.country, patch.country, &mut bits, "country");
        set(
            &mut user.company_name,
            patch.company_name,
            &mut bits,
            "companyName",
        );
        set(
            &mut user.employee_id,
            patch.employee_id,
            &mut bits,
            "employeeId",
        );
        set(
            &mut user.account_enabled,
            patch.account_enabled,
            &mut bits,
            "accountEnabled",
        );
        set(&mut user.user_type, patch.user_type, &mut bits, "userType");
        set(
            &mut user.other_mails,
            patch.other_mails,
            &mut bits,
            "otherMails",
        );
        if user.mail != mail_before {
            // Graph: "Changes to this property will also update the user's proxyAddresses".
            bits |= user_bit("proxyAddresses");
        }
        let view = user.clone();
        if bits != 0 {
            self.log.push(Change::User {
                id: uid,
                props: bits,
            });
        }
        Ok(view)
    }

    pub(crate) fn delete_user(&mut self, id: &str) -> Result<(), SimError> {
        let uid = parse_id(id)?;
        let now = self.clock();
        let user = self
            .users
            .get_mut(&uid)
            .filter(|u| u.deleted_date_time.is_none())
            .ok_or_else(|| SimError::NotFound { id: id.to_owned() })?;
        // Soft delete: memberships stay (Graph restores them), listings hide the user.
        user.deleted_date_time = Some(now);
        self.log.push(Change::UserRemoved { id: uid });
        self.membership_version += 1;
        Ok(())
    }

    pub(crate) fn hard_delete_user(&mut self, id: &str) -> Result<(), SimError> {
        let uid = parse_id(id)?;
        if self.users.remove(&uid).is_none() {
            return Err(SimError::NotFound { id: id.to_owned() });
        }
        self.drop_memberships(uid, ObjectKind::User);
        self.log.push(Change::UserRemoved { id: uid });
        Ok(())
    }

    pub(crate) fn restore_user(&mut self, id: &str) -> Result<SimUser, SimError> {
        let uid = parse_id(id)?;
        let user = self
            .users
            .get_mut(&uid)
            .filter(|u| u.deleted_date_time.is_some())
            .ok_or_else(|| SimError::NotFound { id: id.to_owned() })?;
        user.deleted_date_time = None;
        let view = user.clone();
        self.log.push(Change::User {
            id: uid,
            props: ALL_BITS,
        });
        self.membership_version += 1;
        Ok(view)
    }

    fn drop_memberships(&mut self, member: Uuid, kind: ObjectKind) {
        let mut removed = Vec::new();
        for g in self.groups.values_mut() {
            if g.members.remove(&member).is_some() {
                removed.push(g.id);
            }
        }
        for group in removed {
            self.log.push(Change::Member {
                group,
                member,
                kind,
                added: false,
            });
        }
        self.membership_version += 1;
    }

    pub(crate) fn create_group(&mut self, display_name: &str, created: DateTime<Utc>) -> SimGroup {
        let id = runtime_id(&mut self.rng_state);
        let rec = GroupRec::security(id, display_name.to_owned(), created);
        let view = rec.view();
        self.groups.insert(id, rec);
        self.log.push(Change::Group {
            id,
            props: ALL_BITS,
        });
        view
    }

    pub(crate) fn update_group(
        &mut self,
        id: &str,
        patch: GroupPatch,
    ) -> Result<SimGroup, SimError> {
        let gid = parse_id(id)?;
        let g = self
            .groups
            .get_mut(&gid)
            .filter(|g| g.deleted.is_none())
            .ok_or_else(|| SimError::NotFound { id: id.to_owned() })?;
        let mut bits = 0;
        if let Some(name) = patch.display_name
            && name != g.display_name
        {
            g.display_name = name;
            bits |= group_bit("displayName");
        }
        if let Some(desc) = patch.description
            && desc != g.description
        {
            g.description = desc;
            bits |= group_bit("description");
        }
        let view = g.view();
        if bits != 0 {
            self.log.push(Change::Group {
                id: gid,
                props: bits,
            });
        }
        Ok(view)
    }

    /// Security groups are deleted permanently (they skip deletedItems).
    pub(crate) fn delete_group(&mut self, id: &str) -> Result<(), SimError> {
        let gid = parse_id(id)?;
        if self.groups.get(&gid).is_none_or(|g| g.deleted.is_some()) {
            return Err(SimError::NotFound { id: id.to_owned() });
        }
        self.groups.remove(&gid);
        self.drop_memberships(gid, ObjectKind::Group);
        self.log.push(Change::GroupRemoved { id: gid });
        Ok(())
    }

    pub(crate) fn add_member(&mut self, group: &str, member: &str) -> Result<(), SimError> {
        let gid = parse_id(group)?;
        let mid = parse_id(member)?;
        if gid == mid {
            return Err(SimError::Invalid(
                "a group cannot be a member of itself".to_owned(),
            ));
        }
        let kind = self.kind_of(&mid).ok_or_else(|| SimError::NotFound {
            id: member.to_owned(),
        })?;
        let g = self
            .groups
            .get_mut(&gid)
            .filter(|g| g.deleted.is_none())
            .ok_or_else(|| SimError::NotFound {
                id: group.to_owned(),
            })?;
        if g.members.insert(mid, kind).is_none() {
            self.log.push(Change::Member {
                group: gid,
                member: mid,
                kind,
                added: true,
            });
            self.membership_version += 1;
        }
        Ok(())
    }

    pub(crate) fn remove_member(&mut self, group: &str, member: &str) -> Result<(), SimError> {
        let gid = parse_id(group)?;
        let mid = parse_id(member)?;
        let g = self
            .groups
            .get_mut(&gid)
            .filter(|g| g.deleted.is_none())
            .ok_or_else(|| SimError::NotFound {
                id: group.to_owned(),
            })?;
        match g.members.remove(&mid) {
            Some(kind) => {
                self.log.push(Change::Member {
                    group: gid,
                    member: mid,
                    kind,
                    added: false,
                });
                self.membership_version += 1;
                Ok(())
            }
            None => Err(SimError::NotFound {
                id: member.to_owned(),
            }),
        }
    }
}
