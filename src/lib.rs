//! entra-sync: pull-based directory sync from Microsoft Entra ID security groups into a PSA
//! store (employees, client-portal contacts, read-only groups) in SQLite.
//!
//! Data flows one way: [`graph`] → [`entra_sync_core::resolve`] → [`entra_sync_core::plan`] →
//! [`apply`] → [`store`], driven by [`sync`]. The decisions live in the [`entra_sync_core`]
//! crate, which does no I/O; this crate reads Graph, the config and the store, and writes.
//! See ARCHITECTURE.md for the map.

pub mod admin;
pub mod apply;
pub mod auth;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod demo;
pub mod graph;
pub mod health;
pub mod narrow;
pub mod phase;
pub mod planfile;
pub mod refresh;
pub mod schedule;
pub mod secret;
pub mod store;
pub mod sync;
