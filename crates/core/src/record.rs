//! PSA records as the sync sees them: the two kinds, the columns it writes, and the rows it
//! reads back from the store.
//!
//! Plain data shared by [`crate::resolve`], [`crate::plan`] and the product's store; no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{Email, Username};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Employee,
    Contact,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Employee => "employee",
            RecordKind::Contact => "contact",
        }
    }

    pub fn other(self) -> RecordKind {
        match self {
            RecordKind::Employee => RecordKind::Contact,
            RecordKind::Contact => RecordKind::Employee,
        }
    }

    pub fn parse(s: &str) -> Option<RecordKind> {
        match s {
            "employee" => Some(RecordKind::Employee),
            "contact" => Some(RecordKind::Contact),
            _ => None,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `employees` columns the sync owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmployeeValues {
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub job_title: Option<String>,
    pub phone: Option<String>,
    pub department: Option<String>,
    pub security_role: Option<String>,
}

/// The `contacts` columns the sync owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactValues {
    pub account: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub job_title: Option<String>,
    pub phone: Option<String>,
    pub phone_type: Option<String>,
    pub portal_access: bool,
}

/// The values of one record of either kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Values {
    Employee(EmployeeValues),
    Contact(ContactValues),
}

impl Values {
    pub fn kind(&self) -> RecordKind {
        match self {
            Values::Employee(_) => RecordKind::Employee,
            Values::Contact(_) => RecordKind::Contact,
        }
    }

    pub fn email(&self) -> Option<&str> {
        match self {
            Values::Employee(e) => e.email.as_deref(),
            Values::Contact(c) => c.email.as_deref(),
        }
    }

    pub fn username(&self) -> Option<&str> {
        match self {
            Values::Employee(e) => e.username.as_deref(),
            Values::Contact(_) => None,
        }
    }

    /// The email as the sync compares it (case-insensitive).
    pub fn email_key(&self) -> Option<Email> {
        self.email().map(Email::new)
    }

    /// The username as the sync compares it (case-insensitive).
    pub fn username_key(&self) -> Option<Username> {
        self.username().map(Username::new)
    }

    /// Column name → value, in table order, borrowed: what SQL binds and the change log shows.
    pub fn cells(&self) -> [(&'static str, Cell<'_>); 8] {
        fn t(v: &Option<String>) -> Cell<'_> {
            Cell::Text(v.as_deref())
        }
        match self {
            Values::Employee(e) => [
                ("username", t(&e.username)),
                ("email", t(&e.email)),
                ("first_name", t(&e.first_name)),
                ("last_name", t(&e.last_name)),
                ("job_title", t(&e.job_title)),
                ("phone", t(&e.phone)),
                ("department", t(&e.department)),
                ("security_role", t(&e.security_role)),
            ],
            Values::Contact(c) => [
                ("account", t(&c.account)),
                ("email", t(&c.email)),
                ("first_name", t(&c.first_name)),
                ("last_name", t(&c.last_name)),
                ("job_title", t(&c.job_title)),
                ("phone", t(&c.phone)),
                ("phone_type", t(&c.phone_type)),
                ("portal_access", Cell::Int(i64::from(c.portal_access))),
            ],
        }
    }

    /// The same record with its access revoked (no security role / no portal access).
    pub fn revoked(&self) -> Values {
        match self {
            Values::Employee(e) => Values::Employee(EmployeeValues {
                security_role: None,
                ..e.clone()
            }),
            Values::Contact(c) => Values::Contact(ContactValues {
                portal_access: false,
                ..c.clone()
            }),
        }
    }

    /// These values with the access `desired` grants (security role / portal access): what
    /// a reactivation restores of what a deactivation revoked.
    pub fn with_access_of(&self, desired: &Values) -> Values {
        match (self, desired) {
            (Values::Employee(e), Values::Employee(d)) => Values::Employee(EmployeeValues {
                security_role: d.security_role.clone(),
                ..e.clone()
            }),
            (Values::Contact(c), Values::Contact(d)) => Values::Contact(ContactValues {
                portal_access: d.portal_access,
                ..c.clone()
            }),
            _ => desired.clone(),
        }
    }

    /// The values before [`Values::archived`]: the `_Archived` suffixes (`_Archived2`, … for
    /// usernames) taken off again. Values without them are returned as they are.
    pub fn unarchived(&self) -> Values {
        fn strip(v: &Option<String>, numbered: bool) -> Option<String> {
            let v = v.as_ref()?;
            let Some(at) = v.rfind("_Archived") else {
                return Some(v.clone());
            };
            let rest = &v[at + "_Archived".len()..];
            let ours = rest.is_empty() || (numbered && rest.bytes().all(|b| b.is_ascii_digit()));
            Some(if ours { v[..at].to_string() } else { v.clone() })
        }
        match self {
            Values::Employee(e) => Values::Employee(EmployeeValues {
                username: strip(&e.username, true),
                email: strip(&e.email, false),
                ..e.clone()
            }),
            Values::Contact(c) => Values::Contact(ContactValues {
                email: strip(&c.email, false),
                ..c.clone()
            }),
        }
    }

    /// Archived form after a kind change: access revoked and `suffix` appended to the
    /// username (employees) and email.
    pub fn archived(&self, username_suffix: &str, email_suffix: &str) -> Values {
        let add = |v: &Option<String>, suffix: &str| v.as_ref().map(|v| format!("{v}{suffix}"));
        match self.revoked() {
            Values::Employee(e) => Values::Employee(EmployeeValues {
                username: add(&e.username, username_suffix),
                email: add(&e.email, email_suffix),
                ..e
            }),
            Values::Contact(c) => Values::Contact(ContactValues {
                email: add(&c.email, email_suffix),
                ..c
            }),
        }
    }
}

/// One column's value borrowed from a record: text (`None` = NULL) or an integer flag.
/// Serializes as the JSON the change log stores (`null`, a string, or a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Cell<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

impl Cell<'_> {
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Text(None))
    }
}

/// Columns whose values differ between `old` and `new` (same kind), borrowed.
pub fn cell_diff<'a>(old: &'a Values, new: &'a Values) -> Vec<(&'static str, Cell<'a>, Cell<'a>)> {
    old.cells()
        .into_iter()
        .zip(new.cells())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| (name, a, b))
        .collect()
}

/// A record as stored, with the state the sync looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub id: i64,
    pub values: Values,
    pub active: bool,
    pub is_root: bool,
    /// RFC 3339, set while the record is deactivated or archived.
    pub deactivated_at: Option<String>,
}
