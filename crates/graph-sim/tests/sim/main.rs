//! graph-sim's behaviour, one module per part of the service it stands in for, all in one test
//! binary: Microsoft's own example bodies, the token endpoint, paging, `$select`, delta rounds,
//! JSON batching, fault injection and the simulated tenant itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batch;
mod delta;
mod faults;
mod fixtures;
mod paging;
mod select;
mod support;
mod tenant;
mod token;
