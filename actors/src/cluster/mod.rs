//! The cluster layer. Rooms and sessions stay local actors; each node runs a
//! handful of cluster actors:
//!
//! ```text
//! Mesh        the ractor_cluster NodeServer, seeds, reconnects, heartbeats,
//!             and the membership every other actor is told about
//! Router      the one remotable actor of a node (pg group "troupe:router:<node>"):
//!             requests for rooms owned here, deliveries for sessions here
//! RoomProxy   per room owned elsewhere and used here: forwards a session's
//!             requests to the owner's router
//! ```
//!
//! Placement: the owner of a room is the rendezvous hash of (room, node) over
//! the live members, so every node computes the same owner from the same view.

pub mod link;
pub mod mesh;
pub mod proxy;
pub mod router;
pub mod wire;

use std::collections::BTreeSet;
use std::sync::Arc;

/// This process's incarnation: a node restarted under the same name is a
/// new incarnation, so news about the old one (it left) does not stick to it.
pub fn incarnation() -> u64 {
    static INCARNATION: std::sync::LazyLock<u64> = std::sync::LazyLock::new(rand::random);
    *INCARNATION
}

/// The pg group of a node's router.
pub fn router_group(node: &str) -> String {
    format!("troupe:router:{node}")
}

/// Who is in the cluster, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub me: Arc<str>,
    /// Live members, this node included (unless it is leaving).
    pub live: BTreeSet<String>,
    /// This node sees a majority of the nodes it knows, and its view has
    /// settled: it may take rooms over.
    pub quorum: bool,
    /// It sees a majority (the view may still be settling after a loss).
    pub majority: bool,
    /// Part of a cluster (leases apply), or a node on its own.
    pub clustered: bool,
}

impl Membership {
    /// A node on its own: it owns every room.
    pub fn alone(me: &str) -> Self {
        Membership {
            me: me.into(),
            live: BTreeSet::from([me.to_string()]),
            quorum: true,
            majority: true,
            clustered: false,
        }
    }

    /// The owner of `room`, or None when no node is live (this one is leaving).
    pub fn owner(&self, room: &str) -> Option<&str> {
        owner(room, self.live.iter().map(String::as_str))
    }

    pub fn owns(&self, room: &str) -> bool {
        self.owner(room) == Some(&*self.me)
    }
}

/// Rendezvous (highest random weight) hashing: the node with the highest
/// score for the room owns it. A node joining takes only the rooms it now
/// scores highest on; a node leaving gives up only its own.
pub fn owner<'a>(room: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| (score(room, node), *node))
}

fn score(room: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes().chain([0xff]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser: FNV alone spreads similar names poorly.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let a = ["n1", "n2", "n3"];
        let b = ["n3", "n1", "n2"];
        for i in 0..200 {
            let room = format!("room-{i}");
            assert_eq!(owner(&room, a), owner(&room, b));
        }
    }

    #[test]
    fn a_joining_node_takes_only_rooms_it_now_owns_and_spreads_them() {
        let before = ["n1", "n2", "n3"];
        let after = ["n1", "n2", "n3", "n4"];
        let mut moved = 0;
        for i in 0..1000 {
            let room = format!("room-{i}");
            let (b, a) = (owner(&room, before), owner(&room, after));
            if b != a {
                assert_eq!(a, Some("n4"), "{room} moved between old nodes");
                moved += 1;
            }
        }
        // About a quarter should move; far from none or all.
        assert!((150..350).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn no_live_node_means_no_owner() {
        assert_eq!(owner("r", std::iter::empty()), None);
    }
}
