//! troupe-bench: a load generator speaking troupe's wire protocol (and the raw
//! frames of the bare broadcast baseline) over real WebSockets on loopback.
//! See `benches/README.md`.

pub mod cli;
pub mod cluster;
pub mod coldrooms;
pub mod connections;
pub mod failover;
pub mod load;
pub mod net;
pub mod plot;
pub mod proto;
pub mod report;
pub mod sys;
