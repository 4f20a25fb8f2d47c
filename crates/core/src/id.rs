//! The names the sync compares: Entra object ids (parsed GUIDs), and emails and usernames, which
//! compare case-insensitively (SPEC 3, 4.8).
//!
//! Plain values; a string that is not a GUID never becomes an [`ObjectId`], so nothing else has
//! to check again.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// An Entra object id (user or group): a GUID, shown and stored in lower case. Ordered like its
/// lower-case text, which is the "smaller group id" of SPEC 4.2.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(Uuid);

/// The text that was not a GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAGuid(pub String);

impl fmt::Display for NotAGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" is not a GUID", self.0.escape_debug())
    }
}

impl std::error::Error for NotAGuid {}

impl ObjectId {
    /// The hyphenated form (`11111111-2222-…`, any case, blanks around it ignored) and nothing
    /// else: no braces, no `urn:uuid:`, no bare hex.
    pub fn parse(text: &str) -> Result<ObjectId, NotAGuid> {
        let trimmed = text.trim();
        match Uuid::try_parse(trimmed) {
            Ok(uuid) if trimmed.len() == uuid::fmt::Hyphenated::LENGTH => Ok(ObjectId(uuid)),
            _ => Err(NotAGuid(text.chars().take(80).collect())),
        }
    }

    /// The id whose 128 bits are `n`: for tests and generated tenants.
    pub const fn from_u128(n: u128) -> ObjectId {
        ObjectId(Uuid::from_u128(n))
    }

    /// Its lower-case text in `buf`, without allocating (for SQL parameters on hot paths).
    pub fn encode<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for ObjectId {
    type Err = NotAGuid;
    fn from_str(s: &str) -> Result<ObjectId, NotAGuid> {
        ObjectId::parse(s)
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 36];
        serializer.serialize_str(self.encode(&mut buf))
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ObjectId, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        ObjectId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Text compared as SPEC 3 compares emails: case-insensitively, blanks around it ignored.
/// Kept folded (lower case, trimmed), so comparing and hashing are plain string operations.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Folded(Box<str>);

impl Folded {
    fn new(text: &str) -> Folded {
        let trimmed = text.trim();
        if trimmed
            .bytes()
            .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
        {
            Folded(trimmed.to_lowercase().into())
        } else {
            Folded(trimmed.into())
        }
    }
}

macro_rules! case_insensitive {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Folded);

        impl $name {
            pub fn new(text: &str) -> $name {
                $name(Folded::new(text))
            }

            /// The text as compared: trimmed, lower case.
            pub fn as_str(&self) -> &str {
                &self.0.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
    };
}

case_insensitive!(
    /// An email address; `Ada@Contoso.com` and `ada@contoso.com` are the same address.
    Email
);
case_insensitive!(
    /// An employee username, unique across all employees regardless of case (SPEC 4.8).
    Username
);

/// A readable stand-in id for tests: `named("ga") < named("gb")`, as their names order.
#[cfg(test)]
pub(crate) fn named(name: &str) -> ObjectId {
    let mut bytes = [0u8; 16];
    for (b, c) in bytes.iter_mut().zip(name.bytes()) {
        *b = c;
    }
    ObjectId::from_u128(u128::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn object_ids_are_hyphenated_guids_in_any_case_and_print_lower_case() {
        let id = ObjectId::parse(" 11111111-AAAA-4bbb-8ccc-0123456789AB ").unwrap();
        assert_eq!(id.to_string(), "11111111-aaaa-4bbb-8ccc-0123456789ab");
        for bad in [
            "",
            "u1",
            "11111111aaaa4bbb8ccc0123456789ab",
            "{11111111-aaaa-4bbb-8ccc-0123456789ab}",
            "urn:uuid:11111111-aaaa-4bbb-8ccc-0123456789ab",
            "632f6bb2-3ec8-4c1f-9073-0027a8c6859",
            "x/../../../users/someone?$select=signInActivity#",
        ] {
            assert!(ObjectId::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"11111111-aaaa-4bbb-8ccc-0123456789ab\"");
        assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ObjectId>("\"nope\"").is_err());
    }

    #[test]
    fn object_ids_order_like_their_lower_case_text() {
        let mut ids: Vec<ObjectId> = [
            "b0000000-0000-0000-0000-000000000000",
            "A0000000-0000-0000-0000-00000000000f",
            "0a000000-0000-0000-0000-000000000000",
        ]
        .iter()
        .map(|s| ObjectId::parse(s).unwrap())
        .collect();
        ids.sort();
        let mut texts: Vec<String> = ids.iter().map(ObjectId::to_string).collect();
        let sorted = texts.clone();
        texts.sort();
        assert_eq!(texts, sorted);
    }

    #[test]
    fn emails_and_usernames_compare_and_hash_without_case_or_surrounding_blanks() {
        assert_eq!(
            Email::new("Ada@Contoso.COM "),
            Email::new("ada@contoso.com")
        );
        assert_ne!(Email::new("ada@contoso.com"), Email::new("ada@contoso.co"));
        assert_eq!(Username::new("ÄDA"), Username::new("äda"));
        let set: HashSet<Email> = [Email::new("A@b.c"), Email::new("a@B.C")].into();
        assert_eq!(set.len(), 1);
        assert_eq!(Email::new(" Ada@X ").as_str(), "ada@x");
        assert!(Username::new("a") < Username::new("B"));
    }
}
