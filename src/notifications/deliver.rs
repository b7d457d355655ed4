//! The delivery worker every node runs: claims due notifications from the
//! outbox, POSTs each to the webhook with its signature, and marks it
//! delivered or schedules the next attempt (exponential backoff, up to
//! `max_attempts`). A claim lasts the POST's timeout and a margin, so a row
//! whose node died is claimed again by another (or the restarted) node.

use std::sync::Arc;
use std::time::Duration;

use troupe_actors::limits::now_ms;

use super::{signature, ID_HEADER, NODE_HEADER, SIGNATURE_HEADER};
use crate::stores::notifications::Claimed;
use crate::stores::sql::SqlStore;

/// Notifications claimed at once at most.
const BATCH: u64 = 32;
/// What a claim lasts beyond the POST's timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

pub struct Worker {
    pub node: String,
    pub url: String,
    pub secret: String,
    pub outbox: SqlStore,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub poll: Duration,
    pub wake: Arc<tokio::sync::Notify>,
}

impl Worker {
    /// The webhook without what may be a secret (user info, query).
    pub fn url_for_log(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(mut url) => {
                let _ = url.set_password(None);
                let _ = url.set_username("");
                url.set_query(None);
                url.to_string()
            }
            Err(_) => "<invalid>".into(),
        }
    }

    /// The wait before attempt `attempts + 1`.
    fn backoff_after(&self, attempts: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
    }

    pub async fn run(self) {
        let client = match reqwest::Client::builder().timeout(self.timeout).build() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client: offline notifications are off");
                return;
            }
        };
        loop {
            let now = now_ms();
            let until = now + (self.timeout + CLAIM_MARGIN).as_millis() as i64;
            let claimed = self
                .outbox
                .claim_notifications(&self.node, now, until, BATCH)
                .await;
            let full = match claimed {
                Ok(batch) => {
                    let full = batch.len() as u64 == BATCH;
                    for n in batch {
                        self.deliver(&client, n).await;
                    }
                    full
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the notification outbox");
                    false
                }
            };
            if !full {
                let _ = tokio::time::timeout(self.poll, self.wake.notified()).await;
            }
        }
    }

    async fn deliver(&self, client: &reqwest::Client, n: Claimed) {
        let id = format!("{}:{}:{}", n.user, n.room, n.seq);
        let sent = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.secret, n.body.as_bytes()))
            .header(ID_HEADER, &id)
            .header(NODE_HEADER, &self.node)
            .body(n.body.clone())
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the webhook answered {}", r.status())),
            Err(e) => Some(format!("the webhook did not answer: {e}")),
        };
        let now = now_ms();
        let marked = match failure {
            None => {
                tracing::debug!(%id, attempts = n.attempts, "notification delivered");
                self.outbox
                    .notification_delivered(&n, &self.node, now)
                    .await
            }
            Some(error) => {
                let retry_at = (n.attempts < self.max_attempts)
                    .then(|| now + self.backoff_after(n.attempts).as_millis() as i64);
                if retry_at.is_some() {
                    tracing::info!(%id, attempts = n.attempts, %error, "notification not delivered yet");
                } else {
                    tracing::warn!(%id, attempts = n.attempts, %error, "notification given up");
                }
                self.outbox
                    .notification_failed(&n, &self.node, now, retry_at, &error)
                    .await
            }
        };
        if let Err(e) = marked {
            // The claim runs out and the row is tried again (same id).
            tracing::warn!(%id, error = %e, "cannot record a notification's outcome");
        }
    }
}
