//! Microsoft Graph's JSON shapes: collection pages, directory objects, error bodies.
//!
//! Parses leniently — a property of the wrong type is treated as absent rather than failing
//! the page — because one odd user must not stop a tenant's sync. No I/O.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use entra_sync_core::directory::{EntraUser, MemberType};
use entra_sync_core::{NotAGuid, ObjectId};

/// The `$select` list for users: only what the mapping and scope need.
pub const USER_SELECT: &str = "id,userPrincipalName,mail,givenName,surname,jobTitle,department,businessPhones,accountEnabled,userType";

/// One page of a collection (`value` + `@odata.nextLink` / `@odata.deltaLink`), its items as
/// JSON values or, for member listings, parsed straight into [`Member`]s.
#[derive(Debug, Default)]
pub struct Page<T = Value> {
    pub value: Vec<T>,
    pub next_link: Option<String>,
    pub delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct RawPage<T> {
    value: Option<Vec<T>>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<Value>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<Value>,
}

#[cfg(test)]
pub fn parse_page(body: &[u8]) -> Result<Page, String> {
    parse_page_of(body)
}

pub fn parse_page_of<T: DeserializeOwned>(body: &[u8]) -> Result<Page<T>, String> {
    let raw: RawPage<T> = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            "the answer was cut short (truncated JSON)".to_string()
        } else {
            format!("the answer is not valid JSON ({e})")
        }
    })?;
    let link = |v: Option<Value>, name: &str| -> Result<Option<String>, String> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let page = Page {
        value: raw
            .value
            .ok_or_else(|| "the answer has no \"value\" collection".to_string())?,
        next_link: link(raw.next_link, "@odata.nextLink")?,
        delta_link: link(raw.delta_link, "@odata.deltaLink")?,
    };
    if page.next_link.is_some() && page.delta_link.is_some() {
        return Err("a page carries both @odata.nextLink and @odata.deltaLink".into());
    }
    Ok(page)
}

/// Any JSON value, kept only as far as the lenient readers below need it.
enum Loose {
    Str(String),
    Bool(bool),
    /// An array: its first element when that is a string.
    FirstStr(Option<String>),
    Other,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loose, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Loose, E> {
                Ok(Loose::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Loose, E> {
                Ok(Loose::Str(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Loose, E> {
                Ok(Loose::Bool(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_none<E>(self) -> Result<Loose, E> {
                Ok(Loose::Other)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
                let first = match seq.next_element::<Loose>()? {
                    Some(Loose::Str(s)) => Some(s),
                    _ => None,
                };
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::FirstStr(first))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

fn loose_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Loose::deserialize(d)? {
        Loose::Str(s) => Some(s),
        _ => None,
    })
}

fn loose_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match Loose::deserialize(d)? {
        Loose::Bool(b) => Some(b),
        _ => None,
    })
}

fn first_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Loose::deserialize(d)? {
        Loose::FirstStr(s) => s,
        _ => None,
    })
}

/// A directory object as listed (`/members`, `/users/{id}`, delta items), with only the
/// properties the sync reads. A property of the wrong type is treated as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Member {
    #[serde(deserialize_with = "loose_string")]
    id: Option<String>,
    #[serde(rename = "@odata.type", deserialize_with = "loose_string")]
    odata_type: Option<String>,
    #[serde(deserialize_with = "loose_string")]
    user_principal_name: Option<String>,
    #[serde(deserialize_with = "loose_string")]
    mail: Option<String>,
    #[serde(deserialize_with = "loose_string")]
    given_name: Option<String>,
    #[serde(deserialize_with = "loose_string")]
    surname: Option<String>,
    #[serde(deserialize_with = "loose_string")]
    job_title: Option<String>,
    #[serde(deserialize_with = "loose_string")]
    department: Option<String>,
    #[serde(rename = "businessPhones", deserialize_with = "first_string")]
    business_phone: Option<String>,
    #[serde(deserialize_with = "loose_bool")]
    account_enabled: Option<bool>,
    #[serde(deserialize_with = "loose_string")]
    user_type: Option<String>,
}

impl Member {
    /// The object's id: `None` when it has none, an error when it is not a GUID (Graph's ids
    /// are; anything else is refused before it can reach a URL).
    pub fn id(&self) -> Result<Option<ObjectId>, NotAGuid> {
        self.id.as_deref().map(ObjectId::parse).transpose()
    }

    pub fn kind(&self) -> MemberType {
        odata_member_type(self.odata_type.as_deref())
    }

    /// The user this object describes (whatever its `@odata.type`), if it has an id.
    pub fn into_user(self) -> Result<Option<EntraUser>, NotAGuid> {
        let Some(id) = self.id()? else {
            return Ok(None);
        };
        Ok(Some(EntraUser {
            id,
            user_principal_name: self.user_principal_name,
            mail: self.mail,
            given_name: self.given_name,
            surname: self.surname,
            job_title: self.job_title,
            department: self.department,
            business_phone: self.business_phone,
            account_enabled: self.account_enabled,
            user_type: self.user_type,
        }))
    }
}

fn string(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The object's id: `None` when it has none (or not as a string), an error when it is not a
/// GUID.
pub fn object_id(obj: &Value) -> Result<Option<ObjectId>, NotAGuid> {
    obj.get("id")
        .and_then(Value::as_str)
        .map(ObjectId::parse)
        .transpose()
}

fn odata_member_type(odata_type: Option<&str>) -> MemberType {
    match odata_type {
        Some("#microsoft.graph.user") => MemberType::User,
        Some("#microsoft.graph.group") => MemberType::Group,
        _ => MemberType::Other,
    }
}

pub fn member_type(obj: &Value) -> MemberType {
    odata_member_type(obj.get("@odata.type").and_then(Value::as_str))
}

/// A user object from `/users/{id}`, a `$batch` answer or a delta page; `Ok(None)` when it is
/// not an object with an id.
pub fn parse_user(obj: &Value) -> Result<Option<EntraUser>, NotAGuid> {
    match Member::deserialize(obj) {
        Ok(member) => member.into_user(),
        Err(_) => Ok(None),
    }
}

/// `existing` with the properties a delta item carries laid over it (delta items may carry
/// only some properties; absent keys keep their value, `null` clears).
pub fn merge_user(
    id: ObjectId,
    existing: Option<&EntraUser>,
    changes: &serde_json::Map<String, Value>,
) -> EntraUser {
    let mut obj = serde_json::Map::new();
    obj.insert("id".into(), Value::String(id.to_string()));
    if let Some(u) = existing {
        let s = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        obj.insert("userPrincipalName".into(), s(&u.user_principal_name));
        obj.insert("mail".into(), s(&u.mail));
        obj.insert("givenName".into(), s(&u.given_name));
        obj.insert("surname".into(), s(&u.surname));
        obj.insert("jobTitle".into(), s(&u.job_title));
        obj.insert("department".into(), s(&u.department));
        obj.insert(
            "businessPhones".into(),
            Value::Array(
                u.business_phone
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        );
        obj.insert(
            "accountEnabled".into(),
            u.account_enabled.map_or(Value::Null, Value::Bool),
        );
        obj.insert("userType".into(), s(&u.user_type));
    }
    for (k, v) in changes {
        if k != "id" {
            obj.insert(k.clone(), v.clone());
        }
    }
    // The id is a GUID and the object has one, so this only falls back for a Member that fails
    // to deserialize, which its lenient readers never do.
    parse_user(&Value::Object(obj))
        .ok()
        .flatten()
        .unwrap_or_else(|| EntraUser::new(id))
}

/// `{"error":{"code","message","innerError":{…}}}`; the inner key is matched case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphErrorBody {
    pub code: String,
    pub message: String,
    pub inner_code: Option<String>,
    pub request_id: Option<String>,
}

pub fn parse_error(body: &[u8]) -> Option<GraphErrorBody> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    let inner = err.as_object().and_then(|o| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("innererror"))
            .map(|(_, v)| v)
    });
    Some(GraphErrorBody {
        code: string(err, "code").unwrap_or_default(),
        message: string(err, "message").unwrap_or_default(),
        inner_code: inner.and_then(|i| string(i, "code")),
        request_id: inner.and_then(|i| string(i, "request-id")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/graph-sim/fixtures/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    #[test]
    fn every_collection_fixture_parses_as_a_page() {
        for name in [
            "group-members-page1.json",
            "group-members-user-cast-search.json",
            "group-members-filter-count.json",
            "group-members-limited-info.json",
            "group-transitivemembers.json",
            "group-transitivemembers-group-cast.json",
            "group-transitivemembers-user-cast.json",
            "groups-delta-initial-members.json",
            "groups-delta-next.json",
            "groups-delta-final-deltalink.json",
            "groups-delta-no-changes.json",
            "groups-delta-members-changes.json",
            "groups-delta-large-group-page1.json",
            "groups-delta-large-group-page2.json",
            "group-delta-default-properties.json",
            "group-delta-select-minimal.json",
            "users-delta-initial.json",
            "users-delta-next.json",
            "users-delta-final-deltalink.json",
            "users-delta-no-changes.json",
            "users-delta-changes.json",
            "users-list-default-properties.json",
            "users-silent-count-ignored.json",
            "deleteditems-groups.json",
            "deleteditems-groups-count-select.json",
            "directoryobjects-getbyids.json",
        ] {
            let page = parse_page(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                page.value.iter().all(|v| v.is_object()),
                "{name}: items are objects"
            );
        }
        let first = parse_page(&fixture("groups-delta-initial-members.json")).unwrap();
        assert!(first.next_link.unwrap().contains("$skiptoken="));
        let last = parse_page(&fixture("users-delta-final-deltalink.json")).unwrap();
        assert!(last.delta_link.unwrap().contains("$deltatoken="));
    }

    #[test]
    fn every_error_fixture_parses_with_its_code() {
        for (name, code) in [
            ("error-throttled-429.json", "TooManyRequests"),
            ("error-not-found.json", "Request_ResourceNotFound"),
            (
                "error-count-without-consistencylevel.json",
                "Request_BadRequest",
            ),
            (
                "error-search-without-consistencylevel.json",
                "Request_UnsupportedQuery",
            ),
            (
                "error-advanced-query-params-missing.json",
                "Request_UnsupportedQuery",
            ),
            (
                "error-unsupported-filter-property.json",
                "Request_UnsupportedQuery",
            ),
            ("error-not-implemented-501.json", "NotImplemented"),
        ] {
            let e = parse_error(&fixture(name)).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(e.code, code, "{name}");
        }
        let generic = parse_error(&fixture("error-generic-example.json")).unwrap();
        assert!(!generic.code.is_empty());
    }

    #[test]
    fn users_parse_with_odd_types_treated_as_absent() {
        let v: Value = serde_json::json!({
            "@odata.type": "#microsoft.graph.user",
            "id": "25DCFFFF-959E-4ECE-9973-E5D9B800E8CC",
            "mail": 42, "givenName": null, "businessPhones": ["+1 425"],
            "accountEnabled": "yes", "userPrincipalName": "a@b.c"
        });
        let u = parse_user(&v).unwrap().unwrap();
        assert_eq!(u.id.to_string(), "25dcffff-959e-4ece-9973-e5d9b800e8cc");
        assert_eq!(u.mail, None);
        assert_eq!(u.business_phone.as_deref(), Some("+1 425"));
        assert_eq!(u.account_enabled, None);
        assert_eq!(member_type(&v), MemberType::User);
    }

    #[test]
    fn member_pages_parsed_typed_agree_with_the_json_values() {
        for name in [
            "group-members-page1.json",
            "group-members-limited-info.json",
            "group-transitivemembers.json",
            "users-delta-initial.json",
            "users-list-default-properties.json",
        ] {
            let values = parse_page(&fixture(name)).unwrap();
            let typed = parse_page_of::<Member>(&fixture(name)).unwrap();
            assert_eq!(values.next_link, typed.next_link, "{name}");
            assert_eq!(values.value.len(), typed.value.len(), "{name}");
            for (v, m) in values.value.iter().zip(typed.value) {
                assert_eq!(member_type(v), m.kind(), "{name}");
                assert_eq!(parse_user(v), m.into_user(), "{name}");
            }
        }
        let odd = br##"{"value":[{"id":"0000000A-0000-0000-0000-000000000000","@odata.type":"#microsoft.graph.user","mail":{"x":[1]},
            "businessPhones":[7,"+1"],"accountEnabled":1,"userPrincipalName":"a@b.c"}]}"##;
        let user = parse_page_of::<Member>(odd)
            .unwrap()
            .value
            .pop()
            .unwrap()
            .into_user()
            .unwrap()
            .unwrap();
        assert_eq!(user.id.to_string(), "0000000a-0000-0000-0000-000000000000");
        assert_eq!(
            (user.mail, user.business_phone, user.account_enabled),
            (None, None, None)
        );
        assert_eq!(user.user_principal_name.as_deref(), Some("a@b.c"));
    }

    #[test]
    fn ids_that_are_not_guids_are_refused_and_absent_ids_are_no_user() {
        let hostile = serde_json::json!({
            "@odata.type": "#microsoft.graph.user",
            "id": "x/../../../users/someone?$select=signInActivity#",
            "userPrincipalName": "a@b.c"
        });
        let e = parse_user(&hostile).unwrap_err();
        assert!(e.to_string().contains("is not a GUID"), "{e}");
        assert_eq!(object_id(&hostile).unwrap_err(), e);
        assert_eq!(parse_user(&serde_json::json!({"mail": "a@b.c"})), Ok(None));
    }

    #[test]
    fn truncated_and_invalid_pages_are_explained() {
        assert!(
            parse_page(br#"{"value":[{"id":"a"#)
                .unwrap_err()
                .contains("cut short")
        );
        assert!(
            parse_page(b"<html>")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse_page(br#"{"error":{}}"#)
                .unwrap_err()
                .contains("no \"value\"")
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever Graph sends, parsing a page or a user never panics.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_page(&bytes);
            let _ = parse_page_of::<Member>(&bytes);
            let _ = parse_error(&bytes);
        }

        #[test]
        fn any_json_values_as_users_never_panic(
            id in proptest::option::of("[0-9a-fA-F-]{0,40}"),
            mail in proptest::option::of("\\PC{0,64}"),
            phones in proptest::collection::vec("\\PC{0,16}", 0..3),
            enabled in proptest::option::of(any::<bool>()),
        ) {
            let v = serde_json::json!({
                "@odata.type": "#microsoft.graph.user",
                "id": id, "mail": mail, "businessPhones": phones, "accountEnabled": enabled,
                "userPrincipalName": 7, "givenName": ["x"], "surname": {"a": 1},
            });
            let _ = parse_user(&v);
            let page = serde_json::json!({"value": [v]}).to_string();
            let _ = parse_page(page.as_bytes());
            let typed = parse_page_of::<Member>(page.as_bytes());
            let member = typed.unwrap().value.pop().unwrap();
            prop_assert_eq!(member.into_user(), parse_user(&v));
        }
    }
}
