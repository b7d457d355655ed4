//! Friends and blocks: who accepted whom, who waits for an answer, and who
//! refuses to hear from whom. The REST endpoints (`src/gateway/friends.rs`)
//! change them; a Session reads them to push presence to friends and to
//! refuse DMs across a block.
//!
//! A relation is symmetric once accepted; until then it belongs to the one
//! who asked. A block, in either direction, stops DMs and requests between
//! the two users and ends their friendship or pending request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::store::StoreResult;

/// One user's relations, each list sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FriendLists {
    pub friends: Vec<String>,
    /// Requests to this user, waiting for their answer.
    pub incoming: Vec<String>,
    /// This user's requests, waiting for the other's answer.
    pub outgoing: Vec<String>,
}

/// What a friend request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new request, waiting for the other user.
    Requested,
    /// The other user had asked first: now friends.
    Accepted,
    /// The same request was already waiting: nothing changed.
    AlreadyRequested,
    /// Already friends: nothing changed.
    AlreadyFriends,
    /// One of the two blocked the other: nothing changed.
    Blocked,
}

#[async_trait]
pub trait FriendStore: Send + Sync + 'static {
    /// `from` asks `to` (or accepts `to`'s request), in one transaction with
    /// the block check.
    async fn request(&self, from: &str, to: &str, now: i64) -> StoreResult<RequestOutcome>;
    /// Ends whatever is between `a` and `b` (a friendship, or a request in
    /// either direction); false when there was nothing.
    async fn remove(&self, a: &str, b: &str) -> StoreResult<bool>;
    async fn lists(&self, user: &str) -> StoreResult<FriendLists>;
    /// `user`'s accepted friends.
    async fn friends_of(&self, user: &str) -> StoreResult<Vec<String>>;
    /// `blocker` blocks `blocked` and ends what was between them; false
    /// when the block was already there.
    async fn block(&self, blocker: &str, blocked: &str, now: i64) -> StoreResult<bool>;
    /// False when there was no such block.
    async fn unblock(&self, blocker: &str, blocked: &str) -> StoreResult<bool>;
    /// The users `blocker` blocked, sorted.
    async fn blocked_by(&self, blocker: &str) -> StoreResult<Vec<String>>;
    /// Whether either of the two blocked the other.
    async fn blocked_between(&self, a: &str, b: &str) -> StoreResult<bool>;
}

/// The pair as stored: the lower name first.
pub fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// In memory, for the actors' unit tests.
#[derive(Default)]
pub struct MemoryFriends {
    inner: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// (low, high) -> (requested_by, accepted).
    pairs: BTreeMap<(String, String), (String, bool)>,
    /// (blocker, blocked).
    blocks: BTreeSet<(String, String)>,
}

impl MemoryState {
    fn blocked_between(&self, a: &str, b: &str) -> bool {
        self.blocks.contains(&(a.to_string(), b.to_string()))
            || self.blocks.contains(&(b.to_string(), a.to_string()))
    }
}

fn key(a: &str, b: &str) -> (String, String) {
    let (low, high) = pair(a, b);
    (low.to_string(), high.to_string())
}

impl MemoryFriends {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl FriendStore for MemoryFriends {
    async fn request(&self, from: &str, to: &str, _now: i64) -> StoreResult<RequestOutcome> {
        let mut s = self.state();
        if s.blocked_between(from, to) {
            return Ok(RequestOutcome::Blocked);
        }
        let entry = s.pairs.get_mut(&key(from, to));
        Ok(match entry {
            None => {
                s.pairs.insert(key(from, to), (from.to_string(), false));
                RequestOutcome::Requested
            }
            Some((_, true)) => RequestOutcome::AlreadyFriends,
            Some((by, false)) if by == from => RequestOutcome::AlreadyRequested,
            Some((_, accepted)) => {
                *accepted = true;
                RequestOutcome::Accepted
            }
        })
    }

    async fn remove(&self, a: &str, b: &str) -> StoreResult<bool> {
        Ok(self.state().pairs.remove(&key(a, b)).is_some())
    }

    async fn lists(&self, user: &str) -> StoreResult<FriendLists> {
        let s = self.state();
        let mut lists = FriendLists::default();
        for ((low, high), (by, accepted)) in &s.pairs {
            let other = if low == user {
                high
            } else if high == user {
                low
            } else {
                continue;
            };
            let list = match (accepted, by == user) {
                (true, _) => &mut lists.friends,
                (false, true) => &mut lists.outgoing,
                (false, false) => &mut lists.incoming,
            };
            list.push(other.clone());
        }
        lists.friends.sort();
        lists.incoming.sort();
        lists.outgoing.sort();
        Ok(lists)
    }

    async fn friends_of(&self, user: &str) -> StoreResult<Vec<String>> {
        Ok(self.lists(user).await?.friends)
    }

    async fn block(&self, blocker: &str, blocked: &str, _now: i64) -> StoreResult<bool> {
        let mut s = self.state();
        s.pairs.remove(&key(blocker, blocked));
        Ok(s.blocks.insert((blocker.to_string(), blocked.to_string())))
    }

    async fn unblock(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        Ok(self
            .state()
            .blocks
            .remove(&(blocker.to_string(), blocked.to_string())))
    }

    async fn blocked_by(&self, blocker: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .state()
            .blocks
            .iter()
            .filter(|(b, _)| b == blocker)
            .map(|(_, blocked)| blocked.clone())
            .collect())
    }

    async fn blocked_between(&self, a: &str, b: &str) -> StoreResult<bool> {
        Ok(self.state().blocked_between(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_meets_its_answer_and_a_block_ends_both() {
        let f = MemoryFriends::default();
        assert_eq!(
            f.request("ann", "bob", 1).await.unwrap(),
            RequestOutcome::Requested
        );
        assert_eq!(
            f.request("ann", "bob", 2).await.unwrap(),
            RequestOutcome::AlreadyRequested
        );
        let bob = f.lists("bob").await.unwrap();
        assert_eq!(bob.incoming, ["ann"]);
        assert!(bob.friends.is_empty() && bob.outgoing.is_empty());
        assert_eq!(f.lists("ann").await.unwrap().outgoing, ["bob"]);
        assert_eq!(
            f.request("bob", "ann", 3).await.unwrap(),
            RequestOutcome::Accepted
        );
        assert_eq!(f.friends_of("ann").await.unwrap(), ["bob"]);
        assert_eq!(f.friends_of("bob").await.unwrap(), ["ann"]);
        assert_eq!(
            f.request("ann", "bob", 4).await.unwrap(),
            RequestOutcome::AlreadyFriends
        );
        assert!(f.block("bob", "ann", 5).await.unwrap());
        assert!(!f.block("bob", "ann", 5).await.unwrap());
        assert!(f.friends_of("ann").await.unwrap().is_empty());
        assert!(f.blocked_between("ann", "bob").await.unwrap());
        assert_eq!(
            f.request("ann", "bob", 6).await.unwrap(),
            RequestOutcome::Blocked
        );
        assert_eq!(f.blocked_by("bob").await.unwrap(), ["ann"]);
        assert!(f.unblock("bob", "ann").await.unwrap());
        assert!(!f.blocked_between("bob", "ann").await.unwrap());
        assert!(!f.remove("ann", "bob").await.unwrap());
    }
}
