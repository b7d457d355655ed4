//! The message log on Kafka (rskafka): one topic with a fixed number of
//! partitions, partition = a stable hash of the room. Positions are partition
//! offsets. Every call is bounded by a timeout: rskafka retries on its own.
//!
//! Appends from the rooms of one partition are batched together by rskafka's
//! `BatchProducer` (bounded by bytes and a linger time); a room's batch stays
//! contiguous and in order inside the produce request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::aggregator::{Aggregator, StatusDeaggregator, TryPush};
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use troupe_actors::store::{LogPosition, LogRecord, MessageLog, StoreError, StoreResult};

/// Kafka settings (`[kafka]`).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub linger: Duration,
    pub max_batch_bytes: usize,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka {brokers} unreachable: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("kafka topic {topic} has {found} partitions, the config says {expected}; the partition count of a topic cannot change")]
    Partitions {
        topic: String,
        found: usize,
        expected: i32,
    },
}

/// A stable hash of a room name (FNV-1a, 64 bit): the same on every node and version.
pub fn partition_of(room: &str, partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as i32
}

/// Aggregates whole room batches, so each stays contiguous in the produce.
#[derive(Debug, Default)]
pub struct RoomBatches {
    max_bytes: usize,
    bytes: usize,
    records: Vec<Record>,
}

#[derive(Debug, Default)]
pub struct RoomBatchStatus;

impl StatusDeaggregator for RoomBatchStatus {
    type Status = Vec<i64>;
    type Tag = (usize, usize);

    fn deaggregate(&self, offsets: &[i64], (start, len): (usize, usize)) -> AggResult<Vec<i64>> {
        Ok(offsets[start..start + len].to_vec())
    }
}

impl Aggregator for RoomBatches {
    type Input = Vec<Record>;
    type Tag = (usize, usize);
    type StatusDeaggregator = RoomBatchStatus;

    fn try_push(&mut self, batch: Vec<Record>) -> AggResult<TryPush<Vec<Record>, (usize, usize)>> {
        let size: usize = batch.iter().map(Record::approximate_size).sum();
        // An empty aggregator always takes a batch, however large, so nothing waits forever.
        if !self.records.is_empty() && self.bytes + size > self.max_bytes {
            return Ok(TryPush::NoCapacity(batch));
        }
        let tag = (self.records.len(), batch.len());
        self.bytes += size;
        self.records.extend(batch);
        Ok(TryPush::Aggregated(tag))
    }

    fn flush(&mut self) -> AggResult<(Vec<Record>, RoomBatchStatus)> {
        self.bytes = 0;
        Ok((std::mem::take(&mut self.records), RoomBatchStatus))
    }
}

/// What rskafka's aggregator traits return.
type AggResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub struct KafkaLog {
    settings: KafkaSettings,
    producers: Vec<BatchProducer<RoomBatches>>,
    readers: Vec<Arc<PartitionClient>>,
    client: Client,
    /// When the topic was last checked after an error (at most every few seconds).
    topic_checked: std::sync::Mutex<Option<std::time::Instant>>,
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    troupe_actors::metrics::STORE_ERRORS_LOG.inc();
    StoreError::Unavailable {
        store: "kafka",
        message: what.to_string(),
    }
}

impl KafkaLog {
    /// Connects, creates the topic when missing, and checks its partitions.
    pub async fn connect(settings: KafkaSettings) -> Result<KafkaLog, KafkaError> {
        let brokers = settings.brokers.join(",");
        let fail = |reason: String| KafkaError::Unreachable {
            brokers: brokers.clone(),
            reason,
        };
        let timeout = settings.timeout;
        let bounded = |reason: &str| format!("no answer within {timeout:?} ({reason})");
        let backoff = BackoffConfig {
            deadline: Some(timeout),
            ..Default::default()
        };
        let client = tokio::time::timeout(
            timeout,
            ClientBuilder::new(settings.brokers.clone())
                .backoff_config(backoff)
                .client_id("troupe")
                .build(),
        )
        .await
        .map_err(|_| fail(bounded("connect")))?
        .map_err(|e| fail(e.to_string()))?;
        let topics = tokio::time::timeout(timeout, client.list_topics())
            .await
            .map_err(|_| fail(bounded("list topics")))?
            .map_err(|e| fail(e.to_string()))?;
        match topics.iter().find(|t| t.name == settings.topic) {
            Some(topic) if topic.partitions.len() != settings.partitions as usize => {
                return Err(KafkaError::Partitions {
                    topic: settings.topic.clone(),
                    found: topic.partitions.len(),
                    expected: settings.partitions,
                })
            }
            Some(_) => {}
            None => {
                let controller = client
                    .controller_client()
                    .map_err(|e| fail(e.to_string()))?;
                let created = tokio::time::timeout(
                    timeout,
                    controller.create_topic(
                        settings.topic.clone(),
                        settings.partitions,
                        settings.replication_factor,
                        5_000,
                    ),
                )
                .await
                .map_err(|_| fail(bounded("create topic")))?;
                if let Err(e) = created {
                    // Another node may have created it meanwhile.
                    tracing::debug!(error = %e, topic = %settings.topic, "create topic");
                }
            }
        }
        let mut producers = Vec::new();
        let mut readers = Vec::new();
        for partition in 0..settings.partitions {
            let pc = tokio::time::timeout(
                timeout,
                client.partition_client(
                    settings.topic.clone(),
                    partition,
                    UnknownTopicHandling::Retry,
                ),
            )
            .await
            .map_err(|_| fail(bounded("partition client")))?
            .map_err(|e| fail(e.to_string()))?;
            let pc = Arc::new(pc);
            producers.push(
                BatchProducerBuilder::new(pc.clone())
                    .with_linger(settings.linger)
                    .with_compression(Compression::NoCompression)
                    .build(RoomBatches {
                        max_bytes: settings.max_batch_bytes,
                        ..Default::default()
                    }),
            );
            readers.push(pc);
        }
        Ok(KafkaLog {
            settings,
            producers,
            readers,
            client,
            topic_checked: std::sync::Mutex::new(None),
        })
    }

    /// After a failed call: if the topic is gone (a broker that lost its
    /// data), create it again so the node heals by itself. What the lost log
    /// held is still in history, or in the memory of the rooms that acked it.
    async fn recover_topic(&self) {
        {
            let mut checked = self.topic_checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                return;
            }
            *checked = Some(std::time::Instant::now());
        }
        let timeout = self.settings.timeout;
        let topics = match tokio::time::timeout(timeout, self.client.list_topics()).await {
            Ok(Ok(topics)) => topics,
            _ => return,
        };
        if topics.iter().any(|t| t.name == self.settings.topic) {
            return;
        }
        tracing::error!(topic = %self.settings.topic, "the log topic is gone (did the broker lose its data?); creating it again");
        let Ok(controller) = self.client.controller_client() else {
            return;
        };
        let created = tokio::time::timeout(
            timeout,
            controller.create_topic(
                self.settings.topic.clone(),
                self.settings.partitions,
                self.settings.replication_factor,
                5_000,
            ),
        )
        .await;
        if let Ok(Err(e)) = created {
            tracing::warn!(error = %e, "re-creating the log topic failed");
        }
    }

    fn partition(&self, room: &str) -> usize {
        partition_of(room, self.settings.partitions) as usize
    }

    /// Does the broker answer? (For `/ready`.)
    pub async fn ping(&self) -> StoreResult<()> {
        let reader = &self.readers[0];
        tokio::time::timeout(self.settings.timeout, reader.fetch_records(0, 1..1, 0))
            .await
            .map_err(|_| unavailable("no answer"))?
            .map(|_| ())
            .or_else(|e| match e {
                // An empty or trimmed partition still answered.
                rskafka::client::error::Error::ServerError { .. } => Ok(()),
                e => Err(unavailable(e)),
            })
    }
}

fn encode(record: &LogRecord) -> Record {
    Record {
        key: Some(record.room.as_bytes().to_vec()),
        value: Some(serde_json::to_vec(record).unwrap_or_default()),
        headers: Default::default(),
        timestamp: Utc
            .timestamp_millis_opt(record.ts)
            .single()
            .unwrap_or_else(Utc::now),
    }
}

impl KafkaLog {
    async fn produce_records(
        &self,
        room: &str,
        records: &[LogRecord],
    ) -> StoreResult<Vec<LogPosition>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let producer = &self.producers[self.partition(room)];
        let batch: Vec<Record> = records.iter().map(encode).collect();
        let offsets = tokio::time::timeout(self.settings.timeout, producer.produce(batch))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "produce: no answer within {:?}",
                    self.settings.timeout
                ))
            })?
            .map_err(|e| unavailable(format!("produce: {e}")))?;
        Ok(offsets.into_iter().map(|o| o as u64).collect())
    }

    async fn fetch_room(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        let reader = &self.readers[self.partition(room)];
        let mut offset = from as i64;
        let mut out = Vec::new();
        // Other rooms share the partition: read on until `max` records of this
        // room or the high watermark.
        loop {
            let fetched = tokio::time::timeout(
                self.settings.timeout,
                reader.fetch_records(offset, 1..4_000_000, 0),
            )
            .await
            .map_err(|_| {
                unavailable(format!(
                    "fetch: no answer within {:?}",
                    self.settings.timeout
                ))
            })?;
            let (records, high_watermark) = match fetched {
                Ok(fetched) => fetched,
                Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    // Retention removed records before `offset` (their messages
                    // are in history by then): go on from the oldest kept one.
                    let earliest = tokio::time::timeout(
                        self.settings.timeout,
                        reader.get_offset(OffsetAt::Earliest),
                    )
                    .await
                    .map_err(|_| unavailable("list offsets: no answer"))?
                    .map_err(|e| unavailable(format!("list offsets: {e}")))?;
                    if earliest <= offset {
                        return Ok(out);
                    }
                    tracing::warn!(%room, from = offset, earliest, "log records before the oldest kept offset are gone");
                    offset = earliest;
                    continue;
                }
                Err(e) => return Err(unavailable(format!("fetch: {e}"))),
            };
            if records.is_empty() {
                return Ok(out);
            }
            for r in records {
                if r.offset < offset {
                    continue;
                }
                offset = r.offset + 1;
                if r.record.key.as_deref() != Some(room.as_bytes()) {
                    continue;
                }
                let Some(value) = r.record.value.as_deref() else {
                    continue;
                };
                match serde_json::from_slice::<LogRecord>(value) {
                    Ok(record) if record.room == room => out.push((r.offset as u64, record)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%room, offset = r.offset, error = %e, "undecodable log record skipped")
                    }
                }
                if out.len() >= max {
                    return Ok(out);
                }
            }
            if offset >= high_watermark {
                return Ok(out);
            }
        }
    }
}

#[async_trait]
impl MessageLog for KafkaLog {
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        let result = self.produce_records(room, records).await;
        if result.is_err() {
            self.recover_topic().await;
        }
        result
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        let result = self.fetch_room(room, from, max).await;
        if result.is_err() {
            self.recover_topic().await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("lobby", 8), partition_of("lobby", 8));
        // Fixed values: a change here would move every room to another partition.
        assert_eq!(partition_of("lobby", 16), 3);
        let used: std::collections::BTreeSet<i32> = (0..100)
            .map(|i| partition_of(&format!("room{i}"), 8))
            .collect();
        assert_eq!(used.len(), 8);
    }
}
