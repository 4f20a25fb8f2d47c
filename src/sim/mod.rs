//! graph-sim: a simulated Microsoft identity platform + Graph v1.0 tenant (being built).
