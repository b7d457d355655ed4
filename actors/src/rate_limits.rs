//! Rate limits per kind of client action (`[rate_limits]` in the config):
//! one token bucket per kind and user (or client address, before a login),
//! kept in the ephemeral store so that every node of a cluster shares it.
//! A refusal is a `rate_limited` error with `retry_after_ms`, counted in
//! `/metrics` by kind. Messages and logins keep their older `[limits]` keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::frames::{ChatError, ErrorCode};
use crate::store::EphemeralStore;

/// A token bucket: `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Rate { per_second, burst }
    }
}

/// The kinds of action that are rate limited, as `/metrics` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `send`, `dm`, `broadcast` (`limits.messages_per_second`, `limits.message_burst`).
    Message,
    /// Login attempts (`limits.logins_per_minute`).
    Login,
    History,
    Members,
    Who,
    Typing,
    Read,
    Join,
    Leave,
    CreateRoom,
    Invite,
    Register,
    AdminAuth,
    RestRead,
    Search,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Message,
        Kind::Login,
        Kind::History,
        Kind::Members,
        Kind::Who,
        Kind::Typing,
        Kind::Read,
        Kind::Join,
        Kind::Leave,
        Kind::CreateRoom,
        Kind::Invite,
        Kind::Register,
        Kind::AdminAuth,
        Kind::RestRead,
        Kind::Search,
    ];

    /// The `kind` label and the `[rate_limits]` key.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Login => "login",
            Kind::History => "history",
            Kind::Members => "members",
            Kind::Who => "who",
            Kind::Typing => "typing",
            Kind::Read => "read",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::CreateRoom => "create_room",
            Kind::Invite => "invite",
            Kind::Register => "register",
            Kind::AdminAuth => "admin_auth",
            Kind::RestRead => "rest_read",
            Kind::Search => "search",
        }
    }

    /// What the refusal's message calls the action.
    fn what(self) -> &'static str {
        match self {
            Kind::Message => "messages",
            Kind::Login => "login attempts",
            Kind::History => "history requests",
            Kind::Members => "members requests",
            Kind::Who => "who requests",
            Kind::Typing => "typing notices",
            Kind::Read => "read receipts",
            Kind::Join => "joins",
            Kind::Leave => "leaves",
            Kind::CreateRoom => "rooms created",
            Kind::Invite => "invitations",
            Kind::Register => "registrations from your address",
            Kind::AdminAuth => "failed admin requests from your address",
            Kind::RestRead => "requests",
            Kind::Search => "searches",
        }
    }

    /// What happens while the store cannot say: actions of a logged-in user
    /// go through (chat keeps working, as sends always did); account
    /// creation is refused, like logins.
    fn allowed_when_store_down(self) -> bool {
        !matches!(self, Kind::Login | Kind::Register)
    }
}

/// `[rate_limits]`: one bucket per kind and user (`register` and
/// `admin_auth`: per client address). Defaults no normal client reaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// `history` frames and `GET /api/v1/rooms/{room}/messages`.
    pub history: Rate,
    /// `members` frames.
    pub members: Rate,
    /// `who` frames.
    pub who: Rate,
    /// `typing` frames.
    pub typing: Rate,
    /// `read` frames (read receipts).
    pub read: Rate,
    /// `join` frames.
    pub join: Rate,
    /// `leave` frames.
    pub leave: Rate,
    /// `POST /api/v1/rooms` and `/group_create`.
    pub create_room: Rate,
    /// `invite` frames and `POST /api/v1/rooms/{room}/members`.
    pub invite: Rate,
    /// `POST /api/v1/register` and `/register`, per client address.
    pub register: Rate,
    /// Admin requests with a wrong or missing token, per client address.
    pub admin_auth: Rate,
    /// The other REST reads (`GET /api/v1/rooms`, `GET /api/v1/users/online`).
    pub rest_read: Rate,
    /// `GET /api/v1/search` and `/search`.
    pub search: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            history: Rate::new(10.0, 30),
            members: Rate::new(10.0, 30),
            who: Rate::new(5.0, 30),
            typing: Rate::new(10.0, 30),
            read: Rate::new(20.0, 60),
            join: Rate::new(10.0, 50),
            leave: Rate::new(10.0, 50),
            create_room: Rate::new(1.0, 10),
            invite: Rate::new(5.0, 30),
            register: Rate::new(0.1, 20),
            admin_auth: Rate::new(0.1, 10),
            rest_read: Rate::new(10.0, 50),
            search: Rate::new(2.0, 20),
        }
    }
}

impl RateLimits {
    /// The configured rate of `kind` (None for messages and logins, which
    /// `[limits]` configures).
    pub fn rate(&self, kind: Kind) -> Option<Rate> {
        Some(match kind {
            Kind::Message | Kind::Login => return None,
            Kind::History => self.history,
            Kind::Members => self.members,
            Kind::Who => self.who,
            Kind::Typing => self.typing,
            Kind::Read => self.read,
            Kind::Join => self.join,
            Kind::Leave => self.leave,
            Kind::CreateRoom => self.create_room,
            Kind::Invite => self.invite,
            Kind::Register => self.register,
            Kind::AdminAuth => self.admin_auth,
            Kind::RestRead => self.rest_read,
            Kind::Search => self.search,
        })
    }

    /// The first key that is not a usable bucket, and why.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        for kind in Kind::ALL {
            if let Some(rate) = self.rate(kind) {
                if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
                    return Err((
                        format!("rate_limits.{}", kind.name()),
                        "per_second must be positive and burst at least 1",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Takes one `kind` action of `subject` (`user:NAME` or `addr:IP`).
    pub async fn check(
        &self,
        store: &dyn EphemeralStore,
        kind: Kind,
        subject: &str,
    ) -> Result<(), ChatError> {
        self.take_from(store, kind, subject, 1).await
    }

    /// Whether `kind` has a token left for `subject`, without taking it
    /// (before checking an admin token: a limited address may not guess).
    pub async fn peek(
        &self,
        store: &dyn EphemeralStore,
        kind: Kind,
        subject: &str,
    ) -> Result<(), ChatError> {
        self.take_from(store, kind, subject, 0).await
    }

    async fn take_from(
        &self,
        store: &dyn EphemeralStore,
        kind: Kind,
        subject: &str,
        cost: u32,
    ) -> Result<(), ChatError> {
        let Some(rate) = self.rate(kind) else {
            return Ok(());
        };
        let key = format!("{}:{subject}", kind.name());
        take(store, kind, &key, rate, cost).await
    }
}

/// Takes `cost` units (0: only looks) from the bucket `key` of `kind`:
/// `rate_limited` with the wait when it holds too few, counted by kind.
pub async fn take(
    store: &dyn EphemeralStore,
    kind: Kind,
    key: &str,
    rate: Rate,
    cost: u32,
) -> Result<(), ChatError> {
    match store
        .rate_limit(key, rate.burst, rate.per_second, cost)
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(wait)) => Err(refused(kind, wait)),
        Err(e) if kind.allowed_when_store_down() => {
            tracing::warn!(kind = kind.name(), error = %e, "rate limit unavailable; allowing");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(kind = kind.name(), error = %e, "rate limit unavailable; refusing");
            Err(ChatError::unavailable(
                "the rate-limit store is unavailable, retry",
            ))
        }
    }
}

/// The `rate_limited` error for `kind`, retry after `wait`; counted.
pub fn refused(kind: Kind, wait: Duration) -> ChatError {
    crate::metrics::RATE_LIMITED
        .get_or_create(&[("kind", kind.name())])
        .inc();
    // Whole milliseconds, rounded up: retrying after it always finds a token.
    let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1);
    ChatError::new(
        ErrorCode::RateLimited,
        format!(
            "too many {}; retry in {:.1} s",
            kind.what(),
            ms as f64 / 1000.0
        ),
    )
    .retry_after(ms)
}

/// Refusals of `kind` so far (`troupe_rate_limited_total{kind}`).
#[cfg(test)]
fn refusals(kind: Kind) -> u64 {
    crate::metrics::RATE_LIMITED
        .get_or_create(&[("kind", kind.name())])
        .get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryEphemeral;

    #[tokio::test]
    async fn a_refusal_says_when_to_retry_and_is_counted() {
        let store = MemoryEphemeral::default();
        let limits = RateLimits {
            history: Rate::new(2.0, 2),
            ..RateLimits::default()
        };
        let before = refusals(Kind::History);
        assert!(limits.check(&store, Kind::History, "user:a").await.is_ok());
        assert!(limits.check(&store, Kind::History, "user:a").await.is_ok());
        let e = limits
            .check(&store, Kind::History, "user:a")
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        let ms = e.retry_after_ms.expect("a retry_after_ms");
        assert!((1..=500).contains(&ms), "{ms}");
        assert!(refusals(Kind::History) > before);
        // Another user, another bucket; another kind, another bucket.
        assert!(limits.check(&store, Kind::History, "user:b").await.is_ok());
        assert!(limits.check(&store, Kind::Who, "user:a").await.is_ok());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        assert!(limits.check(&store, Kind::History, "user:a").await.is_ok());
    }

    #[tokio::test]
    async fn a_peek_takes_nothing() {
        let store = MemoryEphemeral::default();
        let limits = RateLimits {
            admin_auth: Rate::new(0.001, 1),
            ..RateLimits::default()
        };
        for _ in 0..3 {
            assert!(limits.peek(&store, Kind::AdminAuth, "addr:x").await.is_ok());
        }
        assert!(limits
            .check(&store, Kind::AdminAuth, "addr:x")
            .await
            .is_ok());
        assert!(limits
            .peek(&store, Kind::AdminAuth, "addr:x")
            .await
            .is_err());
    }

    #[test]
    fn defaults_are_valid_and_a_zero_burst_is_not() {
        assert!(RateLimits::default().validate().is_ok());
        let bad = RateLimits {
            typing: Rate::new(1.0, 0),
            ..RateLimits::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "rate_limits.typing");
    }
}
