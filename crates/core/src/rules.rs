//! A tenant's mapping rules as the decisions read them (SPEC 2, 4.2): which group maps to which
//! kind of record with which access, and the settings that shape every record.
//!
//! Plain data, deserializable from the config's TOML shapes; validating the config file (key
//! paths, secrets, URLs) is the product's `config` module's job.

use serde::{Deserialize, Serialize};

use crate::id::ObjectId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailSource {
    Mail,
    Upn,
    ExternalUpn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Employee,
    Contact,
}

/// Values for mandatory employee columns when Entra has none (null or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmployeeDefaults {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub job_title: Option<String>,
    pub phone: Option<String>,
    pub department: Option<String>,
}

/// One `[[rules]]` entry of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub group_id: ObjectId,
    /// Lowest wins (SPEC 4.2).
    pub order: i64,
    pub target: Target,
    /// Employee rules: the security role granted.
    pub role: Option<String>,
    /// Contact rules: client-portal access (absent = false).
    pub portal_access: Option<bool>,
    /// Contact rules: the account, else the tenant's.
    pub account: Option<String>,
}

/// Everything about a tenant's configuration that decides records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rules {
    pub tenant: String,
    pub tenant_account: Option<String>,
    pub rules: Vec<Rule>,
    pub email_source: EmailSource,
    pub nested_groups: bool,
    pub default_phone_type: String,
    pub employee_defaults: EmployeeDefaults,
}

impl Rules {
    /// A stable text that changes exactly when something that decides records changes: a run
    /// whose rules differ from the last run's resolves every user again. Rules are taken in
    /// group order, since the order they are listed in decides nothing.
    pub fn fingerprint(&self) -> String {
        let mut sorted = self.clone();
        sorted.rules.sort_by_key(|r| r.group_id);
        serde_json::to_string(&sorted).unwrap_or_default()
    }

    /// The rule groups, in the order the rules are listed.
    pub fn group_ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.rules.iter().map(|r| r.group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(orders: &[(u128, i64)]) -> Rules {
        Rules {
            tenant: "t".into(),
            tenant_account: None,
            rules: orders
                .iter()
                .map(|(g, order)| Rule {
                    group_id: ObjectId::from_u128(*g),
                    order: *order,
                    target: Target::Employee,
                    role: None,
                    portal_access: None,
                    account: None,
                })
                .collect(),
            email_source: EmailSource::Mail,
            nested_groups: true,
            default_phone_type: "Work".into(),
            employee_defaults: EmployeeDefaults::default(),
        }
    }

    #[test]
    fn the_fingerprint_follows_what_decides_records_not_the_listing_order() {
        let a = rules(&[(1, 10), (2, 20)]);
        assert_eq!(a.fingerprint(), rules(&[(2, 20), (1, 10)]).fingerprint());
        assert_ne!(a.fingerprint(), rules(&[(1, 10), (2, 5)]).fingerprint());
        let mut role = a.clone();
        role.rules[0].role = Some("Admin".into());
        assert_ne!(a.fingerprint(), role.fingerprint());
        assert!(
            a.fingerprint()
                .contains("00000000-0000-0000-0000-000000000002")
        );
    }
}
