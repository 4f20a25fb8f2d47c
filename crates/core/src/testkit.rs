//! Building blocks for tests of the decisions, here and in the product's store tests: numbered
//! Entra users, the two-rule setup (an employee group and a contact group) and a directory of
//! them. Compiled for this crate's tests and with the `testkit` feature, never in the product.

use std::collections::BTreeMap;

use crate::directory::{EntraGroup, EntraUser, MemberType, Snapshot};
use crate::id::ObjectId;
use crate::rules::{EmailSource, EmployeeDefaults, Rule, Rules, Target};

/// The employee rule's group.
pub const EMPLOYEES: ObjectId = ObjectId::from_u128(0xe);
/// The contact rule's group.
pub const CONTACTS: ObjectId = ObjectId::from_u128(0xc);

/// Entra user number `n`: `user{n}@contoso.com` with mail `User{n}@Contoso.com`, enabled.
pub fn user(n: u32) -> EntraUser {
    EntraUser {
        user_principal_name: Some(format!("user{n}@contoso.com")),
        mail: Some(format!("User{n}@Contoso.com")),
        given_name: Some(format!("Given{n}")),
        surname: Some("Surname".into()),
        job_title: Some("Engineer".into()),
        account_enabled: Some(true),
        ..EntraUser::new(ObjectId::from_u128(0x1000 + u128::from(n)))
    }
}

/// [`EMPLOYEES`] → employees with the Technician role (order 10), [`CONTACTS`] → contacts of
/// Contoso with portal access (order 20).
pub fn two_rules(tenant: &str) -> Rules {
    Rules {
        tenant: tenant.into(),
        tenant_account: Some("Contoso".into()),
        rules: vec![
            Rule {
                group_id: EMPLOYEES,
                order: 10,
                target: Target::Employee,
                role: Some("Technician".into()),
                portal_access: None,
                account: None,
            },
            Rule {
                group_id: CONTACTS,
                order: 20,
                target: Target::Contact,
                role: None,
                portal_access: Some(true),
                account: None,
            },
        ],
        email_source: EmailSource::Mail,
        nested_groups: true,
        default_phone_type: "Work".into(),
        employee_defaults: EmployeeDefaults::default(),
    }
}

/// A directory of `users` and groups with these direct user members.
pub fn directory(users: &[EntraUser], members: &BTreeMap<ObjectId, Vec<ObjectId>>) -> Snapshot {
    Snapshot {
        users: users.iter().map(|u| (u.id, u.clone())).collect(),
        groups: members
            .iter()
            .map(|(g, m)| {
                let group = EntraGroup {
                    display_name: Some(format!("Group {g}")),
                    members: m.iter().map(|id| (*id, MemberType::User)).collect(),
                    ..EntraGroup::new(*g)
                };
                (*g, group)
            })
            .collect(),
    }
}
