//! The decision core of entra-sync: what a tenant's directory means for the PSA store, with no
//! I/O, no clock and no failure.
//!
//! - [`id`]: object ids (parsed GUIDs), emails and usernames (case-insensitive).
//! - [`directory`]: a tenant's Entra directory at one moment ([`directory::Snapshot`]).
//! - [`rules`]: the mapping rules of a tenant.
//! - [`record`]: PSA records, their columns and diffs.
//! - [`resolve`]: scope, precedence and field mapping → the record each user should become.
//! - [`plan`]: matching with the store's records → the changes of one run, the safety hold.
//! - [`explain`]: why one person is what the store says (`entra-sync explain`).
//! - [`run`]: what a run is (mode, status, counts) and the choices that frame it: which users
//!   a `--user` run means, what to resolve when Entra brought nothing new.
//!
//! Time arrives as a parameter; the store arrives as a [`plan::StoreView`]. This crate's manifest
//! lists no async runtime, HTTP client, database or clock: it cannot do I/O.

pub mod directory;
pub mod explain;
pub mod id;
pub mod plan;
pub mod record;
pub mod resolve;
pub mod rules;
pub mod run;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use id::{Email, NotAGuid, ObjectId, Username};
