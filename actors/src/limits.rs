//! Limits and validation of what clients send (usernames, room names, bodies).

use serde::{Deserialize, Serialize};

use crate::frames::{ChatError, ErrorCode};

/// Configurable protocol limits (`[limits]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame accepted, in bytes; larger ones close with 1009.
    pub max_frame_bytes: usize,
    /// Longest message body, in characters.
    pub max_body_chars: usize,
    /// Longest `client_id`, in characters.
    pub max_client_id_chars: usize,
    /// Frames queued for one connection before it is closed as a slow consumer (4008).
    pub outbound_queue: usize,
    /// Bytes queued for one connection (from push until written to its
    /// socket) before it is closed as a slow consumer (4008).
    pub outbound_queue_bytes: usize,
    /// Messages a user may send per second, sustained.
    pub messages_per_second: f64,
    /// Messages a user may send in a burst.
    pub message_burst: u32,
    /// Login attempts per minute, per username and per address.
    pub logins_per_minute: u32,
    /// Recent `client_id`s per room kept for idempotent retries.
    pub dedupe_window: usize,
    /// Only admins may `broadcast`.
    pub broadcast_admin_only: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_body_chars: 4000,
            max_client_id_chars: 64,
            outbound_queue: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            messages_per_second: 50.0,
            message_burst: 200,
            logins_per_minute: 10,
            dedupe_window: 10_000,
            broadcast_admin_only: false,
        }
    }
}

fn valid_chars(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `^[a-zA-Z0-9_.-]{3,32}$`
pub fn check_username(name: &str) -> Result<(), ChatError> {
    if (3..=32).contains(&name.len()) && valid_chars(name) {
        Ok(())
    } else {
        Err(ChatError::bad_request(
            "username must be 3-32 characters of a-z A-Z 0-9 _ . -",
        ))
    }
}

/// `^[a-zA-Z0-9_.-]{1,64}$`: the names users may give rooms.
pub fn check_room_name(name: &str) -> Result<(), ChatError> {
    if (1..=64).contains(&name.len()) && valid_chars(name) {
        Ok(())
    } else {
        Err(ChatError::bad_request(
            "room name must be 1-64 characters of a-z A-Z 0-9 _ . -",
        ))
    }
}

/// A room a client may address: a user room, a DM room or the broadcast room.
pub fn check_room_ref(name: &str) -> Result<(), ChatError> {
    if name == crate::room::BROADCAST_ROOM || crate::room::dm_members(name).is_some() {
        Ok(())
    } else {
        check_room_name(name)
    }
}

impl Limits {
    pub fn check_body(&self, body: &str) -> Result<(), ChatError> {
        if body.is_empty() {
            return Err(ChatError::bad_request("body must not be empty"));
        }
        let chars = body.chars().count();
        if chars > self.max_body_chars {
            return Err(ChatError::new(
                ErrorCode::TooLarge,
                format!(
                    "body has {chars} characters, the limit is {}",
                    self.max_body_chars
                ),
            ));
        }
        Ok(())
    }

    pub fn check_client_id(&self, client_id: &str) -> Result<(), ChatError> {
        let chars = client_id.chars().count();
        if chars == 0 {
            return Err(ChatError::bad_request("client_id must not be empty"));
        }
        if chars > self.max_client_id_chars {
            return Err(ChatError::new(
                ErrorCode::TooLarge,
                format!(
                    "client_id has {chars} characters, the limit is {}",
                    self.max_client_id_chars
                ),
            ));
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_username("ann").is_ok());
        assert!(check_username("an").is_err());
        assert!(check_username("a b c").is_err());
        assert!(check_username(&"x".repeat(33)).is_err());
        assert!(check_room_name("general.1-x_y").is_ok());
        assert!(check_room_name("").is_err());
        assert!(check_room_name("dm:a:b").is_err());
        assert!(check_room_ref("dm:ann:bob").is_ok());
        assert!(
            check_room_ref("dm:bob:ann").is_err(),
            "unsorted DM names are not canonical"
        );
    }

    #[test]
    fn bodies() {
        let limits = Limits::default();
        assert!(limits.check_body("hi").is_ok());
        assert!(limits.check_body("").is_err());
        assert_eq!(
            limits.check_body(&"é".repeat(4001)).unwrap_err().code,
            ErrorCode::TooLarge
        );
        assert!(limits.check_body(&"é".repeat(4000)).is_ok());
    }
}
