//! sea-orm entities of troupe's schema (see `migration/` for the DDL).
//! Sequence numbers and positions are `u64` in the actors and `i64` here.

pub mod attachment;
pub mod block;
pub mod checkpoint;
pub mod event;
pub mod friendship;
pub mod log_record;
pub mod membership;
pub mod message;
pub mod notification;
pub mod room;
pub mod user;
