//! troupe's actors: the node supervisor, rooms, sessions and presence, the
//! messages they exchange, and the store traits they depend on.
//!
//! ```text
//! NodeSupervisor
//!  |- Presence                         local sessions by user, last seen
//!  |- RoomSupervisor -> Room(name)*    one per active room
//!  `- SessionSupervisor -> Session*    one per authenticated connection
//! ```

pub mod cluster;
pub mod frames;
pub mod inspect;
pub mod life;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod presence;
pub mod rate_limits;
pub mod roles;
pub mod room;
pub mod session;
pub mod store;

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

use frames::ChatError;

/// How long an actor waits for another before answering `unavailable`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls an actor and maps every failure (dead actor, timeout) to `unavailable`.
pub async fn ask<M, T>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, ChatError>
where
    M: Message,
    T: Send + 'static,
{
    match actor.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(ChatError::unavailable("the node is busy, retry")),
        Ok(CallResult::SenderError) | Err(_) => {
            Err(ChatError::unavailable("the actor restarted, retry"))
        }
    }
}
