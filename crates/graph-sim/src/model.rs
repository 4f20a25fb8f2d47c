//! Public value types of the simulated directory: users, groups, patches and errors.
//!
//! These are plain data; the tenant (`tenant.rs`) owns the live copies and the change log.
//! Field names are Rust-style here and Graph-style (camelCase) in JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A user object as the simulated directory stores it (Graph property names in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimUser {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub display_name: Option<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub office_location: Option<String>,
    pub preferred_language: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub company_name: Option<String>,
    pub employee_id: Option<String>,
    pub usage_location: Option<String>,
    pub account_enabled: bool,
    /// `Member` or `Guest`.
    pub user_type: String,
    pub created_date_time: DateTime<Utc>,
    pub other_mails: Vec<String>,
    pub mail_nickname: String,
    /// `Invitation` for invited guests, otherwise `None`.
    pub creation_type: Option<String>,
    /// `Accepted` / `PendingAcceptance` for invited guests.
    pub external_user_state: Option<String>,
    /// Set while the user sits in deletedItems (soft-deleted).
    pub deleted_date_time: Option<DateTime<Utc>>,
}

impl SimUser {
    /// True for B2B guests (`#EXT#` in the UPN).
    pub fn is_external(&self) -> bool {
        self.user_principal_name.contains("#EXT#")
    }
}

/// A group object. `members` are the ids of the direct members (users, groups, devices, contacts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimGroup {
    pub id: String,
    pub display_name: String,
    pub description: Option<String>,
    pub created_date_time: DateTime<Utc>,
    pub security_enabled: bool,
    pub mail_enabled: bool,
    pub mail: Option<String>,
    pub mail_nickname: String,
    /// `[]` for security groups, `["Unified"]` for Microsoft 365 groups.
    pub group_types: Vec<String>,
    pub visibility: Option<String>,
    pub deleted_date_time: Option<DateTime<Utc>>,
    pub members: Vec<String>,
}

/// The kind of a directory object, as its `@odata.type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectKind {
    User,
    Group,
    Device,
    OrgContact,
}

impl ObjectKind {
    pub fn odata_type(self) -> &'static str {
        match self {
            ObjectKind::User => "#microsoft.graph.user",
            ObjectKind::Group => "#microsoft.graph.group",
            ObjectKind::Device => "#microsoft.graph.device",
            ObjectKind::OrgContact => "#microsoft.graph.orgContact",
        }
    }
}

/// A new user for [`crate::SimControl::add_user`]. `Default` gives an enabled member
/// with every optional property unset; set at least `user_principal_name` and `display_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NewUser {
    pub user_principal_name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub office_location: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub company_name: Option<String>,
    pub employee_id: Option<String>,
    pub account_enabled: bool,
    pub user_type: String,
    pub other_mails: Vec<String>,
    /// Defaults to a deterministic time derived from the tenant's change sequence.
    pub created_date_time: Option<DateTime<Utc>>,
}

impl Default for NewUser {
    fn default() -> Self {
        NewUser {
            user_principal_name: String::new(),
            display_name: String::new(),
            given_name: None,
            surname: None,
            mail: None,
            job_title: None,
            department: None,
            business_phones: Vec::new(),
            mobile_phone: None,
            office_location: None,
            city: None,
            country: None,
            company_name: None,
            employee_id: None,
            account_enabled: true,
            user_type: "Member".to_owned(),
            other_mails: Vec::new(),
            created_date_time: None,
        }
    }
}

/// A partial update of a user. `None` leaves a property alone; for nullable properties
/// `Some(None)` clears it (in JSON: the key present with `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserPatch {
    pub user_principal_name: Option<String>,
    #[serde(deserialize_with = "present")]
    pub mail: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub given_name: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub surname: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub display_name: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub job_title: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub department: Option<Option<String>>,
    pub business_phones: Option<Vec<String>>,
    #[serde(deserialize_with = "present")]
    pub mobile_phone: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub office_location: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub preferred_language: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub city: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub country: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub company_name: Option<Option<String>>,
    #[serde(deserialize_with = "present")]
    pub employee_id: Option<Option<String>>,
    pub account_enabled: Option<bool>,
    pub user_type: Option<String>,
    pub other_mails: Option<Vec<String>>,
}

/// A partial update of a group's own properties (membership has its own calls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupPatch {
    pub display_name: Option<String>,
    #[serde(deserialize_with = "present")]
    pub description: Option<Option<String>>,
}

/// A key present in JSON (even as `null`) becomes `Some(..)`; a missing key stays `None`.
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Why a control operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("no directory object with id '{id}'")]
    NotFound { id: String },
    #[error("'{id}' is not a GUID")]
    MalformedId { id: String },
    #[error("{0}")]
    Invalid(String),
}
