//! Property catalogs and JSON rendering of directory objects (users, groups, devices, contacts).
//!
//! Owns which properties exist per type, which are returned by default, which are only returned
//! on `$select`, and how each is written. Rendering writes JSON text straight into a `String`
//! (no intermediate `serde_json::Value`) because member pages of 999 objects are the hot path.

use chrono::{DateTime, Utc};

use super::model::{ObjectKind, SimUser};
use super::tenant::{Contact, Device, Directory, GroupRec};

/// User properties returned without `$select` (Graph's default set), in Graph's order.
pub(crate) const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// User properties the simulator models. The position is the change-tracking bit.
pub(crate) const USER_MODELED: &[&str] = &[
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "accountEnabled",
    "city",
    "companyName",
    "country",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "department",
    "employeeId",
    "externalUserState",
    "mailNickname",
    "otherMails",
    "proxyAddresses",
    "usageLocation",
    "userType",
    "onPremisesSyncEnabled",
];

/// Real Graph user properties the simulator does not model: selectable, always `null`.
const USER_UNMODELED: &[&str] = &[
    "ageGroup",
    "assignedLicenses",
    "assignedPlans",
    "consentProvidedForMinor",
    "employeeHireDate",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserStateChangeDateTime",
    "faxNumber",
    "identities",
    "imAddresses",
    "isResourceAccount",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "licenseAssignmentStates",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesUserPrincipalName",
    "passwordPolicies",
    "passwordProfile",
    "postalCode",
    "preferredDataLocation",
    "provisionedPlans",
    "securityIdentifier",
    "showInAddressList",
    "signInSessionsValidFromDateTime",
    "state",
    "streetAddress",
];

/// User properties stored outside the directory's main store: selecting one answers 501.
pub(crate) const USER_NOT_IMPLEMENTED: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
];

/// Group properties returned without `$select`, in the order of Microsoft's example.
pub(crate) const GROUP_DEFAULT: &[&str] = &[
    "id",
    "deletedDateTime",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "securityIdentifier",
    "theme",
    "visibility",
    "onPremisesProvisioningErrors",
];

/// Group properties only returned on `$select` (Microsoft 365 group settings).
const GROUP_SELECT_ONLY: &[&str] = &[
    "allowExternalSenders",
    "autoSubscribeNewMembers",
    "isSubscribedByMail",
    "unseenCount",
    "hideFromAddressLists",
    "hideFromOutlookClients",
];

/// Group properties whose changes delta tracks (the position is the change bit).
pub(crate) const GROUP_TRACKED: &[&str] = &[
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "visibility",
];

pub(crate) const DEVICE_PROPS: &[&str] = &[
    "id",
    "accountEnabled",
    "deviceId",
    "displayName",
    "operatingSystem",
    "operatingSystemVersion",
    "registrationDateTime",
    "deletedDateTime",
];

pub(crate) const CONTACT_PROPS: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "companyName",
    "jobTitle",
    "department",
    "deletedDateTime",
];

fn find_ci(list: &[&'static str], name: &str) -> Option<&'static str> {
    list.iter().copied().find(|p| p.eq_ignore_ascii_case(name))
}

/// What a name in `$select` means for users.
pub(crate) enum UserPropKind {
    Known(&'static str),
    NotImplemented,
}

pub(crate) fn user_prop(name: &str) -> Option<UserPropKind> {
    if let Some(p) = find_ci(USER_MODELED, name).or_else(|| find_ci(USER_UNMODELED, name)) {
        return Some(UserPropKind::Known(p));
    }
    find_ci(USER_NOT_IMPLEMENTED, name).map(|_| UserPropKind::NotImplemented)
}

pub(crate) fn group_prop(name: &str) -> Option<&'static str> {
    find_ci(GROUP_DEFAULT, name).or_else(|| find_ci(GROUP_SELECT_ONLY, name))
}

/// Any property of any directory object type that can be a member (for `/members?$select=`).
pub(crate) fn member_prop(name: &str) -> Option<&'static str> {
    match user_prop(name) {
        Some(UserPropKind::Known(p)) => return Some(p),
        Some(UserPropKind::NotImplemented) => return None,
        None => {}
    }
    group_prop(name)
        .or_else(|| find_ci(DEVICE_PROPS, name))
        .or_else(|| find_ci(CONTACT_PROPS, name))
}

/// Change-tracking bit of a user property (0 for properties that never change).
pub(crate) fn user_bit(name: &str) -> u64 {
    USER_MODELED
        .iter()
        .position(|p| *p == name)
        .map_or(0, |i| 1u64 << i)
}

pub(crate) fn group_bit(name: &str) -> u64 {
    GROUP_TRACKED
        .iter()
        .position(|p| *p == name)
        .map_or(0, |i| 1u64 << i)
}

pub(crate) const ALL_BITS: u64 = u64::MAX;

/// A property value borrowed from an object, ready to be written or compared.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Num(i64),
    List(&'a [String]),
    Owned(String),
    OwnedList(Vec<String>),
    Null,
}

impl Val<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Owned(s) => Some(s),
            _ => None,
        }
    }
}

fn opt(v: &Option<String>) -> Val<'_> {
    match v {
        Some(s) => Val::Str(s),
        None => Val::Null,
    }
}

pub(crate) fn graph_date(d: &DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn opt_date(d: &Option<DateTime<Utc>>) -> Val<'static> {
    match d {
        Some(d) => Val::Owned(graph_date(d)),
        None => Val::Null,
    }
}

/// The value of a user property, `None` if users don't have it.
pub(crate) fn user_value<'a>(u: &'a SimUser, name: &str) -> Option<Val<'a>> {
    Some(match name {
        "id" => Val::Str(&u.id),
        "businessPhones" => Val::List(&u.business_phones),
        "displayName" => opt(&u.display_name),
        "givenName" => opt(&u.given_name),
        "jobTitle" => opt(&u.job_title),
        "mail" => opt(&u.mail),
        "mobilePhone" => opt(&u.mobile_phone),
        "officeLocation" => opt(&u.office_location),
        "preferredLanguage" => opt(&u.preferred_language),
        "surname" => opt(&u.surname),
        "userPrincipalName" => Val::Str(&u.user_principal_name),
        "accountEnabled" => Val::Bool(u.account_enabled),
        "city" => opt(&u.city),
        "companyName" => opt(&u.company_name),
        "country" => opt(&u.country),
        "createdDateTime" => Val::Owned(graph_date(&u.created_date_time)),
        "creationType" => opt(&u.creation_type),
        "deletedDateTime" => opt_date(&u.deleted_date_time),
        "department" => opt(&u.department),
        "employeeId" => opt(&u.employee_id),
        "externalUserState" => opt(&u.external_user_state),
        "mailNickname" => Val::Str(&u.mail_nickname),
        "otherMails" => Val::List(&u.other_mails),
        "proxyAddresses" => Val::OwnedList(match &u.mail {
            Some(m) if !u.is_external() => vec![format!("SMTP:{m}")],
            _ => Vec::new(),
        }),
        "usageLocation" => opt(&u.usage_location),
        "userType" => Val::Str(&u.user_type),
        "onPremisesSyncEnabled" => Val::Null,
        other if USER_UNMODELED.contains(&other) => Val::Null,
        _ => return None,
    })
}

pub(crate) fn group_value<'a>(g: &'a GroupRec, name: &str) -> Option<Val<'a>> {
    let unified = g.group_types.iter().any(|t| t == "Unified");
    let m365 = |v: Val<'a>| if unified { v } else { Val::Null };
    Some(match name {
        "id" => Val::Owned(g.id.to_string()),
        "deletedDateTime" => opt_date(&g.deleted),
        "createdDateTime" => Val::Owned(graph_date(&g.created)),
        "renewedDateTime" => Val::Owned(graph_date(&g.created)),
        "description" => opt(&g.description),
        "displayName" => Val::Str(&g.display_name),
        "groupTypes" => Val::List(&g.group_types),
        "mail" => opt(&g.mail),
        "mailEnabled" => Val::Bool(g.mail_enabled),
        "mailNickname" => Val::Str(&g.mail_nickname),
        "securityEnabled" => Val::Bool(g.security_enabled),
        "securityIdentifier" => Val::Owned(g.security_identifier()),
        "visibility" => opt(&g.visibility),
        "proxyAddresses" => Val::OwnedList(match &g.mail {
            Some(m) => vec![format!("SMTP:{m}")],
            None => Vec::new(),
        }),
        "resourceBehaviorOptions" | "onPremisesProvisioningErrors" => Val::OwnedList(Vec::new()),
        "resourceProvisioningOptions" => Val::OwnedList(if unified {
            vec!["Team".to_owned()]
        } else {
            Vec::new()
        }),
        "allowExternalSenders"
        | "autoSubscribeNewMembers"
        | "isSubscribedByMail"
        | "hideFromAddressLists"
        | "hideFromOutlookClients" => m365(Val::Bool(false)),
        "unseenCount" => m365(Val::Num(0)),
        other if GROUP_DEFAULT.contains(&other) => Val::Null,
        _ => return None,
    })
}

fn device_value<'a>(d: &'a Device, name: &str) -> Option<Val<'a>> {
    Some(match name {
        "id" => Val::Owned(d.id.to_string()),
        "accountEnabled" => Val::Bool(d.account_enabled),
        "deviceId" => Val::Owned(d.device_id.to_string()),
        "displayName" => Val::Str(&d.display_name),
        "operatingSystem" => Val::Str(&d.operating_system),
        "operatingSystemVersion" => Val::Str(&d.operating_system_version),
        "registrationDateTime" => Val::Owned(graph_date(&d.created)),
        "deletedDateTime" => Val::Null,
        _ => return None,
    })
}

fn contact_value<'a>(c: &'a Contact, name: &str) -> Option<Val<'a>> {
    Some(match name {
        "id" => Val::Owned(c.id.to_string()),
        "displayName" => Val::Str(&c.display_name),
        "givenName" => opt(&c.given_name),
        "surname" => opt(&c.surname),
        "mail" => opt(&c.mail),
        "companyName" => opt(&c.company_name),
        "jobTitle" => opt(&c.job_title),
        "department" | "deletedDateTime" => Val::Null,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// JSON writing

pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    // Branch-free scan (vectorizes); almost every string needs no escaping at all.
    let needs_escape = bytes.iter().fold(false, |acc, &b| {
        acc | (b == b'"') | (b == b'\\') | (b < 0x20)
    });
    if !needs_escape {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Escapes are ASCII, so `i` is always on a char boundary.
        out.push_str(s.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

/// Writes one JSON object member by member.
pub(crate) struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn begin(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    pub(crate) fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        // Keys are the simulator's own property names and annotations: nothing to escape.
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
        self.out
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) {
        let out = self.key(k);
        push_json_str(out, v);
    }

    pub(crate) fn raw(&mut self, k: &str, raw: &str) {
        self.key(k).push_str(raw);
    }

    pub(crate) fn val(&mut self, k: &str, v: &Val<'_>) {
        let out = self.key(k);
        write_val(out, v);
    }

    pub(crate) fn end(self) {
        self.out.push('}');
    }
}

pub(crate) fn write_val(out: &mut String, v: &Val<'_>) {
    match v {
        Val::Str(s) => push_json_str(out, s),
        Val::Owned(s) => push_json_str(out, s),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => out.push_str(&n.to_string()),
        Val::Null => out.push_str("null"),
        Val::List(l) => write_list(out, l.iter().map(String::as_str)),
        Val::OwnedList(l) => write_list(out, l.iter().map(String::as_str)),
    }
}

fn write_list<'s>(out: &mut String, items: impl Iterator<Item = &'s str>) {
    out.push('[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, s);
    }
    out.push(']');
}

/// How objects are written for one response.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shape<'a> {
    /// `$select` (canonical names); `None` = the type's default properties.
    pub select: Option<&'a [&'static str]>,
    /// Emit `@odata.type` (directoryObject collections do, entity sets don't).
    pub odata_type: bool,
    /// Every property except `id`/`@odata.type` is `null` (too narrow a permission).
    pub null_props: bool,
    /// Tenant GUID: emit `@odata.id` and `organizationId` on groups (the group-cast listing).
    pub group_odata_id: Option<&'a str>,
}

fn write_props<'o>(
    obj: &mut Obj<'_>,
    kind: ObjectKind,
    id: &str,
    defaults: &[&'static str],
    shape: &Shape<'_>,
    value: impl Fn(&str) -> Option<Val<'o>>,
) {
    if shape.odata_type {
        obj.str("@odata.type", kind.odata_type());
    }
    obj.str("id", id);
    let names = shape.select.unwrap_or(defaults);
    for name in names {
        if *name == "id" {
            continue;
        }
        if let Some(v) = value(name) {
            if shape.null_props {
                obj.raw(name, "null");
            } else {
                obj.val(name, &v);
            }
        }
    }
}

pub(crate) fn write_user(out: &mut String, u: &SimUser, shape: &Shape<'_>) {
    let mut obj = Obj::begin(out);
    write_props(
        &mut obj,
        ObjectKind::User,
        &u.id,
        USER_DEFAULT,
        shape,
        |n| user_value(u, n),
    );
    obj.end();
}

pub(crate) fn write_group(out: &mut String, g: &GroupRec, shape: &Shape<'_>) {
    let mut obj = Obj::begin(out);
    let id = g.id.to_string();
    if let Some(tid) = shape.group_odata_id {
        obj.str(
            "@odata.id",
            &format!(
                "https://graph.microsoft.com/v2/{tid}/directoryObjects/{id}/Microsoft.DirectoryServices.Group"
            ),
        );
        obj.str("organizationId", tid);
    }
    // Groups inside member listings are never nulled: the app reads groups (GroupMember.Read.All).
    let shape = Shape {
        null_props: false,
        ..*shape
    };
    write_props(
        &mut obj,
        ObjectKind::Group,
        &id,
        GROUP_DEFAULT,
        &shape,
        |n| group_value(g, n),
    );
    obj.end();
}

/// A borrowed directory object of any kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ObjRef<'a> {
    User(&'a SimUser),
    Group(&'a GroupRec),
    Device(&'a Device),
    Contact(&'a Contact),
}

impl<'a> ObjRef<'a> {
    pub(crate) fn lookup(dir: &'a Directory, id: &uuid::Uuid, kind: ObjectKind) -> Option<Self> {
        match kind {
            ObjectKind::User => dir.users.get(id).map(ObjRef::User),
            ObjectKind::Group => dir.groups.get(id).map(ObjRef::Group),
            ObjectKind::Device => dir.devices.get(id).map(ObjRef::Device),
            ObjectKind::OrgContact => dir.contacts.get(id).map(ObjRef::Contact),
        }
    }

    pub(crate) fn kind(&self) -> ObjectKind {
        match self {
            ObjRef::User(_) => ObjectKind::User,
            ObjRef::Group(_) => ObjectKind::Group,
            ObjRef::Device(_) => ObjectKind::Device,
            ObjRef::Contact(_) => ObjectKind::OrgContact,
        }
    }

    /// Not in deletedItems.
    pub(crate) fn live(&self) -> bool {
        match self {
            ObjRef::User(u) => u.deleted_date_time.is_none(),
            ObjRef::Group(g) => g.deleted.is_none(),
            ObjRef::Device(_) | ObjRef::Contact(_) => true,
        }
    }

    pub(crate) fn value(&self, name: &str) -> Option<Val<'a>> {
        match *self {
            ObjRef::User(u) => user_value(u, name),
            ObjRef::Group(g) => group_value(g, name),
            ObjRef::Device(d) => device_value(d, name),
            ObjRef::Contact(c) => contact_value(c, name),
        }
    }

    pub(crate) fn write(&self, out: &mut String, shape: &Shape<'_>) {
        match *self {
            ObjRef::User(u) => write_user(out, u, shape),
            ObjRef::Group(g) => write_group(out, g, shape),
            ObjRef::Device(d) => {
                let mut obj = Obj::begin(out);
                write_props(
                    &mut obj,
                    ObjectKind::Device,
                    &d.id.to_string(),
                    DEVICE_PROPS,
                    shape,
                    |n| device_value(d, n),
                );
                obj.end();
            }
            ObjRef::Contact(c) => {
                let mut obj = Obj::begin(out);
                write_props(
                    &mut obj,
                    ObjectKind::OrgContact,
                    &c.id.to_string(),
                    CONTACT_PROPS,
                    shape,
                    |n| contact_value(c, n),
                );
                obj.end();
            }
        }
    }
}

/// Writes any directory object by id and kind; returns false if it does not exist.
pub(crate) fn write_object(
    out: &mut String,
    dir: &Directory,
    id: &uuid::Uuid,
    kind: ObjectKind,
    shape: &Shape<'_>,
) -> bool {
    match ObjRef::lookup(dir, id, kind) {
        Some(o) => {
            o.write(out, shape);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_strings_escape_like_serde_json() {
        for s in [
            "plain",
            "Zoë \"quoted\" \\ back",
            "tab\tnew\nline\r",
            "\u{1}\u{1f}ctl",
            "美咲 محمد #EXT#",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }
}
