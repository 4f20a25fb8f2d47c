//! End-to-end tests: graph-sim in-process, the real `entra-sync` binary, a temporary store.
//! One module per part of the SPEC.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod cli;
mod daemon;
mod explain;
mod histories;
mod hostile;
mod incremental;
mod over_time;
mod plans;
mod safety;
mod service;
mod spec4;
mod support;
mod trust;
