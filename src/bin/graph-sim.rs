//! graph-sim binary (being built).

fn main() {}
