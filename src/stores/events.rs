//! Where domain events go (see `troupe_actors::store::events`): the
//! `events` table on SQL (the embedded default, read back by
//! `GET /api/v1/events`), or the Kafka events topic (`kafka.events_topic`)
//! when the message log is on Kafka, keyed by room or user so that one
//! key's events stay in one partition, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait};
use sea_orm::{QueryFilter, QueryOrder, QuerySelect};
use troupe_actors::store::events::{DomainEvent, EventSink};
use troupe_actors::store::{StoreError, StoreResult};
use troupe_entity::event;

use super::kafka::{partition_of, KafkaError, KafkaSettings};
use super::sql::{unavailable, SqlStore};

#[async_trait]
impl EventSink for SqlStore {
    async fn write(&self, events: &[DomainEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events.iter().map(|e| event::ActiveModel {
            position: NotSet,
            id: Set(e.id.clone()),
            kind: Set(e.kind.clone()),
            key: Set(e.key.clone()),
            ts: Set(e.ts),
            body: Set(serde_json::to_string(e).unwrap_or_default()),
        });
        let _turn = self.write_turn().await;
        let result = event::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(event::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(self.db())
            .await;
        match result {
            Ok(_) | Err(DbErr::RecordNotInserted) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl SqlStore {
    /// Events after `position`, oldest first, at most `limit`: (position, event).
    pub async fn events_after(
        &self,
        position: i64,
        limit: u64,
    ) -> StoreResult<Vec<(i64, serde_json::Value)>> {
        let rows = event::Entity::find()
            .filter(event::Column::Position.gt(position))
            .order_by_asc(event::Column::Position)
            .limit(limit)
            .all(self.db())
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let body = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
                (r.position, body)
            })
            .collect())
    }
}

/// The events topic: one partition client per partition.
pub struct KafkaEvents {
    topic: String,
    partitions: Vec<PartitionClient>,
    timeout: Duration,
}

impl KafkaEvents {
    /// Connects and creates `topic` when missing (with the log's partition
    /// count and replication factor).
    pub async fn connect(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        let fail = |reason: String| KafkaError::Unreachable {
            brokers: settings.brokers.join(","),
            reason,
        };
        let timeout = settings.timeout;
        let bounded = |what: &str| format!("no answer within {timeout:?} ({what})");
        let client = tokio::time::timeout(
            timeout,
            ClientBuilder::new(settings.brokers.clone())
                .client_id("troupe-events")
                .build(),
        )
        .await
        .map_err(|_| fail(bounded("connect")))?
        .map_err(|e| fail(e.to_string()))?;
        let topics = tokio::time::timeout(timeout, client.list_topics())
            .await
            .map_err(|_| fail(bounded("list topics")))?
            .map_err(|e| fail(e.to_string()))?;
        let count = match topics.iter().find(|t| t.name == topic) {
            Some(found) => found.partitions.len() as i32,
            None => {
                let controller = client
                    .controller_client()
                    .map_err(|e| fail(e.to_string()))?;
                let created = tokio::time::timeout(
                    timeout,
                    controller.create_topic(
                        topic.to_string(),
                        settings.partitions,
                        settings.replication_factor,
                        5_000,
                    ),
                )
                .await
                .map_err(|_| fail(bounded("create topic")))?;
                if let Err(e) = created {
                    // Another node may have created it meanwhile.
                    tracing::debug!(error = %e, %topic, "create events topic");
                }
                settings.partitions
            }
        };
        let mut partitions = Vec::new();
        for partition in 0..count {
            let pc = tokio::time::timeout(
                timeout,
                client.partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry),
            )
            .await
            .map_err(|_| fail(bounded("partition client")))?
            .map_err(|e| fail(e.to_string()))?;
            partitions.push(pc);
        }
        Ok(KafkaEvents {
            topic: topic.to_string(),
            partitions,
            timeout,
        })
    }
}

fn kafka_unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        store: "kafka",
        message: what.to_string(),
    }
}

#[async_trait]
impl EventSink for KafkaEvents {
    async fn write(&self, events: &[DomainEvent]) -> StoreResult<()> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for e in events {
            let partition = partition_of(&e.key, self.partitions.len() as i32);
            by_partition.entry(partition).or_default().push(Record {
                key: Some(e.key.clone().into_bytes()),
                value: Some(serde_json::to_vec(e).unwrap_or_default()),
                headers: BTreeMap::new(),
                timestamp: Utc
                    .timestamp_millis_opt(e.ts)
                    .single()
                    .unwrap_or_else(Utc::now),
            });
        }
        for (partition, records) in by_partition {
            let pc = &self.partitions[partition as usize];
            tokio::time::timeout(
                self.timeout,
                pc.produce(records, Compression::NoCompression),
            )
            .await
            .map_err(|_| kafka_unavailable(format!("events topic {}: timeout", self.topic)))?
            .map_err(|e| kafka_unavailable(format!("events topic {}: {e}", self.topic)))?;
        }
        Ok(())
    }
}
