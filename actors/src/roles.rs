//! Who runs a room: each membership carries a role. The creator of a group
//! room is its `owner`; the owner names `admin`s; everyone else is a
//! `member`. DM rooms have no owner (both sides are members).
//!
//! What each role may do lives here, in one place, so the room actor, the
//! REST handlers and the line commands agree.

use serde::{Deserialize, Serialize};

use crate::frames::ChatError;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The role stored as `text`; an unknown word reads as `member` (the
    /// least it can grant).
    pub fn from_stored(text: &str) -> Self {
        Self::parse(text).unwrap_or(Role::Member)
    }

    /// A role as a client names it.
    pub fn parse(text: &str) -> Result<Self, ChatError> {
        match text {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(ChatError::bad_request(format!(
                "unknown role {other:?}: owner, admin or member"
            ))),
        }
    }

    /// May change the topic, kick members, delete and pin others' messages.
    pub fn moderates(self) -> bool {
        self >= Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes_and_refuses_the_rest() {
        for role in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").is_err());
        assert_eq!(Role::from_stored("bogus"), Role::Member);
        assert!(Role::Owner.moderates() && Role::Admin.moderates() && !Role::Member.moderates());
    }
}
