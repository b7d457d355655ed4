//! Accounts: registration, login and logout; scrypt password hashes (PHC
//! strings), random expiring tokens, and login rate limits.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use scrypt::{Params, Scrypt};
use serde::Serialize;
use tokio::sync::Semaphore;
use troupe_actors::frames::{ChatError, ErrorCode};
use troupe_actors::limits::{check_username, now_ms, Limits};
use troupe_actors::rate_limits::{self, Kind, Rate};
use troupe_actors::session::new_token;
use troupe_actors::store::events::DomainEvent;
use troupe_actors::store::{StoreError, Stores, TokenInfo, UserRecord};

pub const MIN_PASSWORD_CHARS: usize = 6;
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// The answer to a successful login.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Login {
    /// The session token: `Authorization: Bearer <token>`, or the `auth` frame.
    pub token: String,
    /// When it expires, in Unix milliseconds.
    pub expires_at: i64,
    pub user_id: i64,
    pub username: String,
}

#[derive(Clone)]
pub struct Accounts {
    stores: Stores,
    params: Params,
    /// scrypt is CPU- and memory-hungry: a few at a time, on the blocking pool.
    hashing: Arc<Semaphore>,
    token_ttl: Duration,
    limits: Limits,
    /// Verified when the user does not exist, so both cases take as long.
    dummy_hash: Arc<String>,
}

/// A new password's length, in characters.
pub fn check_password(password: &str) -> Result<(), ChatError> {
    let chars = password.chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        Ok(())
    } else {
        Err(ChatError::bad_request(format!(
            "password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters"
        )))
    }
}

fn store_error(e: StoreError) -> ChatError {
    match e {
        StoreError::Conflict(what) => {
            ChatError::new(ErrorCode::Conflict, format!("{what} already exists"))
        }
        e => ChatError::unavailable(e.to_string()),
    }
}

impl Accounts {
    pub fn new(
        stores: Stores,
        log_n: u8,
        max_hashes: usize,
        token_ttl: Duration,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let params = Params::new(log_n, 8, 1, Params::RECOMMENDED_LEN)
            .map_err(|e| anyhow::anyhow!("invalid scrypt parameters: {e}"))?;
        let salt = SaltString::generate(&mut OsRng);
        let dummy_hash = Scrypt
            .hash_password_customized(b"not a password", None, None, params, &salt)
            .map_err(|e| anyhow::anyhow!("scrypt: {e}"))?
            .to_string();
        Ok(Self {
            stores,
            params,
            hashing: Arc::new(Semaphore::new(max_hashes)),
            token_ttl,
            limits,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    async fn hash(&self, password: String) -> Result<String, ChatError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ChatError::unavailable("shutting down"))?;
        let params = self.params;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Scrypt
                .hash_password_customized(password.as_bytes(), None, None, params, &salt)
                .map(|h| h.to_string())
        })
        .await
        .map_err(|_| ChatError::unavailable("hashing failed"))?
        .map_err(|e| ChatError::unavailable(format!("hashing failed: {e}")))
    }

    async fn verify(&self, password: String, hash: String) -> Result<bool, ChatError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ChatError::unavailable("shutting down"))?;
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Scrypt.verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(|_| ChatError::unavailable("verifying failed"))
    }

    pub async fn register(&self, username: &str, password: &str) -> Result<UserRecord, ChatError> {
        check_username(username)?;
        check_password(password)?;
        // Cheap check first, so a taken name costs no hash (the insert still decides).
        if self
            .stores
            .directory
            .find_user(username)
            .await
            .map_err(store_error)?
            .is_some()
        {
            return Err(ChatError::new(
                ErrorCode::Conflict,
                format!("username {username} is taken"),
            ));
        }
        let hash = self.hash(password.to_string()).await?;
        let user = self
            .stores
            .directory
            .create_user(username, &hash)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    ChatError::new(ErrorCode::Conflict, format!("username {username} is taken"))
                }
                e => store_error(e),
            })?;
        self.stores.events.publish(DomainEvent::new(
            "user.registered",
            &user.username,
            serde_json::json!({ "user": user.username }),
        ));
        Ok(user)
    }

    /// Attempts per account (every attempt counts: a password guesser on
    /// many addresses), and failures per address (only wrong passwords
    /// count, so that people behind one NAT who log in fine never lock each
    /// other out). An address with no failures left is refused before its
    /// password is checked. Refused while the store cannot say.
    async fn allow_login(&self, username: &str, addr: IpAddr) -> Result<(), ChatError> {
        let rate = self.login_rate();
        rate_limits::take(
            &*self.stores.ephemeral,
            Kind::Login,
            &login_addr_key(addr),
            rate,
            0,
        )
        .await?;
        // One budget per account, whatever the case of the attempts.
        let user_key = format!("login:user:{}", username.to_ascii_lowercase());
        rate_limits::take(&*self.stores.ephemeral, Kind::Login, &user_key, rate, 1).await
    }

    /// A wrong password from `addr` spends one of its failures.
    async fn count_failure(&self, addr: IpAddr) {
        let rate = self.login_rate();
        let key = login_addr_key(addr);
        if let Err(e) = self
            .stores
            .ephemeral
            .rate_limit(&key, rate.burst, rate.per_second, 1)
            .await
        {
            tracing::warn!(error = %e, "could not count a failed login");
        }
    }

    fn login_rate(&self) -> Rate {
        let burst = self.limits.logins_per_minute;
        Rate::new(burst as f64 / 60.0, burst)
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<Login, ChatError> {
        self.allow_login(username, addr).await?;
        let bad = || ChatError::new(ErrorCode::Unauthorized, "wrong username or password");
        let user = self
            .stores
            .directory
            .find_user(username)
            .await
            .map_err(store_error)?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let ok = self.verify(password.to_string(), hash).await?;
        let user = match user {
            Some(user) if ok => user,
            _ => {
                self.count_failure(addr).await;
                return Err(bad());
            }
        };
        let token = new_token(32);
        let expires_at = now_ms() + self.token_ttl.as_millis() as i64;
        let info = TokenInfo {
            user_id: user.id,
            username: user.username.clone(),
            expires_at,
            parent: None,
        };
        self.stores
            .ephemeral
            .put_token(&token, &info)
            .await
            .map_err(store_error)?;
        Ok(Login {
            token,
            expires_at,
            user_id: user.id,
            username: user.username,
        })
    }

    pub async fn logout(&self, token: &str) -> Result<(), ChatError> {
        self.authenticate(token).await?;
        self.stores
            .ephemeral
            .revoke_token(token)
            .await
            .map_err(store_error)
    }

    /// The owner of a login token.
    pub async fn authenticate(&self, token: &str) -> Result<TokenInfo, ChatError> {
        match self.stores.ephemeral.token(token).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(ChatError::new(
                ErrorCode::Unauthorized,
                "unknown, expired or revoked token",
            )),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The owner of a resume token, as long as the login it came from is valid.
    pub async fn authenticate_resume(&self, token: &str) -> Result<TokenInfo, ChatError> {
        let info = self.resume_owner(token).await?;
        if let Some(parent) = &info.parent {
            self.authenticate(parent).await.map_err(|e| {
                if e.code == ErrorCode::Unauthorized {
                    ChatError::new(ErrorCode::Unauthorized, "that session was logged out")
                } else {
                    e
                }
            })?;
        }
        Ok(info)
    }

    async fn resume_owner(&self, token: &str) -> Result<TokenInfo, ChatError> {
        let key = format!("{}{token}", troupe_actors::session::RESUME_PREFIX);
        self.authenticate(&key).await.map_err(|e| {
            if e.code == ErrorCode::Unauthorized {
                ChatError::new(ErrorCode::Unauthorized, "unknown or expired resume token")
            } else {
                e
            }
        })
    }
}

/// The bucket of failed logins from one address.
fn login_addr_key(addr: IpAddr) -> String {
    format!("login:addr:{addr}")
}
