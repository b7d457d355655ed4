//! Domain events for other services: what happened in the chat (a user
//! registered, came online, joined a room, befriended someone, edited a
//! message), as JSON, published to `kafka.events_topic` on real stores or to
//! the `events` table on the embedded default (read back with
//! `GET /api/v1/events`). The schema is in docs/events.md.
//!
//! Publishing never slows chat down: [`EventQueue`] takes events into a
//! bounded queue and one task writes them to the sink in batches, retrying
//! with backoff while it fails. Each event carries a random 128-bit `id`; a
//! retried batch may reach Kafka twice, so consumers deduplicate on it (the
//! table does so itself). A node that dies loses what was still queued.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::store::StoreResult;

/// One event. `type`, `id`, `ts` and `key` are on every event; the rest
/// depends on the type (see docs/events.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainEvent {
    /// 32 hex characters, unique per event.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened, in ms since the epoch.
    pub ts: i64,
    /// What orders it: the room for room events, else the user (the Kafka
    /// record key, so one room's or one user's events stay in order).
    pub key: String,
    /// The type's own fields (docs/events.md): any other properties.
    #[serde(flatten)]
    #[schema(ignore)]
    pub data: Map<String, Value>,
}

impl DomainEvent {
    /// A new event of `kind` keyed by `key`, with `fields` (an object).
    pub fn new(kind: &str, key: &str, fields: Value) -> Self {
        let data = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        DomainEvent {
            id: format!("{:032x}", rand::random::<u128>()),
            kind: kind.to_string(),
            ts: crate::limits::now_ms(),
            key: key.to_string(),
            data,
        }
    }
}

/// Where events go: the Kafka topic or the events table.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn write(&self, events: &[DomainEvent]) -> StoreResult<()>;
}

/// The events, for the actors: [`EventQueue`] on a node, [`MemoryEvents`]
/// in unit tests. `publish` never waits for the sink.
pub trait Events: Send + Sync + 'static {
    fn publish(&self, event: DomainEvent);
}

/// Keeps every event, for unit tests.
#[derive(Default)]
pub struct MemoryEvents(pub std::sync::Mutex<Vec<DomainEvent>>);

impl Events for MemoryEvents {
    fn publish(&self, event: DomainEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// Events queued at most before new ones are dropped (and counted).
pub const QUEUE: usize = 10_000;
/// Events written to the sink in one call at most.
const BATCH: usize = 500;

/// A bounded queue in front of a sink, drained by one task.
pub struct EventQueue {
    tx: mpsc::Sender<DomainEvent>,
}

impl EventQueue {
    /// Starts the task that drains the queue into `sink`.
    pub fn start(sink: Arc<dyn EventSink>) -> Arc<Self> {
        let (tx, mut rx) = mpsc::channel::<DomainEvent>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut backoff = Duration::from_millis(100);
                while let Err(e) = sink.write(&batch).await {
                    tracing::warn!(error = %e, events = batch.len(), retry_in = ?backoff, "events not published yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                batch.clear();
            }
        });
        Arc::new(EventQueue { tx })
    }
}

impl Events for EventQueue {
    fn publish(&self, event: DomainEvent) {
        if self.tx.try_send(event).is_err() {
            crate::metrics::EVENTS_DROPPED.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Fails its first two writes, then keeps what it is given.
    #[derive(Default)]
    struct Flaky {
        failures: AtomicUsize,
        got: Mutex<Vec<DomainEvent>>,
    }

    #[async_trait]
    impl EventSink for Flaky {
        async fn write(&self, events: &[DomainEvent]) -> StoreResult<()> {
            if self.failures.fetch_add(1, Ordering::SeqCst) < 2 {
                return Err(StoreError::Unavailable {
                    store: "test",
                    message: "down".into(),
                });
            }
            self.got.lock().unwrap().extend_from_slice(events);
            Ok(())
        }
    }

    #[tokio::test]
    async fn queued_events_reach_the_sink_in_order_after_it_recovers() {
        let sink = Arc::new(Flaky::default());
        let queue = EventQueue::start(sink.clone());
        for i in 0..5 {
            queue.publish(DomainEvent::new("t", "k", serde_json::json!({ "i": i })));
        }
        for _ in 0..100 {
            if sink.got.lock().unwrap().len() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = sink.got.lock().unwrap();
        let order: Vec<i64> = got.iter().map(|e| e.data["i"].as_i64().unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        let json = serde_json::to_value(&got[0]).unwrap();
        assert_eq!(json["type"], "t");
        assert_eq!(json["i"], 0);
        assert_eq!(json["id"].as_str().unwrap().len(), 32);
    }
}
