//! Store adapters behind the traits of `troupe_actors::store`, and the
//! choice of them from the configuration.

pub mod events;
pub mod friends;
pub mod kafka;
mod message_life;
pub mod notifications;
pub mod redis;
pub mod search;
pub mod sql;
mod sqlite_writer;

use std::sync::Arc;

use anyhow::Context;
use troupe_actors::store::memory::MemoryEphemeral;
use troupe_actors::store::{EphemeralStore, MessageLog, Stores};

use crate::config::{Config, LogKind};
use crate::db;

/// The stores a node runs on, and what `/ready` probes.
pub struct NodeStores {
    pub stores: Stores,
    pub probes: Probes,
    /// The database, for the attachments' metadata.
    pub sql: sql::SqlStore,
}

/// What `/ready` asks: does every configured store answer?
#[derive(Clone)]
pub struct Probes {
    sql: sql::SqlStore,
    kafka: Option<Arc<kafka::KafkaLog>>,
    redis: Option<redis::RedisStore>,
}

impl Probes {
    /// The first store that does not answer, with why.
    pub async fn check(&self) -> Result<(), String> {
        self.sql.ping().await.map_err(|e| e.to_string())?;
        if let Some(kafka) = &self.kafka {
            kafka.ping().await.map_err(|e| e.to_string())?;
        }
        if let Some(redis) = &self.redis {
            redis.ping().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Connects to the database and migrates it (`troupe migrate` does only this).
pub async fn migrate_database(config: &Config) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let url = config.database_url();
    if config.database.url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    }
    let conn = db::connect(&url, config.database.sqlite_synchronous).await?;
    db::migrate(&conn, &url).await?;
    Ok(conn)
}

/// Connects and migrates; a store that cannot be reached is an error naming it.
pub async fn open(config: &Config) -> anyhow::Result<NodeStores> {
    let conn = migrate_database(config).await?;
    let sql = sql::SqlStore::new(conn);
    let sql_arc = Arc::new(sql.clone());
    let (log, kafka): (Arc<dyn MessageLog>, _) = match config.log.kind {
        LogKind::Database => (sql_arc.clone(), None),
        LogKind::Kafka => {
            let kafka = Arc::new(kafka::KafkaLog::connect(config.kafka_settings()).await?);
            (kafka.clone(), Some(kafka))
        }
    };
    // Domain events go where the messages go: Kafka, or the database.
    let event_sink: Arc<dyn troupe_actors::store::events::EventSink> = match config.log.kind {
        LogKind::Database => sql_arc.clone(),
        LogKind::Kafka => Arc::new(
            events::KafkaEvents::connect(&config.kafka_settings(), &config.kafka.events_topic)
                .await?,
        ),
    };
    let (ephemeral, redis): (Arc<dyn EphemeralStore>, _) = match &config.redis.url {
        None => (Arc::new(MemoryEphemeral::default()), None),
        Some(url) => {
            let timeout = std::time::Duration::from_millis(config.redis.timeout_ms);
            let redis = redis::RedisStore::connect(url, &config.redis.prefix, timeout).await?;
            (Arc::new(redis.clone()), Some(redis))
        }
    };
    let stores = Stores {
        log,
        checkpoints: sql_arc.clone(),
        directory: sql_arc.clone(),
        history: sql_arc.clone(),
        ephemeral,
        leases: config
            .clustered()
            .then_some(sql_arc.clone() as Arc<dyn troupe_actors::store::LeaseStore>),
        search: sql_arc.clone(),
        friends: sql_arc,
        events: troupe_actors::store::events::EventQueue::start(event_sink),
        // Set by `serve` once the attachment store is open.
        attachments: Arc::new(troupe_actors::store::attachments::NoAttachments),
    };
    Ok(NodeStores {
        // Every call measured: troupe_store_seconds{store,op}.
        stores: troupe_actors::store::timed::timed_stores(stores),
        probes: Probes {
            sql: sql.clone(),
            kafka,
            redis,
        },
        sql,
    })
}
